"""The stream multiplexer on its own: two Mux objects wired back to back (no sockets)."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from agent import protocol as p
from agent.protocol.streams import CHUNK, OP_DATA, OP_OPEN, WINDOW, frame

Handler = Callable[[p.Stream], Awaitable[p.StreamEnd]]


class Pair:
    """dmd's mux and an agent's, each one's frames fed to the other; the agent runs ``handler``."""

    def __init__(self, handler: Handler) -> None:
        self.sent_by_dmd: list[str | bytes] = []
        self.errors: list[p.ProtocolError] = []
        self.handler = handler
        self.dmd = p.Mux("dmd", self._dmd_text, self._dmd_bytes)
        self.agent = p.Mux("agent", self._agent_text, self._agent_bytes, accept=self._run)
        self.tasks = [asyncio.ensure_future(self.dmd.run_writer()), asyncio.ensure_future(self.agent.run_writer())]

    async def _run(self, stream: p.Stream) -> None:
        try:
            end = await self.handler(stream)
        except p.StreamClosed as e:
            end = e.end
        await stream.close(end)

    async def _dmd_text(self, text: str) -> None:
        self.sent_by_dmd.append(text)

    async def _dmd_bytes(self, data: bytes) -> None:
        self.sent_by_dmd.append(data)
        self._feed(self.agent, data)

    async def _agent_text(self, text: str) -> None:
        pass

    async def _agent_bytes(self, data: bytes) -> None:
        self._feed(self.dmd, data)

    def _feed(self, mux: p.Mux, data: bytes) -> None:
        try:
            mux.feed(data)
        except p.ProtocolError as e:
            self.errors.append(e)

    async def close(self) -> None:
        self.dmd.close_all(p.StreamEnd("link_lost", "test over"))
        self.agent.close_all(p.StreamEnd("link_lost", "test over"))
        await self.agent.stop()
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@pytest.fixture
async def pair_of() -> AsyncIterator[Callable[[Handler], Pair]]:
    made: list[Pair] = []

    def make(handler: Handler) -> Pair:
        made.append(Pair(handler))
        return made[-1]

    yield make
    for pair in made:
        await pair.close()


async def echo(stream: p.Stream) -> p.StreamEnd:
    stream.accept()
    while data := await stream.read():
        await stream.write(data)
    await stream.write_eof()
    return p.StreamEnd("exited", "echo done", 0)


EXEC = p.StreamOpen("exec", 1, exec=p.ExecParams(cmd=["cat"]))


async def read_all(stream: p.Stream) -> bytes:
    out = bytearray()
    while data := await stream.read():
        out += data
    return bytes(out)


async def test_bytes_go_both_ways_and_the_end_says_why(pair_of):
    pair = pair_of(echo)
    stream = await pair.dmd.open(EXEC)
    payload = bytes(range(256)) * 10_000  # 2.5 MiB: more than a window, many chunks
    writer = asyncio.ensure_future(stream.write(payload))
    got = bytearray()
    while len(got) < len(payload):
        got += await stream.read()
    await writer
    assert bytes(got) == payload
    await stream.write_eof()
    assert await stream.read() == b""  # the echo's EOF
    end = await asyncio.wait_for(stream.wait_closed(), 5)
    assert end == p.StreamEnd("exited", "echo done", 0)
    assert stream.bytes_out == stream.bytes_in == len(payload)
    assert not pair.errors and not pair.dmd.streams and not pair.agent.streams


async def test_a_reader_that_stops_holds_the_writer_at_one_window(pair_of):
    started = asyncio.Event()

    async def never_reads(stream: p.Stream) -> p.StreamEnd:
        stream.accept()
        started.set()
        await asyncio.sleep(3600)
        return p.StreamEnd()

    pair = pair_of(never_reads)
    stream = await pair.dmd.open(EXEC)
    await started.wait()
    writer = asyncio.ensure_future(stream.write(b"x" * (3 * WINDOW)))
    await asyncio.sleep(0.2)
    assert not writer.done()
    agent_side = pair.agent.streams[stream.id]
    assert sum(map(len, agent_side._buf)) == WINDOW  # exactly the credit, not a byte more
    assert stream.bytes_out == WINDOW
    await stream.close()
    with pytest.raises(p.StreamClosed):
        await writer


async def test_refusals_reach_the_opener(pair_of):
    async def refuse(stream: p.Stream) -> p.StreamEnd:
        return p.StreamEnd("not_running", "instance 1 is not running")

    pair = pair_of(refuse)
    with pytest.raises(p.StreamRefused) as err:
        await pair.dmd.open(EXEC)
    assert err.value.end.code == "not_running" and "not running" in err.value.end.reason
    with pytest.raises(p.StreamRefused, match="needs its 'tcp' parameters"):
        await pair.dmd.open(p.StreamOpen("tcp", 1))


async def test_streams_per_link_are_limited(pair_of):
    pair = pair_of(echo)
    pair.agent.max_streams = 2
    a, b = await pair.dmd.open(EXEC), await pair.dmd.open(EXEC)
    with pytest.raises(p.StreamRefused) as err:
        await pair.dmd.open(EXEC)
    assert err.value.end.code == "limit"
    await a.close()
    await asyncio.sleep(0.05)
    c = await pair.dmd.open(EXEC)  # a closed stream frees its place
    for s in (b, c):
        await s.close()


async def test_control_goes_before_queued_data(pair_of):
    pair = pair_of(echo)
    stream = await pair.dmd.open(EXEC)
    gate = asyncio.Event()
    real = pair._dmd_bytes

    async def slow(data: bytes) -> None:
        await gate.wait()
        await real(data)

    pair.dmd._send_bytes = slow
    await stream.write(b"y" * WINDOW)  # sixteen chunks queued behind the held writer
    pair.dmd.put_control('{"type":"heartbeat"}')
    gate.set()
    await pair.dmd.drain()
    data_frames = [i for i, f in enumerate(pair.sent_by_dmd) if isinstance(f, bytes) and f[0] == OP_DATA]
    beat = pair.sent_by_dmd.index('{"type":"heartbeat"}')
    # At most the chunk already being written goes before it, never the rest of the window.
    assert sum(1 for i in data_frames if i < beat) <= 1
    assert len(data_frames) >= WINDOW // CHUNK - 1


async def test_round_robin_between_streams(pair_of):
    pair = pair_of(echo)
    bulk, small = await pair.dmd.open(EXEC), await pair.dmd.open(EXEC)
    gate = asyncio.Event()
    real = pair._dmd_bytes

    async def held(data: bytes) -> None:
        await gate.wait()
        await real(data)

    pair.dmd._send_bytes = held
    await bulk.write(b"b" * WINDOW)
    await small.write(b"s")
    gate.set()
    await pair.dmd.drain()
    await asyncio.sleep(0.05)
    order = [int.from_bytes(f[1:5], "big") for f in pair.sent_by_dmd if isinstance(f, bytes) and f[0] == OP_DATA]
    assert small.id in order[:3]  # the keystroke did not wait for the whole bulk window
    for s in (bulk, small):
        await s.close()


async def test_a_peer_that_ignores_credit_breaks_the_link(pair_of):
    async def idle(stream: p.Stream) -> p.StreamEnd:
        stream.accept()
        await asyncio.sleep(3600)
        return p.StreamEnd()

    pair = pair_of(idle)
    stream = await pair.dmd.open(EXEC)
    for _ in range(WINDOW // CHUNK):
        pair.agent.feed(frame(OP_DATA, stream.id, b"z" * CHUNK))  # as dmd: the whole window
    with pytest.raises(p.ProtocolError, match="beyond the credit"):
        pair.agent.feed(frame(OP_DATA, stream.id, b"z"))


@pytest.mark.parametrize("raw, message", [
    (b"\x01", "shorter than its header"),
    (b"\x09\x00\x00\x00\x01", "unknown stream frame op"),
    (frame(OP_DATA, 1, b"x" * (CHUNK + 1)), "exceeds"),
    (frame(OP_OPEN, 1, b"{}"), "agents may not open streams"),
])
def test_malformed_frames_from_an_agent(raw: bytes, message: str) -> None:
    async def send(_: Any) -> None:
        pass

    mux = p.Mux("dmd", send, send)
    with pytest.raises(p.ProtocolError, match=message):
        mux.feed(raw)


async def test_a_bad_open_is_refused_not_run(pair_of):
    ran: list[p.Stream] = []

    async def record(stream: p.Stream) -> p.StreamEnd:
        ran.append(stream)
        return p.StreamEnd()

    pair = pair_of(record)
    closes: list[bytes] = []
    pair._agent_bytes = lambda data: closes.append(data) or asyncio.sleep(0)  # type: ignore[method-assign]
    pair.agent._send_bytes = pair._agent_bytes
    pair.agent.feed(frame(OP_OPEN, 7, json.dumps({"kind": "shell", "instance_id": 1}).encode()))
    pair.agent.feed(frame(OP_OPEN, 8, json.dumps({"kind": "exec", "instance_id": "one"}).encode()))
    await pair.agent.drain()
    assert not ran
    ends = [json.loads(c[5:]) for c in closes]
    assert [e["code"] for e in ends] == ["refused", "refused"]
    assert "kind" in ends[0]["reason"] and "instance_id" in ends[1]["reason"]
    assert struct.unpack("!I", closes[0][1:5])[0] == 7
