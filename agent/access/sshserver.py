"""The agent serves SSH for one instance whose image has no SSH server (asyncssh), over one byte pipe.

dmd's SSH gateway opens an ``ssh`` stream to the agent (:mod:`agent.access.agentssh`); the
agent runs this server on it, for the stream's instance only. The same code runs on any
connected socket (a TCP connection in the tests, one end of a socket pair bridged to the
stream in production): :meth:`SshServer.serve`.

What a client gets:

* **Authentication**: public keys only, only the keys dmd sent (the DM user's, OpenSSH lines);
  passwords and keyboard-interactive are not offered. The login name must be the instance's
  user (the container's configured user, ``id -un``; root when none) or ``root``, and when the
  gateway knows the name it was asked for (``login``), that one. A wrong name is told why (an
  auth banner) and then fails like a wrong key. After :data:`MAX_AUTH_FAILURES` keys that do
  not fit, the connection ends.
* **Shell and exec** through the runtime driver (``exec_interactive``): a PTY with the client's
  terminal type and size and window changes, or none (stderr then comes as extended data); the
  exit status; ``LANG``, ``LC_*`` and ``TERM`` from the client (other variables are ignored).
  The shell is the login's shell from the container's ``/etc/passwd`` if it exists, else
  ``/bin/bash``, else ``/bin/sh``; a command runs as ``SHELL -c COMMAND`` (what sshd does: the
  user's own command in their own instance). ``root`` runs as uid 0, the instance's user as the
  container's configured user.
* **SFTP** (and scp, old protocol or new) from the container's file system: :mod:`agent.access.sftp`.
* **Local forwarding** (``-L``, direct-tcpip) to the instance itself only: ``localhost``,
  ``127.0.0.1``, ``::1``, its address, its name or short id. Connections are made inside the
  container's network namespace (:mod:`agent.access.netns`) so that services listening on its
  loopback are reached; where the agent cannot enter it, to its address. Anything else is
  refused with the reason. Remote forwarding, agent forwarding, X11 and other subsystems are refused.
* **Bounds**: terminal sizes beyond :data:`MAX_TERMINAL` are refused (PTY) or ignored (window
  change), odd terminal types refused, at most :data:`MAX_SESSIONS` sessions and
  :data:`MAX_FORWARDS` forwarded connections at once per connection, :data:`LOGIN_TIMEOUT_S`
  to log in.

Its parts: :mod:`.sshinstance` (what a connection knows of its instance), :mod:`.sshsession`
(one session channel: the process, SFTP), this module (the server, the connection's decisions:
who logs in, which channels open, where forwarding goes).

Public API::

    server = SshServer(driver, host_key)
    why = await server.serve(sock, container, Grant(keys=[...], login="", user="alice"))
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncssh
from asyncssh.forward import SSHForwarder

from agent.access import netns
from agent.access.sshinstance import Account, Instance, open_instance
from agent.access.sshsession import Session
from agent.protocol.types import ContainerInfo
from agent.runtime.driver import RuntimeDriver

__all__ = ["LOGIN_TIMEOUT_S", "MAX_AUTH_FAILURES", "MAX_FORWARDS", "MAX_SESSIONS", "Grant", "SshServer"]

log = logging.getLogger("agent.access.sshd")

MAX_AUTH_FAILURES = 6  # keys tried that do not fit (OpenSSH's MaxAuthTries)
LOGIN_TIMEOUT_S = 30.0
KEEPALIVE_S = 30.0
MAX_SESSIONS = 16  # shells, commands and SFTP at once, per connection
MAX_FORWARDS = 64  # -L connections at once, per connection
CONNECT_TIMEOUT_S = 10.0
LOOPBACK = {"localhost": "127.0.0.1", "localhost.localdomain": "127.0.0.1", "ip6-localhost": "::1",
            "127.0.0.1": "127.0.0.1", "::1": "::1", "[::1]": "::1"}


@dataclass(frozen=True, slots=True)
class Grant:
    """Who may log in (from the ``ssh`` stream's parameters)."""

    keys: Sequence[str]  # OpenSSH public key lines
    login: str = ""  # the login name the gateway was asked for ("": it does not know)
    user: str = ""  # the DM user (logs, banner)




class SshServer:
    """The agent's SSH server: the node's host key and the runtime (see the module documentation)."""

    def __init__(self, driver: RuntimeDriver, host_key: asyncssh.SSHKey, *,
                 login_timeout_s: float = LOGIN_TIMEOUT_S) -> None:
        self.driver = driver
        self.host_key = host_key
        self.login_timeout_s = login_timeout_s

    async def open(self, container: ContainerInfo) -> Instance:
        """What a connection to ``container`` needs (its root, accounts, login user): looked up
        before the connection is accepted, so that a failure refuses it with the reason."""
        return await open_instance(self.driver, container)

    async def serve(self, sock: socket.socket, container: ContainerInfo | Instance, grant: Grant) -> str:
        """Serve one SSH connection on a connected socket until it ends; returns how it ended (for
        the log and the stream's end). The socket (and an opened instance) are the server's from here on."""
        try:
            instance = container if isinstance(container, Instance) else await self.open(container)
        except BaseException:
            sock.close()
            raise
        container = instance.container
        connection = _Connection(self, instance, grant)
        try:
            options = asyncssh.SSHServerConnectionOptions(
                server_host_keys=[self.host_key],
                server_factory=lambda: connection,
                server_version="DM_agent",
                encoding=None,
                line_editor=False,
                allow_pty=True,
                x11_forwarding=False,
                agent_forwarding=False,
                public_key_auth=True,
                password_auth=False,
                kbdint_auth=False,
                host_based_auth=False,
                gss_host=None,
                rdns_lookup=False,
                login_timeout=self.login_timeout_s,
                keepalive_interval=KEEPALIVE_S,
                keepalive_count_max=3,
            )
            try:
                conn = await asyncssh.run_server(sock, options=options)
            except (asyncssh.Error, OSError, TimeoutError) as exc:
                reason = connection.ended or _describe(exc)
                log.info("SSH for instance %s (%s): not logged in: %s", container.instance_id, grant.user, reason)
                return reason
            log.info("SSH for instance %s: %s logged in as %s", container.instance_id, grant.user or "?",
                     connection.username)
            await conn.wait_closed()
            return connection.ended or "the connection ended"
        finally:
            sock.close()
            await connection.close_all()
            await asyncio.to_thread(instance.close)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncssh.DisconnectError):
        return exc.reason or type(exc).__name__
    return str(exc) or type(exc).__name__


class _Connection(asyncssh.SSHServer):
    """One SSH connection's decisions: who logs in, which channels open."""

    def __init__(self, server: SshServer, instance: Instance, grant: Grant) -> None:
        self.server = server
        self.instance = instance
        self.grant = grant
        self.username = ""
        self.ended = ""
        self.failures = 0
        self.sessions: set[Session] = set()
        self.forwards = 0
        self._conn: asyncssh.SSHServerConnection | None = None
        self._keys = _authorized_keys(grant.keys)
        self._account: Account | None = None

    # --- authentication

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn

    def logins(self) -> list[str]:
        """The names this instance takes (see the module documentation)."""
        names = [self.instance.user] + (["root"] if self.instance.user != "root" else [])
        if self.grant.login:
            names = [n for n in names if n == self.grant.login]
        return names

    def begin_auth(self, username: str) -> bool:
        self.username = username
        allowed = self.logins()
        if username in allowed and self._keys is not None and self._conn is not None:
            self._conn.set_authorized_keys(self._keys)
        elif self._conn is not None and username not in allowed:
            told = " or ".join(allowed) or "(none: the gateway was asked for another name)"
            self._conn.send_auth_banner(f"DM: this instance takes the login {told}, not {username!r}.\r\n")
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        """Called for each key that is not one of the grant's (or any key under a wrong name)."""
        self.failures += 1
        if self.failures >= MAX_AUTH_FAILURES and self._conn is not None:
            self.ended = f"too many authentication failures ({self.failures})"
            conn = self._conn
            asyncio.get_running_loop().call_soon(
                conn.disconnect, asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, "Too many authentication failures")
        return False

    def auth_completed(self) -> None:
        self._account = self.instance.account(self.username)

    @property
    def driver(self) -> RuntimeDriver:
        return self.server.driver

    @property
    def account(self) -> Account:
        if self._account is None:
            self._account = self.instance.account(self.username)
        return self._account

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and not self.ended:
            self.ended = _describe(exc)

    # --- channels

    def session_requested(self) -> Session | bool:
        if len(self.sessions) >= MAX_SESSIONS:
            log.info("instance %s: session refused: %d open", self.instance.container.instance_id, MAX_SESSIONS)
            return False
        session = Session(self)
        self.sessions.add(session)
        return session

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> Any:
        address = self._destination(dest_host)
        if not 1 <= dest_port <= 65535:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, f"port {dest_port} is not a TCP port")
        if self.forwards >= MAX_FORWARDS:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_RESOURCE_SHORTAGE,
                                            f"at most {MAX_FORWARDS} forwarded connections at once")
        self.forwards += 1
        return self._forward(address, dest_port)

    def _destination(self, dest_host: str) -> str:
        host = dest_host.strip().lower().rstrip(".")
        container = self.instance.container
        if host in LOOPBACK:
            return LOOPBACK[host]
        own = {container.name.lower(), container.id[:12].lower()} | ({container.ip_address} if container.ip_address
                                                                   else set())
        if host in own and container.ip_address:
            return container.ip_address
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
            f"forwarding goes only to this instance (localhost, {container.name} or its address), "
            f"not to {dest_host[:100]}")

    async def _forward(self, address: str, port: int) -> SSHForwarder:
        try:
            sock = await self._connect(address, port)
        except BaseException:
            self.forwards -= 1
            raise
        loop = asyncio.get_running_loop()
        try:
            _, peer = await loop.create_connection(SSHForwarder, sock=sock)
        except OSError as exc:
            self.forwards -= 1
            sock.close()
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, str(exc)) from None
        return _CountedForwarder(peer, self)

    async def _connect(self, address: str, port: int) -> socket.socket:
        """A connected socket to ``address:port``, made inside the container's network namespace
        when the agent can enter it (see the module documentation)."""
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        pid = self.instance.pid
        container = self.instance.container
        if pid is not None and netns.available_for(pid):
            sock = await netns.socket_in_netns(pid, family)
        elif address in ("127.0.0.1", "::1"):
            if not container.ip_address:
                raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED,
                                                "the instance has no address the agent can reach")
            # Outside the namespace, the instance's own loopback is out of reach: its address instead.
            address, family = container.ip_address, socket.AF_INET6 if ":" in container.ip_address else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
        else:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await asyncio.get_running_loop().sock_connect(sock, (address, port))
        except (OSError, TimeoutError) as exc:
            sock.close()
            reason = ("nothing listens there" if isinstance(exc, ConnectionRefusedError)
                      else os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else "timed out")
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED,
                                            f"cannot connect to port {port} of the instance: {reason}") from None
        return sock

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        log.info("instance %s: remote forwarding refused", self.instance.container.instance_id)
        return False

    def unix_connection_requested(self, dest_path: str) -> bool:
        return False

    def unix_server_requested(self, listen_path: str) -> bool:
        return False

    async def close_all(self) -> None:
        await asyncio.gather(*(s.stop() for s in list(self.sessions)), return_exceptions=True)


class _CountedForwarder(SSHForwarder):
    """The channel's side of a forwarded connection; gives its place back when it closes."""

    def __init__(self, peer: SSHForwarder, connection: _Connection) -> None:
        super().__init__(peer)
        self._connection: _Connection | None = connection

    def connection_lost(self, exc: Exception | None) -> None:
        if self._connection is not None:
            self._connection.forwards -= 1
            self._connection = None
        super().connection_lost(exc)


def _authorized_keys(lines: Sequence[str]) -> asyncssh.SSHAuthorizedKeys | None:
    """The grant's keys; lines asyncssh cannot read are left out (and logged)."""
    good: list[str] = []
    for line in lines:
        if "\n" in line or "\r" in line or "\x00" in line:
            continue
        try:
            asyncssh.import_authorized_keys(line)
        except (ValueError, asyncssh.KeyImportError) as exc:
            log.warning("an SSH key of the grant cannot be read: %s", exc)
            continue
        good.append(line)
    return asyncssh.import_authorized_keys("\n".join(good)) if good else None
