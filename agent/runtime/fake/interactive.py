"""The fake driver's interactive exec: a program fed input as it comes, its output as a queue."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence

from agent.runtime.driver import ExecSession, check_terminal_size
from agent.runtime.errors import ConflictError
from agent.runtime.fake.programs import KILL_EXIT_CODE, FakeProcess, FakeProgram

__all__ = ["FakeExecSession"]


class FakeExecSession(ExecSession):
    """A program run as a task; ``resizes`` records each terminal size it was given."""

    def __init__(self, program: FakeProgram, argv: Sequence[str], env: Mapping[str, str], *, tty: bool,
                 size: tuple[int, int]) -> None:
        self.tty = tty
        self.resizes: list[tuple[int, int]] = []
        self._input: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._output: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
        self._eof_sent = False
        self._ended = False
        self.proc = FakeProcess(argv, env, b"", self._sink, input=self._input, tty=tty, size=size)
        self._task = asyncio.get_running_loop().create_task(self._run(program), name="fake-exec-interactive")

    def _sink(self, stream: int, data: bytes) -> None:
        if data:
            self._output.put_nowait((1 if self.tty else stream, data))

    async def _run(self, program: FakeProgram) -> int:
        try:
            return int(await program(self.proc) or 0)
        except asyncio.CancelledError:
            return KILL_EXIT_CODE
        except Exception as exc:  # a failing program is a crashing process
            self.proc.print(f"{type(exc).__name__}: {exc}", stream=2)
            return 1
        finally:
            self._output.put_nowait((0, b""))

    async def read(self) -> tuple[int, bytes]:
        if self._ended:
            return 0, b""
        stream, data = await self._output.get()
        if stream == 0:
            self._ended = True
        return stream, data

    async def write(self, data: bytes) -> None:
        if self._task.done() or self._eof_sent:
            raise ConflictError("interactive exec: the process's input is closed")
        if data:
            self._input.put_nowait(bytes(data))

    async def write_eof(self) -> None:
        if not self._eof_sent:
            self._eof_sent = True
            self._input.put_nowait(None)

    async def resize(self, cols: int, rows: int) -> None:
        check_terminal_size(cols, rows)
        if self.tty:
            self.resizes.append((cols, rows))
            self.proc.size = (cols, rows)

    async def wait(self) -> int:
        return await asyncio.shield(self._task)

    async def close(self) -> None:
        if not self._task.done():
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
