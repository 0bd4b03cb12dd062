"""One session channel of an SSH connection served by the agent: a shell, a command, SFTP or scp.

asyncssh's stream session does the plumbing (and SFTP/scp with :class:`~agent.access.sftp.ContainerSftp`);
:class:`Session` sets the bounds (terminal type and size, window changes, the client's
variables) and runs the process through the runtime driver (``exec_interactive``): the client's
input to it, window changes as resizes, its output back (stderr as extended data without a
terminal), its exit status; the process is hung up when the channel goes.

Public API::

    session = Session(owner)          # owner: what the connection knows (SessionOwner)
    allowed_env({b"LANG": b"C.UTF-8", b"LD_PRELOAD": b"x"})   # {"LANG": "C.UTF-8"}
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import stat
from typing import Any, Protocol, cast

import asyncssh
from asyncssh.channel import SSHChannel
from asyncssh.misc import SoftEOFReceived
from asyncssh.sftp import run_sftp_server
from asyncssh.stream import SSHReader, SSHServerStreamSession, SSHWriter

from agent.access import fsuser
from agent.access.channels import MAX_TERMINAL, login_shell
from agent.access.inroot import Root
from agent.access.sftp import ContainerSftp, FsContext
from agent.access.sshinstance import Account, Instance
from agent.runtime.driver import ExecSession, RuntimeDriver
from agent.runtime.errors import DriverError

__all__ = ["MAX_ENV", "ROOT_USER", "Session", "SessionOwner", "allowed_env"]

log = logging.getLogger("agent.access.sshd")

MAX_ENV = 64
MAX_ENV_VALUE = 1024
ROOT_USER = "0:0"  # numeric: works where /etc/passwd has no root
_TERM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
_ENV_NAME_RE = re.compile(r"^(LANG|LANGUAGE|TERM|COLORTERM|LC_[A-Z_]{1,32})$")


class SessionOwner(Protocol):
    """What a session needs of its connection."""

    instance: Instance
    sessions: set[Session]

    @property
    def account(self) -> Account: ...

    @property
    def driver(self) -> RuntimeDriver: ...


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


class Session(SSHServerStreamSession[bytes]):
    """One session channel: a shell, a command or SFTP (asyncssh's stream session does the
    plumbing and SFTP/scp; this class sets the bounds and runs the process)."""

    def __init__(self, connection: SessionOwner) -> None:
        self._connection = connection
        self._process: ExecSession | None = None
        self._gone = asyncio.Event()
        self._files = _can_serve_files(connection)
        super().__init__(self._run, self._sftp if self._files else None, sftp_version=3, allow_scp=self._files)

    def _sftp(self, chan: SSHChannel[bytes]) -> asyncssh.SFTPServer:
        instance = self._connection.instance
        if instance.root is None:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, "files are not reachable on this node")
        account = self._connection.account
        user: tuple[int, int, tuple[int, ...]] | None = None  # root: the agent's own threads
        if account.uid != 0:
            if account.uid is None or account.gid is None or not fsuser.available():
                # Never root's rights for another login: no SFTP without its ids.
                raise asyncssh.SFTPFailure(f"files cannot be served as {account.name} here")
            user = (account.uid, account.gid, account.groups)
        home = (account.home or "/").encode("utf-8", "surrogateescape")
        return ContainerSftp(cast(asyncssh.SSHServerChannel[Any], chan),
                             FsContext(instance.root, home, user, instance.names))

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
        return subsystem == "sftp" and self._files

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
        if chan is not None and chan.get_subsystem() == "sftp" and self._files:
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
            return (await login_shell(self._connection.driver, self._connection.instance.container.id,
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
            process = await connection.driver.exec_interactive(
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


def _can_serve_files(connection: SessionOwner) -> bool:
    """SFTP and scp need the container's root, and for a login other than root its ids (never
    root's rights for another login); without them scp is the container's own, if it has one."""
    if connection.instance.root is None:
        return False
    account = connection.account
    return account.uid == 0 or (account.uid is not None and account.gid is not None and fsuser.available())


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
