"""The SSH gateway's use cases: who may log in with which keys, the throttle and the audit of
logins, which instance a destination names, how a forward to it is carried, the help a plain
session shows, and the ~/.ssh/config block (`dmd ssh-config`, GET /api/v1/ssh/config).

The gateway itself (dmd.ssh) is a handler: it calls these and never reaches storage.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass
from typing import Any

from agent import protocol as p
from dmd.core import Dm
from dmd.errors import ApiError, Conflict, Forbidden, Invalid, NotFound
from dmd.gateway_links import GatewayAddress
from dmd.models import SSH_PORT, Actor, Instance, SshKey, User
from dmd.queries import audit
from dmd.queries import instances as inst_q
from dmd.queries import nodes as node_q
from dmd.queries import ssh_keys as key_q
from dmd.queries import users as user_q
from dmd.usecases import streams

AMBIGUOUS_SHOWN = 10  # candidates named when a name is ambiguous
HOST_MAX = 255  # a destination longer than any instance name or id is refused before any lookup
KNOWN_HOSTS_DEFAULT = "~/.ssh/dm_known_hosts"
_PATH_RE = re.compile(r"^[A-Za-z0-9_~./@%+=:,-]{1,255}$")  # no spaces or quotes inside ssh_config


class GatewayOff(ApiError):
    status, code = 404, "ssh_gateway_off"


# --- logging in ----------------------------------------------------------------------------------

def _ip_key(ip: str) -> list[str]:
    # The same address key as the web login's and the bad bearer tokens': one budget per address.
    return [f"ip:{ip}"]


def login_reserve(dm: Dm, ip: str) -> float:
    """Count a login attempt from `ip` before its keys are checked (see dmd.auth.throttle): 0 when
    it may go on, else the seconds the address must still wait (nothing counted)."""
    return dm.throttle.reserve(_ip_key(ip))


def login_succeeded(dm: Dm, ip: str) -> None:
    dm.throttle.succeeded(_ip_key(ip))


def throttled_message(wait: float) -> str:
    return f"too many failed authentications from your address; try again in {math.ceil(wait)} s"


@dataclass(frozen=True, slots=True)
class LoginKeys:
    user: User | None  # None: no such user, or disabled (the client is told the same either way)
    keys: list[SshKey]
    refusal: str  # why no key can succeed ("" when some may), for the audit only


async def login_keys(dm: Dm, username: str) -> LoginKeys:
    """The keys that may log in as `username` now (read at every login: a deleted key or a
    disabled user is refused at once)."""
    if not username or len(username) > 64:
        return LoginKeys(None, [], "bad username")
    async with dm.db.read() as conn:
        user = await user_q.get_by_username(conn, username)
        if user is None:
            return LoginKeys(None, [], "no such user")
        if user.disabled:
            return LoginKeys(None, [], "user disabled")
        keys = await key_q.list_for(conn, user.id, limit=key_q.MAX_KEYS_PER_USER)
    return LoginKeys(user, keys, "" if keys else "user has no SSH keys")


async def logged_in(dm: Dm, user: User, ip: str, key: SshKey) -> None:
    async with dm.db.begin() as conn:
        await audit.record(conn, Actor(user, ip), "ssh.login", "user", user.id, via="gateway",
                           key_id=key.id, fingerprint=key.fingerprint)


async def login_failed(dm: Dm, username: str, ip: str, user_id: int | None, reason: str) -> None:
    async with dm.db.begin() as conn:
        await audit.record(conn, Actor(None, ip, "anonymous"), "ssh.login_failed", "user", user_id,
                           via="gateway", username=username[:64], reason=reason)


async def logged_out(dm: Dm, user: User, ip: str, seconds: float, forwards: int) -> None:
    async with dm.db.begin() as conn:
        await audit.record(conn, Actor(user, ip), "ssh.logout", "user", user.id, via="gateway",
                           duration_s=round(seconds, 1), forwards=forwards)


async def still_allowed(dm: Dm, user_id: int) -> User:
    """The user as they are now; Forbidden when disabled or deleted since they logged in."""
    async with dm.db.read() as conn:
        user = await user_q.find(conn, user_id)
    if user is None or user.disabled:
        raise Forbidden("your account is disabled")
    return user


# --- destinations --------------------------------------------------------------------------------

def _candidate(inst: Instance, names: dict[int, str]) -> str:
    return f"{inst.name} (id {inst.id}, owner {names.get(inst.owner_id, inst.owner_id)})"


async def resolve(dm: Dm, user: User, host: str) -> Instance:
    """The instance `host` names among those `user` may use: an id, else a name (NotFound when
    none, Conflict listing the candidates when several)."""
    host = host.strip()
    if not host or len(host) > HOST_MAX:
        raise NotFound("name an instance: its name or id")
    async with dm.db.read() as conn:
        if host.isdigit() and len(host) <= 18:
            try:
                inst = await inst_q.get_visible(conn, user, int(host))
                if inst.desired != "deleted":
                    return inst
            except NotFound:
                pass
        found = await inst_q.named_visible(conn, user, host, limit=AMBIGUOUS_SHOWN + 1)
        if len(found) > 1:
            names = {}
            for uid in {i.owner_id for i in found}:
                owner = await user_q.find(conn, uid)
                names[uid] = owner.username if owner else str(uid)
    if not found:
        raise NotFound(f"no instance {host!r} among yours")
    if len(found) > 1:
        listed = ", ".join(_candidate(i, names) for i in found[:AMBIGUOUS_SHOWN])
        more = " and more" if len(found) > AMBIGUOUS_SHOWN else ""
        raise Conflict(f"{host!r} names several instances: {listed}{more}; use the id", code="ambiguous")
    return found[0]


def sshd_ready(inst: Instance) -> bool:
    """The instance's own sshd is running (the agent's last SshStatus said so)."""
    return inst.ssh_enabled and inst.status == "running" and (inst.ssh_status or {}).get("state") == "ready"


@dataclass(slots=True)
class Forward:
    """A forward's stream, held open (live session, audit) until `close`."""

    instance: Instance
    stream: p.Stream
    served_by: str  # "sshd" (the instance's own, end-to-end) | "agent" (the agent serves SSH)
    _exit: contextlib.AsyncExitStack

    async def close(self, end: p.StreamEnd) -> None:
        """End the stream (idempotent) and record the session's end."""
        await self.stream.close(end)
        await self._exit.aclose()


async def open_forward(dm: Dm, user: User, ip: str, host: str, port: int, key_id: int | None = None) -> Forward:
    """A byte stream to the SSH server of the instance `host` names: its own sshd when it runs one
    (the encryption stays between the client and that sshd), else the agent's SSH server for it.
    Refused (an ApiError with the reason) for another user's instance, another port, SSH turned
    off, an instance that does not run. The stream is a live session of `key_id`'s (deleting that
    key, disabling the user or stopping the instance ends it) with its audit entries."""
    user = await still_allowed(dm, user.id)
    inst = await resolve(dm, user, host)
    if port != SSH_PORT:
        raise Forbidden(f"the gateway forwards only to port {SSH_PORT} (SSH) of an instance; reach other ports "
                        f"with -L inside the instance's SSH session (ssh -L 8888:localhost:8888 -J ... "
                        f"root@{inst.name})", code="port_refused")
    if not inst.ssh_enabled:
        raise Conflict(f"SSH is turned off for {inst.name}; turn it on on the instance's page", code="ssh_disabled")
    if inst.status != "running":
        raise Conflict(f"{inst.name} is not running (it is {inst.status})", code="not_running")
    if sshd_ready(inst):
        opening = p.StreamOpen("tcp", inst.id, tcp=p.TcpParams(port=SSH_PORT))
        served_by = "sshd"
    else:
        async with dm.db.read() as conn:
            keys = await key_q.list_for(conn, user.id, limit=key_q.MAX_KEYS_PER_USER)
        opening = p.StreamOpen("ssh", inst.id, ssh=p.SshParams(user=user.username, login="",
                                                                keys=[k.public_key for k in keys]))
        served_by = "agent"
    stack = contextlib.AsyncExitStack()
    opened = await stack.enter_async_context(
        streams.instance_stream(dm, Actor(user, ip), user, inst.id, opening, via="ssh", key_id=key_id))
    return Forward(opened.instance, opened.stream, served_by, stack)


# --- what a plain session shows ------------------------------------------------------------------

async def help_text(dm: Dm, user: User, limit: int = 50) -> str:
    """`ssh alice@dm -p 2222` with no forward: the user's instances and how to reach them."""
    addr = dm.gateway.address
    jump = addr.jump(user.username) if addr else f"{user.username}@<gateway>"
    async with dm.db.read() as conn:
        rows = await inst_q.list_visible(conn, user, limit=limit + 1, after_id=None)
    # An administrator may use everyone's instances; the help lists their own.
    rows = [i for i in rows if i.desired != "deleted" and i.owner_id == user.id]
    lines = [f"Hello {user.username}: this is DM's SSH gateway. It opens no shell itself; it carries",
             "your SSH connections to your instances:", ""]
    if rows:
        for inst in rows[:limit]:
            login = str((inst.ssh_status or {}).get("user") or "root")
            lines.append(f"  ssh -J {jump} {login}@{inst.name}    ({inst.status})")
    else:
        lines.append("  (you have no instances yet)")
    lines += ["", "Tunnels to an instance's ports go inside its session, e.g.:",
              f"  ssh -L 8888:localhost:8888 -J {jump} root@NAME",
              "A ~/.ssh/config for all of them: `dmd ssh-config` (or your account page).",
              "The gateway itself gives no shell, agent or X11 forwarding, and no remote (-R) forwarding.", ""]
    return "\n".join(lines)


def instance_command(dm: Dm, user: User, inst: Instance) -> str | None:
    """`ssh -J ... root@train` for `user` to reach the instance through the gateway (None when
    the gateway is off or SSH is turned off for it). Another user's instance (an administrator
    looking) is named by id: names are only unique per owner."""
    addr = dm.gateway.address
    if addr is None or not inst.ssh_enabled or inst.host_network:
        return None
    login = str((inst.ssh_status or {}).get("user") or "root")
    target = inst.name if inst.owner_id == user.id else str(inst.id)
    return f"ssh -J {addr.jump(user.username)} {login}@{target}"


# --- ~/.ssh/config -------------------------------------------------------------------------------

def gateway_address(dm: Dm) -> GatewayAddress:
    addr = dm.gateway.address
    if addr is None:
        raise GatewayOff("the SSH gateway is off on this DM (ssh_listen)")
    return addr


@dataclass(frozen=True, slots=True)
class SshConfig:
    config: str  # Host blocks to append to ~/.ssh/config
    known_hosts: str  # lines for the file UserKnownHostsFile names
    known_hosts_path: str
    instances: int


def _key_line(value: Any) -> str | None:
    """'type base64' of an OpenSSH public key text (comment dropped), or None."""
    if not isinstance(value, str):
        return None
    parts = value.split()
    if len(parts) < 2 or not re.fullmatch(r"[a-z0-9@.-]{3,64}", parts[0]) or not re.fullmatch(
            r"[A-Za-z0-9+/=]{16,16384}", parts[1]):
        return None
    return f"{parts[0]} {parts[1]}"


def instance_host_keys(inst: Instance, node_facts: dict[str, Any] | None) -> list[str]:
    """The host keys a client may meet at the instance: its own sshd's (as the agent reported
    them) and the agent's SSH server's (the node's fact `ssh_host_key`), both listed so that the
    instance's sshd starting or stopping never makes the client ask."""
    found: list[str] = []
    for k in (inst.ssh_status or {}).get("host_keys") or []:
        line = _key_line(k.get("key")) if isinstance(k, dict) else None
        if line and line not in found:
            found.append(line)
    node_key = _key_line((node_facts or {}).get("ssh_host_key"))
    if node_key and node_key not in found:
        found.append(node_key)
    return found


def _invalid_path() -> Invalid:
    return Invalid("known_hosts_path: use a plain path (letters, digits and ~ . / _ - @ % + = : ,)",
                   field="known_hosts_path")


async def ssh_config(dm: Dm, user: User, known_hosts_path: str = KNOWN_HOSTS_DEFAULT,
                     limit: int = 1000) -> SshConfig:
    """One `Host` per instance the user may use, through the gateway (ProxyJump), and the host
    keys to trust (the gateway's, each instance's) so that no first connection asks."""
    if not _PATH_RE.match(known_hosts_path):
        raise _invalid_path()
    addr = gateway_address(dm)
    async with dm.db.read() as conn:
        rows = [i for i in await inst_q.list_visible(conn, user, limit=limit, after_id=None)
                if i.desired != "deleted"]
        facts: dict[int, dict[str, Any] | None] = {}
        for node_id in {i.node_id for i in rows}:
            try:
                facts[node_id] = (await node_q.get(conn, node_id)).facts
            except NotFound:
                facts[node_id] = None
    counts: dict[str, int] = {}
    for inst in rows:
        counts[inst.name] = counts.get(inst.name, 0) + 1
    jump = addr.jump(user.username)
    blocks = [f"# DM instances of {user.username} through the SSH gateway {addr.host}:{addr.port}",
              f"# ({addr.fingerprint}); the host keys to trust are in {known_hosts_path}"]
    known = [f"# DM: the SSH gateway {addr.host}:{addr.port} and the instances of {user.username}",
             addr.known_host]
    for inst in rows:
        # A name two instances share (an administrator sees everyone's) is reached by id.
        alias, target = (inst.name, inst.name) if counts[inst.name] == 1 else (f"{inst.name}-{inst.id}", str(inst.id))
        login = str((inst.ssh_status or {}).get("user") or "root")
        blocks.append(f"Host {alias}\n    HostName {target}\n    User {login}\n    ProxyJump {jump}\n"
                      f"    UserKnownHostsFile {known_hosts_path}\n")
        known += [f"{target} {line}" for line in instance_host_keys(inst, facts.get(inst.node_id))]
    # The jump itself is a second ssh that reads the config for the gateway's host: it gets the
    # same known-hosts file (the user's own one still counts, second).
    gw = [f"Host {addr.host}\n    UserKnownHostsFile {known_hosts_path} ~/.ssh/known_hosts\n"] if rows else []
    return SshConfig("\n".join([blocks[0], blocks[1], "", *blocks[2:], *gw]),
                     "\n".join(known) + "\n", known_hosts_path, len(rows))


@dataclass(frozen=True, slots=True)
class AccountView:
    address: GatewayAddress | None  # None: the gateway is off
    config: SshConfig | None
    base_url: str


async def account_view(dm: Dm, user: User) -> AccountView:
    """What the account page shows of the gateway: its address and fingerprint, your config."""
    addr = dm.gateway.address
    config = await ssh_config(dm, user) if addr is not None else None
    return AccountView(addr, config, dm.config.base_url)
