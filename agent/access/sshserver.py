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

Public API::

    server = SshServer(driver, host_key)
    why = await server.serve(sock, container, Grant(keys=[...], login="", user="alice"))
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import asyncssh
from asyncssh.channel import SSHChannel
from asyncssh.forward import SSHForwarder
from asyncssh.misc import SoftEOFReceived
from asyncssh.sftp import run_sftp_server
from asyncssh.stream import SSHReader, SSHServerStreamSession, SSHWriter

from agent.access import inroot, netns
from agent.access.channels import MAX_TERMINAL, login_shell
from agent.access.inroot import Root
from agent.access.sftp import ContainerSftp, FsContext, IdNames
from agent.protocol.types import ContainerInfo
from agent.runtime.driver import ExecSession, RuntimeDriver
from agent.runtime.errors import DriverError, UnsupportedError

__all__ = [
    "LOGIN_TIMEOUT_S",
    "MAX_AUTH_FAILURES",
    "MAX_FORWARDS",
    "MAX_SESSIONS",
    "Account",
    "Grant",
    "Instance",
    "SshServer",
    "allowed_env",
    "parse_passwd",
]

log = logging.getLogger("agent.access.sshd")

MAX_AUTH_FAILURES = 6  # keys tried that do not fit (OpenSSH's MaxAuthTries)
LOGIN_TIMEOUT_S = 30.0
KEEPALIVE_S = 30.0
MAX_SESSIONS = 16  # shells, commands and SFTP at once, per connection
MAX_FORWARDS = 64  # -L connections at once, per connection
MAX_ENV = 64
MAX_ENV_VALUE = 1024
CONNECT_TIMEOUT_S = 10.0
EXEC_TIMEOUT_S = 15.0
LOOPBACK = {"localhost": "127.0.0.1", "localhost.localdomain": "127.0.0.1", "ip6-localhost": "::1",
            "127.0.0.1": "127.0.0.1", "::1": "::1", "[::1]": "::1"}
_TERM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
_ENV_NAME_RE = re.compile(r"^(LANG|LANGUAGE|TERM|COLORTERM|LC_[A-Z_]{1,32})$")
_USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}\$?$")
ROOT_USER = "0:0"  # numeric: works where /etc/passwd has no root


@dataclass(frozen=True, slots=True)
class Grant:
    """Who may log in (from the ``ssh`` stream's parameters)."""

    keys: Sequence[str]  # OpenSSH public key lines
    login: str = ""  # the login name the gateway was asked for ("": it does not know)
    user: str = ""  # the DM user (logs, banner)


@dataclass(frozen=True, slots=True)
class Account:
    """A login of the container (from its /etc/passwd, or what is known without it)."""

    name: str
    uid: int | None = None
    gid: int | None = None
    home: str = ""
    shell: str = ""


def parse_passwd(text: bytes) -> dict[str, Account]:
    """``name:x:uid:gid:gecos:home:shell`` lines; malformed lines are skipped."""
    accounts: dict[str, Account] = {}
    for raw in text.decode("utf-8", "replace").splitlines():
        fields = raw.split(":")
        if len(fields) < 7 or not fields[0] or fields[0] in accounts:
            continue
        try:
            uid, gid = int(fields[2]), int(fields[3])
        except ValueError:
            continue
        accounts[fields[0]] = Account(fields[0], uid, gid, fields[5], fields[6])
    return accounts


def _parse_groups(text: bytes) -> dict[int, str]:
    groups: dict[int, str] = {}
    for raw in text.decode("utf-8", "replace").splitlines():
        fields = raw.split(":")
        if len(fields) >= 3 and fields[0]:
            with contextlib.suppress(ValueError):
                groups.setdefault(int(fields[2]), fields[0])
    return groups


def allowed_env(env: dict[bytes, bytes]) -> dict[str, str]:
    """The client's variables a session takes: LANG, LANGUAGE, LC_*, TERM, COLORTERM with short
    printable values; the rest is ignored (as sshd's default AcceptEnv does)."""
    taken: dict[str, str] = {}
    for raw_name, raw_value in env.items():
        try:
            name, value = raw_name.decode("ascii"), raw_value.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if _ENV_NAME_RE.match(name) and len(value) <= MAX_ENV_VALUE and value.isprintable():
            taken[name] = value
            if len(taken) >= MAX_ENV:
                break
    return taken


@dataclass(slots=True)
class Instance:
    """What one connection serves: the container, its root and accounts, its login user."""

    container: ContainerInfo
    pid: int | None
    root: Root | None
    user: str  # the container's configured user's name
    accounts: dict[str, Account] = field(default_factory=dict)
    names: IdNames = field(default_factory=IdNames)

    def close(self) -> None:
        if self.root is not None:
            self.root.close()
            self.root = None


async def _open_instance(driver: RuntimeDriver, container: ContainerInfo) -> Instance:
    pid: int | None
    try:
        pid = await driver.host_pid(container.id)
    except UnsupportedError:
        pid = None
    root: Root | None = None
    accounts: dict[str, Account] = {}
    names = IdNames()
    if pid is not None and inroot.available():
        def read_ids() -> tuple[Root, dict[str, Account], IdNames]:
            opened = Root.of_pid(pid)
            passwd = group = b""
            with contextlib.suppress(OSError):
                passwd = opened.read_small(b"/etc/passwd")
            with contextlib.suppress(OSError):
                group = opened.read_small(b"/etc/group")
            found = parse_passwd(passwd)
            return opened, found, IdNames({a.uid: n for n, a in found.items() if a.uid is not None},
                                          _parse_groups(group))

        root, accounts, names = await asyncio.to_thread(read_ids)
    user = "root"
    try:
        result = await driver.exec(container.id, ["id", "-un"], timeout=EXEC_TIMEOUT_S)
    except DriverError as exc:
        log.info("instance %s: the login user is not known (%s); root", container.instance_id, exc)
    else:
        name = result.stdout_text.strip()
        if result.exit_code == 0 and _USER_RE.match(name):
            user = name
    return Instance(container, pid, root, user, accounts, names)


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
        return await _open_instance(self.driver, container)

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
        self.sessions: set[_Session] = set()
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
        self._account = self._account_of(self.username)

    def _account_of(self, login: str) -> Account:
        found = self.instance.accounts.get(login)
        if login == "root" and found is None:
            found = Account("root", 0, 0, "/root", "")
        return found or Account(login)

    @property
    def account(self) -> Account:
        if self._account is None:
            self._account = self._account_of(self.username)
        return self._account

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and not self.ended:
            self.ended = _describe(exc)

    # --- channels

    def session_requested(self) -> _Session | bool:
        if len(self.sessions) >= MAX_SESSIONS:
            log.info("instance %s: session refused: %d open", self.instance.container.instance_id, MAX_SESSIONS)
            return False
        session = _Session(self)
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


class _Session(SSHServerStreamSession[bytes]):
    """One session channel: a shell, a command or SFTP (asyncssh's stream session does the
    plumbing and SFTP/scp; this class sets the bounds and runs the process)."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self._process: ExecSession | None = None
        self._gone = asyncio.Event()
        files = connection.instance.root is not None
        super().__init__(self._run, self._sftp if files else None, sftp_version=3, allow_scp=files)

    def _sftp(self, chan: SSHChannel[bytes]) -> asyncssh.SFTPServer:
        instance = self._connection.instance
        if instance.root is None:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, "files are not reachable on this node")
        account = self._connection.account
        owner = (account.uid, account.gid) if account.uid and account.gid is not None else None
        home = (account.home or "/").encode("utf-8", "surrogateescape")
        return ContainerSftp(cast(asyncssh.SSHServerChannel[Any], chan), FsContext(instance.root, home, owner,
                                                                                   instance.names))

    # --- requests on the channel

    def pty_requested(self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Any) -> bool:
        cols, rows = term_size[0], term_size[1]
        if not _TERM_RE.match(term_type):
            log.info("PTY refused: terminal type %r", term_type[:80])
            return False
        if cols > MAX_TERMINAL or rows > MAX_TERMINAL:
            log.info("PTY refused: %dx%d is larger than %d", cols, rows, MAX_TERMINAL)
            return False
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        return subsystem == "sftp" and self._connection.instance.root is not None

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        if not (1 <= width <= MAX_TERMINAL and 1 <= height <= MAX_TERMINAL):
            log.info("window change to %dx%d ignored", width, height)
            return
        super().terminal_size_changed(width, height, pixwidth, pixheight)

    def connection_lost(self, exc: Exception | None) -> None:
        self._gone.set()
        self._connection.sessions.discard(self)
        super().connection_lost(exc)

    def session_started(self) -> None:
        chan = self._chan
        if chan is not None and chan.get_subsystem() == "sftp" and self._connection.instance.root is not None:
            # As asyncssh does, but the channel ends with exit status 0 as sftp-server's does
            # (OpenSSH's scp reports a transfer without one as failed).
            stdin = SSHReader[bytes](self, chan)  # type: ignore[arg-type]
            stdout = _ExitingWriter(self, chan)  # type: ignore[arg-type]
            chan.set_encoding(None)
            server = self._sftp(chan)  # type: ignore[arg-type]
            assert self._conn is not None
            self._conn.create_task(run_sftp_server(server, stdin, stdout, 3), stdin.logger)
            return
        super().session_started()

    async def stop(self) -> None:
        self._gone.set()
        if self._process is not None:
            await self._process.close()

    # --- the process

    def _argv(self, chan: asyncssh.SSHServerChannel[bytes], shell: str) -> list[str]:
        command = chan.get_command()
        if command is not None:
            return [shell, "-c", command]
        return [shell, "-l"] if shell.endswith(("bash", "zsh", "sh")) else [shell]

    async def _shell(self, account: Account, user: str | None) -> str:
        root = self._connection.instance.root
        if root is None:
            return (await login_shell(self._connection.server.driver, self._connection.instance.container.id,
                                      user))[0]

        def pick() -> str:
            for candidate in (account.shell, "/bin/bash", "/bin/sh"):
                if candidate and candidate.startswith("/") and _is_executable(root, candidate):
                    return candidate
            return "/bin/sh"

        return await asyncio.to_thread(pick)

    async def _workdir(self, home: str) -> str | None:
        root = self._connection.instance.root
        if not home.startswith("/") or root is None:
            return None

        def is_dir() -> bool:
            try:
                return stat.S_ISDIR(root.stat(home.encode("utf-8", "surrogateescape")).st_mode)
            except OSError:
                return False

        return home if await asyncio.to_thread(is_dir) else None

    async def _run(self, stdin: asyncssh.SSHReader[bytes], stdout: asyncssh.SSHWriter[bytes],
                   stderr: asyncssh.SSHWriter[bytes]) -> None:
        chan = cast(asyncssh.SSHServerChannel[bytes], stdout.channel)
        connection = self._connection
        instance = connection.instance
        account = connection.account
        user = ROOT_USER if account.name == "root" else None  # None: the container's configured user
        term = chan.get_terminal_type()
        cols, rows = chan.get_terminal_size()[:2]
        env = allowed_env(dict(chan.get_environment_bytes()))
        if term:
            env["TERM"] = term
        shell = await self._shell(account, user)
        env.update({"USER": account.name, "LOGNAME": account.name, "SHELL": shell})
        if account.home:
            env["HOME"] = account.home
        if self._gone.is_set():
            return  # the channel closed before anything started
        try:
            process = await connection.server.driver.exec_interactive(
                instance.container.id, self._argv(chan, shell), tty=term is not None, user=user, env=env,
                workdir=await self._workdir(account.home), cols=cols if 1 <= cols <= MAX_TERMINAL else 80,
                rows=rows if 1 <= rows <= MAX_TERMINAL else 24)
        except DriverError as exc:
            stderr.write(f"DM: cannot start the process: {exc.message}\r\n".encode())
            chan.exit(255)
            return
        self._process = process
        status = 255
        feeder = asyncio.ensure_future(_feed(stdin, process, tty=term is not None))
        output = asyncio.ensure_future(_copy_output(process, stdout, stderr))
        gone = asyncio.ensure_future(self._gone.wait())
        try:
            await asyncio.wait({output, gone}, return_when=asyncio.FIRST_COMPLETED)
            if output.done() and output.exception() is None:
                status = await process.wait()
        except DriverError as exc:
            log.info("instance %s: exit status unknown: %s", instance.container.instance_id, exc)
        finally:
            for task in (feeder, output, gone):
                task.cancel()
            await asyncio.gather(feeder, output, gone, return_exceptions=True)
            await process.close()
        if not self._gone.is_set():
            with contextlib.suppress(OSError, asyncssh.Error):
                chan.exit(status)


class _ExitingWriter(SSHWriter[bytes]):
    """The SFTP server's writer: closing it ends the channel with exit status 0."""

    def close(self) -> None:
        with contextlib.suppress(OSError, asyncssh.Error):
            cast(asyncssh.SSHServerChannel[bytes], self.channel).exit(0)


def _is_executable(root: Root, path: str) -> bool:
    try:
        info = root.stat(path.encode("utf-8", "surrogateescape"))
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and bool(info.st_mode & 0o111)


async def _feed(stdin: asyncssh.SSHReader[bytes], process: ExecSession, *, tty: bool) -> None:
    """The client's input to the process; window changes become resizes. On a terminal the
    client's EOF is not passed on (as sshd does: the terminal stays open; the Engine would
    close it, and output still on its way would be lost)."""
    while True:
        try:
            data = await stdin.read(65536)
        except asyncssh.TerminalSizeChanged as change:
            with contextlib.suppress(DriverError):
                await process.resize(change.width, change.height)
            continue
        except (asyncssh.BreakReceived, asyncssh.SignalReceived, SoftEOFReceived):
            continue
        except (asyncssh.Error, OSError):
            return
        try:
            if not data:
                if not tty:
                    await process.write_eof()
                return
            await process.write(data)
        except DriverError:
            return  # the process no longer reads: what follows is dropped, as a closed pipe would


async def _copy_output(process: ExecSession, stdout: asyncssh.SSHWriter[bytes],
                       stderr: asyncssh.SSHWriter[bytes]) -> None:
    while True:
        kind, data = await process.read()
        if kind == 0:
            return
        writer = stderr if kind == 2 else stdout
        writer.write(data)
        await writer.drain()
