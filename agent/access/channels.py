"""The stream kinds that reach into an instance: a process (``exec``), one of its TCP ports
(``tcp``) and its output (``logs``). See :mod:`agent.streams` for how a stream gets here.

* exec: a process in the running container through the runtime driver (``exec_interactive``),
  with or without a terminal. No command: the login shell of the container's user from its
  ``/etc/passwd``, else ``/bin/bash``, else ``/bin/sh`` (found by one constant script: nothing
  the user sent reaches a shell). Stream data is stdin / output; a CONTROL ``{"resize":
  {"cols", "rows"}}`` resizes the terminal; the stream ends with the exit status.
* tcp: a connection to the container's own address on its network at ``port`` — never to
  another host: the address comes from the runtime, not from the request.
* logs: the container's log lines (``tail`` then, with ``follow``, new ones as they come), one
  per line, until the container stops or the stream is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from agent import protocol as p
from agent.features import Feature
from agent.handlers import HandlerError, HandlerRegistry
from agent.protocol.types import ContainerInfo
from agent.runtime.driver import ExecSession, RuntimeDriver
from agent.streams import StreamHandlers

__all__ = ["MAX_ARGS", "MAX_ARG_CHARS", "MAX_TERMINAL", "SHELL_SCRIPT", "Channels", "check_exec", "login_shell"]

log = logging.getLogger("agent.access")

MAX_ARGS = 256
MAX_ARG_CHARS = 8192
MAX_ENV = 64
MAX_TERMINAL = 1000  # columns or rows
CONNECT_TIMEOUT_S = 5.0

# Prints the shell to run for the user the exec runs as: their login shell if it exists, else
# bash, else sh. Constant: the user name comes from `id -un` inside the container.
SHELL_SCRIPT = (
    'u=$(id -un 2>/dev/null); s=""; '
    'if [ -n "$u" ] && [ -r /etc/passwd ]; then s=$(grep "^$u:" /etc/passwd | head -n 1 | cut -d: -f7); fi; '
    'case "$s" in */nologin|*/false|"") s="";; esac; '
    'if [ -n "$s" ] && [ -x "$s" ]; then echo "$s"; elif [ -x /bin/bash ]; then echo /bin/bash; '
    'else echo /bin/sh; fi'
)


def check_exec(params: p.ExecParams) -> None:
    """Bounds on what a caller may ask for; HandlerError("invalid") naming what is wrong."""
    if len(params.cmd) > MAX_ARGS or any(len(a) > MAX_ARG_CHARS or "\x00" in a for a in params.cmd):
        raise HandlerError("invalid", f"the command may have at most {MAX_ARGS} arguments of {MAX_ARG_CHARS} "
                                      "characters, without NUL")
    if not (1 <= params.cols <= MAX_TERMINAL and 1 <= params.rows <= MAX_TERMINAL):
        raise HandlerError("invalid", f"terminal size must be 1..{MAX_TERMINAL} columns and rows")
    if len(params.env) > MAX_ENV or any(
        not k or "=" in k or "\x00" in k + v or len(k) + len(v) > MAX_ARG_CHARS for k, v in params.env.items()
    ):
        raise HandlerError("invalid", f"at most {MAX_ENV} environment variables NAME=value")
    for what, value in (("user", params.user), ("workdir", params.workdir)):
        if len(value) > 256 or "\x00" in value:
            raise HandlerError("invalid", f"{what} is too long or contains NUL")


async def login_shell(driver: RuntimeDriver, container: str, user: str | None) -> list[str]:
    """The shell for ``user`` in the container (see SHELL_SCRIPT); /bin/sh when it cannot tell."""
    with contextlib.suppress(Exception):
        result = await driver.exec(container, ["/bin/sh", "-c", SHELL_SCRIPT], user=user, timeout=10)
        shell = result.stdout_text.strip()
        if result.exit_code == 0 and shell.startswith("/") and len(shell) < 256 and "\n" not in shell:
            return [shell, "-l"] if shell.endswith(("bash", "zsh", "sh")) else [shell]
    return ["/bin/sh"]


def _resize_of(msg: dict[str, Any]) -> tuple[int, int] | None:
    size = msg.get("resize")
    if not isinstance(size, dict):
        return None
    cols, rows = size.get("cols"), size.get("rows")
    if not (isinstance(cols, int) and isinstance(rows, int)):
        return None
    if not (1 <= cols <= MAX_TERMINAL and 1 <= rows <= MAX_TERMINAL):
        return None
    return cols, rows


class Channels(Feature):
    """exec, tcp and logs streams (registered with the link's stream handlers)."""

    name = "channels"

    def __init__(self, driver: RuntimeDriver) -> None:
        self.driver = driver

    def register(self, registry: HandlerRegistry) -> None:
        """No requests: this feature serves streams only."""

    def register_streams(self, streams: StreamHandlers) -> None:
        streams.register("exec", self.exec_stream)
        streams.register("tcp", self.tcp_stream)
        streams.register("logs", self.logs_stream)

    # -- exec ---------------------------------------------------------------------------
    async def exec_stream(self, stream: p.Stream, container: ContainerInfo) -> p.StreamEnd:
        params = stream.open.exec or p.ExecParams()
        check_exec(params)
        user = params.user or None
        cmd = list(params.cmd) or await login_shell(self.driver, container.id, user)
        session = await self.driver.exec_interactive(
            container.id, cmd, tty=params.tty, user=user, env=params.env or None,
            workdir=params.workdir or None, cols=params.cols, rows=params.rows,
        )
        stream.accept()
        try:
            return await self._run_exec(stream, session)
        finally:
            await session.close()

    async def _run_exec(self, stream: p.Stream, session: ExecSession) -> p.StreamEnd:
        async def stdin() -> None:
            while data := await stream.read():
                await session.write(data)
            await session.write_eof()

        async def controls() -> None:
            while (msg := await stream.next_control()) is not None:
                size = _resize_of(msg)
                if size is not None:
                    await session.resize(*size)

        helpers = [asyncio.ensure_future(stdin()), asyncio.ensure_future(controls())]
        try:
            while True:
                kind, data = await session.read()
                if kind == 0:
                    break
                await stream.write(data)
            status = await session.wait()
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
        return p.StreamEnd("exited", f"the process exited with status {status}", status)

    # -- tcp ------------------------------------------------------------------------------
    async def tcp_stream(self, stream: p.Stream, container: ContainerInfo) -> p.StreamEnd:
        params = stream.open.tcp
        assert params is not None  # StreamOpen.check
        if not 1 <= params.port <= 65535:
            raise HandlerError("invalid", "port must be 1..65535")
        address = container.ip_address
        if not address:
            raise HandlerError("unreachable", f"instance {stream.open.instance_id} has no address on its network")
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                reader, writer = await asyncio.open_connection(address, params.port)
        except (OSError, TimeoutError) as e:
            reason = "nothing listens there" if isinstance(e, ConnectionRefusedError) else str(e) or "timed out"
            raise HandlerError("refused", f"cannot connect to port {params.port} of instance "
                                          f"{stream.open.instance_id}: {reason}") from None
        stream.accept()
        await p.bridge(stream, reader, writer)
        return p.StreamEnd("closed", "the connection ended")

    # -- logs -----------------------------------------------------------------------------
    async def logs_stream(self, stream: p.Stream, container: ContainerInfo) -> p.StreamEnd:
        params = stream.open.logs or p.LogsParams()
        tail = None if params.tail is None else max(0, min(params.tail, 100_000))
        lines = self.driver.logs(container.id, tail=tail, follow=params.follow)
        stream.accept()
        try:
            async for line in lines:
                await stream.write(line.encode("utf-8", "replace") + b"\n")
        finally:
            aclose = getattr(lines, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
        return p.StreamEnd("closed", "the container stopped" if params.follow else "end of the log")
