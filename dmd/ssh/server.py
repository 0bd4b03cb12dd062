"""The SSH gateway: an asyncssh server in dmd's event loop.

Users log in as their DM username with the SSH keys they registered in DM (read at every login),
public key only. The one thing the gateway carries is `direct-tcpip` to port 22 of an instance
they may use (`ssh -J` / ProxyJump / `-W`), over a byte stream on the node's agent link; a plain
session prints a short help and exits 0. Everything else is refused with a reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncssh

from agent import protocol as p
from dmd.core import Dm
from dmd.errors import ApiError, StartupError
from dmd.gateway_links import GatewayAddress
from dmd.models import SshKey, User
from dmd.ssh import hostkey
from dmd.ssh.forward import Pump
from dmd.usecases import gateway as uc

log = logging.getLogger("dmd.ssh")

LOGIN_TIMEOUT_S = 30  # an unauthenticated connection is dropped after this
KEEPALIVE_S = 30
FORWARDS_PER_CONNECTION = 32  # direct-tcpip channels open at once on one connection
TERM_MAX = 10_000  # columns or rows: a pty request beyond this is refused
# AES-GCM only: the client's first choice among those offered wins the negotiation, and
# OpenSSH's order is chacha20-poly1305, then AES-CTR (with a MAC asyncssh computes per packet
# through ctypes), then AES-GCM: offering only AES-GCM (one pass, hardware AES, in OpenSSL) keeps
# the gateway's cost per byte low. Every maintained client has it (OpenSSH since 6.2).
ENCRYPTION_ALGS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


class SshGateway:
    """Listens where `ssh_listen` says, from the app's start-up to its shutdown."""

    def __init__(self, dm: Dm) -> None:
        self.dm = dm
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._conns: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()  # audit writes, forward pumps: awaited at stop

    def spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("SSH gateway task failed", exc_info=task.exception())

    async def start(self) -> None:
        cfg = self.dm.config
        if cfg.ssh_port is None:
            log.info("SSH gateway off (ssh_listen)")
            return
        try:
            key = hostkey.load_or_create(Path(cfg.data_dir))
            self._acceptor = await asyncssh.create_server(
                lambda: _Connection(self), cfg.ssh_host, cfg.ssh_port, server_host_keys=[key],
                reuse_address=True, login_timeout=LOGIN_TIMEOUT_S, keepalive_interval=KEEPALIVE_S,
                agent_forwarding=False, x11_forwarding=False, allow_scp=False, line_editor=False,
                encryption_algs=list(ENCRYPTION_ALGS),
                # No banner naming the software's version beyond what the protocol needs.
                server_version="DM")
        except (OSError, RuntimeError) as e:
            raise StartupError(f"SSH gateway on {cfg.ssh_listen}: {e} (choose another ssh_listen, or off)") from e
        port = self._acceptor.get_port()
        host = urlsplit(cfg.base_url).hostname or "localhost"
        self.dm.gateway.address = GatewayAddress(host, port, hostkey.public_line(key),
                                                 key.get_fingerprint("sha256"))
        log.info("SSH gateway listening on %s:%d (host key %s)", cfg.ssh_host, port,
                 self.dm.gateway.address.fingerprint)

    async def stop(self) -> None:
        if self._acceptor is None:
            return
        self._acceptor.close()
        for conn in list(self._conns):
            conn.end("DM is shutting down")
        await self._acceptor.wait_closed()
        self._acceptor = None
        self.dm.gateway.address = None
        deadline = time.monotonic() + 10
        while self._tasks and time.monotonic() < deadline:
            await asyncio.wait(set(self._tasks), timeout=deadline - time.monotonic())
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))


class _Connection(asyncssh.SSHServer):
    """One client connection: its login, then its forwards."""

    def __init__(self, gateway: SshGateway) -> None:
        self.gw = gateway
        self.dm = gateway.dm
        self.conn: asyncssh.SSHServerConnection | None = None
        self.ip = "unknown"
        self.username = ""
        self.login: uc.LoginKeys | None = None
        self.offered: dict[bytes, SshKey] = {}  # public key blob -> the DM key it is
        self.matched: SshKey | None = None
        self.user: User | None = None
        self.throttled = False
        self.counted = False  # an attempt was counted in the throttle and not yet taken back
        self.since = time.monotonic()
        self.forwards = 0  # opened in all
        self.open_forwards = 0
        self.closed = False

    # --- the connection -----------------------------------------------------------------------

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername")
        # One client, one throttle key, whether it came over IPv4 or as ::ffff:a.b.c.d.
        self.ip = str(peer[0]).removeprefix("::ffff:") if peer else "unknown"
        self.gw._conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.gw._conns.discard(self)
        if self.user is not None:
            self.dm.gateway.discard(self.user.id, self)
            self.gw.spawn(uc.logged_out(self.dm, self.user, self.ip, time.monotonic() - self.since,
                                        self.forwards))
        elif self.counted and self.username:
            # It tried and never got in (the attempt stays counted against the address).
            reason = self.login.refusal if self.login and self.login.refusal else "no accepted key"
            self.gw.spawn(uc.login_failed(self.dm, self.username, self.ip,
                                          self.login.user.id if self.login and self.login.user else None,
                                          reason))

    def end(self, reason: str) -> None:
        """Disconnect, telling the client why (GatewayConnection)."""
        if self.conn is not None and not self.closed:
            self.conn.disconnect(asyncssh.DISC_BY_APPLICATION, reason)

    # --- logging in ---------------------------------------------------------------------------

    async def begin_auth(self, username: str) -> bool:
        self.username = username
        if not self.counted:
            wait = uc.login_reserve(self.dm, self.ip)
            if wait > 0:
                self.throttled = True
                message = uc.throttled_message(wait)
                log.warning("SSH gateway: %s refused (%s) for %r", self.ip, message, username[:64])
                assert self.conn is not None
                self.conn.send_auth_banner(f"DM: {message}\r\n")
                self.conn.disconnect(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, message)
                return True
            self.counted = True
        self.login = await uc.login_keys(self.dm, username)
        self.offered = {}
        for key in self.login.keys:
            try:
                self.offered[asyncssh.import_public_key(key.public_key).public_data] = key
            except (asyncssh.KeyImportError, ValueError):
                continue  # a key type this asyncssh cannot read: it cannot log in here
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def host_based_auth_supported(self) -> bool:
        return False

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        if self.throttled or self.login is None or self.login.user is None:
            return False
        found = self.offered.get(key.public_data)
        if found is None:
            return False
        self.matched = found  # the signature is checked by asyncssh after this
        return True

    def auth_completed(self) -> None:
        assert self.login is not None and self.login.user is not None and self.matched is not None
        self.user = self.login.user
        uc.login_succeeded(self.dm, self.ip)
        self.counted = False
        self.dm.gateway.add(self.user.id, self)
        log.info("SSH gateway: %s logged in from %s with %s", self.user.username, self.ip, self.matched.fingerprint)
        self.gw.spawn(uc.logged_in(self.dm, self.user, self.ip, self.matched))

    # --- what a logged-in client may ask for ----------------------------------------------------

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str,
                             orig_port: int) -> Any:
        if self.user is None:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "not logged in")
        if len(dest_host) > uc.HOST_MAX:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                                            "the destination is longer than any instance name")
        if self.open_forwards >= FORWARDS_PER_CONNECTION:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_RESOURCE_SHORTAGE,
                                            f"at most {FORWARDS_PER_CONNECTION} forwards at once on one connection")
        self.open_forwards += 1
        return self._forward(self.user, dest_host, dest_port)

    async def _forward(self, user: User, host: str, port: int) -> asyncssh.SSHTCPSession[bytes]:
        try:
            fwd = await uc.open_forward(self.dm, user, self.ip, host, port,
                                        self.matched.id if self.matched else None)
        except ApiError as e:
            self.open_forwards -= 1
            log.info("SSH gateway: %s from %s: forward to %r port %d refused: %s", user.username, self.ip,
                     host[:80], port, e.message)
            code = asyncssh.OPEN_CONNECT_FAILED if e.status >= 500 else asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED
            raise asyncssh.ChannelOpenError(code, e.message) from None
        except Exception:
            self.open_forwards -= 1
            log.exception("SSH gateway: forward to %r failed", host[:80])
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, "internal error") from None
        if self.closed:
            self.open_forwards -= 1
            await fwd.close(p.StreamEnd("closed", "the SSH client went away"))
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, "the connection closed")
        self.forwards += 1
        log.info("SSH gateway: %s from %s to instance %d (%s) port %d, served by %s", user.username, self.ip,
                 fwd.instance.id, fwd.instance.name, port, fwd.served_by)
        return Pump(fwd, self.gw.spawn, self._forward_ended)

    def _forward_ended(self) -> None:
        self.open_forwards -= 1

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        log.info("SSH gateway: remote forwarding refused for %s", self.username[:64])
        return False  # remote forwarding (-R): the gateway listens for no one

    def unix_connection_requested(self, dest_path: str) -> bool:
        return False

    def unix_server_requested(self, listen_path: str) -> bool:
        return False

    def session_requested(self) -> asyncssh.SSHServerSession[str] | bool:
        if self.user is None:
            return False
        return _HelpSession(self)


class _HelpSession(asyncssh.SSHServerSession[str]):
    """A plain `ssh alice@dm -p 2222`: the user's instances and how to reach them; no shell."""

    def __init__(self, conn: _Connection) -> None:
        self.owner = conn
        self.chan: asyncssh.SSHServerChannel[str] | None = None
        self.pty = False

    def connection_made(self, chan: asyncssh.SSHServerChannel[str]) -> None:  # type: ignore[override]
        self.chan = chan

    def pty_requested(self, term_type: str, term_size: tuple[int, int, int, int],
                      term_modes: Mapping[int, int]) -> bool:
        cols, rows = term_size[0], term_size[1]
        if not (0 <= cols <= TERM_MAX and 0 <= rows <= TERM_MAX) or len(term_type) > 64:
            return False  # oversized: refused
        self.pty = True
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        return len(command) <= 4096

    def subsystem_requested(self, subsystem: str) -> bool:
        return False  # no sftp on the gateway itself

    def eof_received(self) -> bool:
        return True  # the client's stdin ended (ssh < /dev/null): the help is still written

    def session_started(self) -> None:
        self.owner.gw.spawn(self._help())

    async def _help(self) -> None:
        chan = self.chan
        user = self.owner.user
        if chan is None or user is None:
            return
        try:
            text = await uc.help_text(self.owner.dm, user)
        except ApiError as e:
            text = f"DM: {e.message}\n"
        if self.pty:
            text = text.replace("\n", "\r\n")
        with contextlib.suppress(asyncssh.Error, OSError):
            chan.write(text)
            chan.exit(0)
