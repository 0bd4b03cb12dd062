"""One forward: bytes both ways between a `direct-tcpip` channel and a stream on the agent link,
with flow control on both sides (the channel's reader gives the client window back only as we
read; writer.drain waits for the client's window; the stream's write waits for its credit).

The forward ends like a TCP connection: each side's EOF is passed on, and it is over when both
directions are done, when the stream closes (its reason is logged and the channel closes), or
when the channel goes (the stream is closed, saying so).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import asyncssh
from asyncssh.stream import SSHReader, SSHTCPStreamSession, SSHWriter

from agent import protocol as p

if TYPE_CHECKING:
    from dmd.usecases.gateway import Forward

log = logging.getLogger("dmd.ssh")

CHUNK = 64 * 1024  # the stream's largest data frame


class Pump(SSHTCPStreamSession[bytes]):
    def __init__(self, fwd: Forward, spawn: Callable[[Coroutine[Any, Any, None]], None],
                 ended: Callable[[], None]) -> None:
        # The handler runs as the gateway's task (awaited at shutdown), not asyncssh's.
        super().__init__(lambda reader, writer: spawn(self._run(reader, writer)))  # type: ignore[arg-type,func-returns-value]
        self.fwd = fwd
        self._ended = ended
        self._channel_gone = asyncio.Event()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._channel_gone.set()

    async def _run(self, reader: SSHReader[bytes], writer: SSHWriter[bytes]) -> None:
        stream = self.fwd.stream

        async def up() -> None:  # client -> instance
            with contextlib.suppress(Exception):
                while data := await reader.read(CHUNK):
                    await stream.write(data)
                await stream.write_eof()

        async def down() -> None:  # instance -> client
            with contextlib.suppress(Exception):
                while data := await stream.read():
                    writer.write(data)
                    await writer.drain()
                if not writer.is_closing():
                    writer.write_eof()

        pumps = {asyncio.ensure_future(up()), asyncio.ensure_future(down())}
        both = asyncio.ensure_future(asyncio.wait(pumps))
        closed = asyncio.ensure_future(stream.wait_closed())
        gone = asyncio.ensure_future(self._channel_gone.wait())
        try:
            await asyncio.wait({both, closed, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            why = "the SSH client closed the channel" if gone.done() and not closed.done() else "done"
            for task in (*pumps, both, gone):
                task.cancel()
            with contextlib.suppress(Exception):
                await self.fwd.close(p.StreamEnd("closed", why))
            with contextlib.suppress(asyncssh.Error, OSError):
                writer.close()
            end = await closed
            for task in (*pumps, both, gone):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self._ended()
        inst = self.fwd.instance
        log.info("SSH gateway: forward to instance %d (%s) ended: %s%s (%d bytes in, %d out)", inst.id, inst.name,
                 end.code, f": {end.reason}" if end.reason else "", stream.bytes_in, stream.bytes_out)
