"""Two ends of a byte stream in memory, with the interface of agent.protocol.streams.Stream
(read, write, write_eof, control, next_control, accept, close, wait_closed, end): for unit tests
of what runs on either end of a stream, without a link and its multiplexer."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from agent.protocol.streams import StreamClosed, StreamEnd, StreamOpen

_ids = itertools.count(1)


class MemoryStream:
    def __init__(self, opening: StreamOpen, sid: int) -> None:
        self.id = sid
        self.open = opening
        self.bytes_in = 0
        self.bytes_out = 0
        self.peer: MemoryStream | None = None
        self._data: asyncio.Queue[bytes | None] = asyncio.Queue()  # b"": EOF, None: closed
        self._at_end = False
        self._controls: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._end: asyncio.Future[StreamEnd] = asyncio.get_running_loop().create_future()
        self._eof_sent = False
        self.controls_sent: list[dict[str, Any]] = []
        self.accepted = False

    @property
    def closed(self) -> bool:
        return self._end.done()

    @property
    def end(self) -> StreamEnd | None:
        return self._end.result() if self._end.done() else None

    def accept(self) -> None:
        self.accepted = True

    async def read(self) -> bytes:
        if self._at_end:
            return b""
        data = await self._data.get()
        if not data:
            self._at_end = True
            return b""
        self.bytes_in += len(data)
        return data

    async def write(self, data: bytes) -> None:
        if self.closed or self._eof_sent:
            raise StreamClosed(self._end.result() if self._end.done() else StreamEnd("closed", "EOF sent"))
        assert self.peer is not None
        self.bytes_out += len(data)
        if data:
            self.peer._data.put_nowait(bytes(data))
        await asyncio.sleep(0)

    async def write_eof(self) -> None:
        assert self.peer is not None
        self._eof_sent = True
        self.peer._data.put_nowait(b"")

    def control(self, msg: dict[str, Any]) -> None:
        assert self.peer is not None
        self.controls_sent.append(msg)
        if not self.closed:
            self.peer._controls.put_nowait(msg)

    async def next_control(self) -> dict[str, Any] | None:
        if self.closed and self._controls.empty():
            return None
        return await self._controls.get()

    async def close(self, end: StreamEnd | None = None) -> None:
        end = end or StreamEnd()
        for s in (self, self.peer):
            if s is not None and not s._end.done():
                s._end.set_result(end)
                s._data.put_nowait(None)
                s._controls.put_nowait(None)

    async def wait_closed(self) -> StreamEnd:
        return await asyncio.shield(self._end)


def pair(opening: StreamOpen) -> tuple[MemoryStream, MemoryStream]:
    """(dmd's end, the agent's end)."""
    sid = next(_ids)
    a, b = MemoryStream(opening, sid), MemoryStream(opening, sid)
    a.peer, b.peer = b, a
    return a, b
