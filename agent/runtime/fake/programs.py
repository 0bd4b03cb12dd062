"""What runs in the fake driver's containers: programs (coroutines) instead of processes.

``echo``, ``true``, ``false``, ``cat``, ``sleep``, ``env`` and ``printenv`` are built in; a
container command nobody registered idles until it is stopped (:func:`idle`); an exec command
nobody registered exits 127 (:func:`missing`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence

__all__ = ["BUILTINS", "KILL_EXIT_CODE", "STOP_EXIT_CODE", "FakeProcess", "FakeProgram", "idle", "missing"]

STOP_EXIT_CODE = 143  # 128 + SIGTERM, as an init-wrapped process reports it
KILL_EXIT_CODE = 137  # 128 + SIGKILL


class FakeProcess:
    """What a fake program sees: its argv, environment and stdin, and where it writes.

    An interactive process (``exec_interactive``) reads its input as it comes with
    :meth:`read_input`; ``tty`` and ``size`` (cols, rows) say whether it is on a terminal and
    how large that is now."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], stdin: bytes, sink: Callable[[int, bytes], None],
                 *, input: asyncio.Queue[bytes | None] | None = None, tty: bool = False,
                 size: tuple[int, int] = (80, 24)):
        self.argv = list(argv)
        self.env = dict(env)
        self.stdin = stdin
        self.tty = tty
        self.size = size
        self._sink = sink
        self._input = input
        self._stdin_read = False

    async def read_input(self) -> bytes:
        """The next chunk of input; b"" at its end (the whole of ``stdin`` for a plain exec)."""
        if self._input is None:
            if self._stdin_read:
                return b""
            self._stdin_read = True
            return self.stdin
        chunk = await self._input.get()
        if chunk is None:
            self._input.put_nowait(None)  # the end stays the end
            return b""
        return chunk

    def write(self, data: str | bytes, stream: int = 1) -> None:
        """Raw output on stdout (1) or stderr (2)."""
        self._sink(2 if stream == 2 else 1, data.encode() if isinstance(data, str) else bytes(data))

    def print(self, *parts: object, stream: int = 1) -> None:
        """One line of output."""
        self.write(" ".join(str(p) for p in parts) + "\n", stream)


FakeProgram = Callable[[FakeProcess], Awaitable[int | None]]


async def _echo(proc: FakeProcess) -> int:
    args = proc.argv[1:]
    newline = True
    if args and args[0] == "-n":
        newline, args = False, args[1:]
    proc.write(" ".join(args) + ("\n" if newline else ""))
    return 0


async def _true(proc: FakeProcess) -> int:
    return 0


async def _false(proc: FakeProcess) -> int:
    return 1


async def _cat(proc: FakeProcess) -> int:
    while chunk := await proc.read_input():
        proc.write(chunk)
    return 0


async def _sleep(proc: FakeProcess) -> int:
    try:
        seconds = float(proc.argv[1]) if len(proc.argv) > 1 else 0.0
    except ValueError:
        proc.print(f"sleep: invalid number '{proc.argv[1]}'", stream=2)
        return 1
    await asyncio.sleep(seconds)
    return 0


async def _env(proc: FakeProcess) -> int:
    names = proc.argv[1:]
    if proc.argv[0].endswith("printenv") and names:
        missing = 0
        for name in names:
            if name in proc.env:
                proc.print(proc.env[name])
            else:
                missing = 1
        return missing
    for key, value in proc.env.items():
        proc.print(f"{key}={value}")
    return 0


async def idle(proc: FakeProcess) -> int:
    await asyncio.Event().wait()
    return 0  # pragma: no cover - only ever cancelled


async def missing(proc: FakeProcess) -> int:
    proc.print(f"exec: {proc.argv[0]!r}: executable file not found in $PATH", stream=2)
    return 127


BUILTINS: dict[str, FakeProgram] = {
    "echo": _echo,
    "true": _true,
    "false": _false,
    "cat": _cat,
    "sleep": _sleep,
    "env": _env,
    "printenv": _env,
}

