"""Byte streams multiplexed on the agent link (standard library only: both ends import this).

Many streams share the one WebSocket: a terminal, an SSH session, a tunnel, a file copy or a
log follow is each a *stream*. Stream frames are binary WebSocket messages (the JSON
envelopes stay text frames)::

    op (1 byte) | stream id (4 bytes, big endian) | payload

    OPEN     dmd -> agent   StreamOpen as JSON (only dmd opens streams)
    ACCEPT   agent -> dmd   the agent runs the stream; data may flow
    DATA     both           bytes, at most CHUNK, never more than the peer's credit
    EOF      both           no more DATA from this side (shutdown(SHUT_WR)); reads go on
    CREDIT   both           u32: the receiver consumed that many bytes, the sender may send them
    CONTROL  both           a small JSON object (a terminal's new size)
    CLOSE    both           StreamEnd as JSON: why it ended, an exec's exit status

Flow control is per stream: each side may have at most WINDOW bytes in flight towards the
other, so one stream's bulk copy fills only its own window and memory stays bounded by
streams x WINDOW. One writer task per link sends, in this order: the control queue (the
envelopes — heartbeats, requests, replies — and OPEN/ACCEPT/CREDIT/CONTROL), then one DATA
chunk of each stream with data in turn. A heartbeat or another stream's keystroke so waits
for at most one chunk already on its way, never behind a bulk transfer.

Public API::

    mux = Mux(role="dmd" | "agent", send_text, send_bytes, accept=handler)  # handler: agent side
    writer = asyncio.create_task(mux.run_writer())
    mux.put_control(envelope_json)          # dmd: queue; agent: await mux.send_control(...) to wait
    mux.feed(binary_frame)                  # from the receive loop; ProtocolError: close the link
    stream = await mux.open(StreamOpen(...))    # dmd side; StreamRefused with the agent's reason
    data = await stream.read(); await stream.write(b"..."); await stream.close(StreamEnd(...))
    mux.close_all(StreamEnd("link_lost", "..."))    # the link ended
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

from agent.protocol.codec import DecodeError, decode, encode
from agent.protocol.envelope import CLOSE_PROTOCOL, ProtocolError

__all__ = [
    "CHUNK", "MAX_CONTROL_BYTES", "MAX_STREAMS_PER_LINK", "OP_ACCEPT", "OP_CLOSE", "OP_CONTROL", "OP_CREDIT",
    "OP_DATA", "OP_EOF", "OP_OPEN", "STREAM_KINDS", "WINDOW", "CopyParams", "ExecParams", "LogsParams", "Mux",
    "SshParams", "Stream", "StreamClosed", "StreamEnd", "StreamOpen", "StreamRefused", "TcpParams", "bridge",
    "frame", "parse_frame",
]

log = logging.getLogger("agent.protocol.streams")

OP_OPEN, OP_ACCEPT, OP_DATA, OP_EOF, OP_CREDIT, OP_CONTROL, OP_CLOSE = range(1, 8)
_OPS = frozenset(range(1, 8))
_HEADER = struct.Struct("!BI")
_U32 = struct.Struct("!I")

WINDOW = 1 << 20  # bytes in flight per stream and direction
CHUNK = 64 << 10  # the largest DATA payload: what a heartbeat may wait behind
MAX_STREAMS_PER_LINK = 64  # open streams on one link (memory: x WINDOW each way)
MAX_CONTROL_BYTES = 4096  # an OPEN, CONTROL or CLOSE payload
MAX_CONTROLS_QUEUED = 64  # CONTROL messages not yet taken by the stream's reader
OPEN_TIMEOUT_S = 20.0
_CREDIT_EVERY = WINDOW // 4  # consumed bytes returned in batches, not per chunk

STREAM_KINDS = ("exec", "tcp", "copy", "logs", "ssh")
Kind = Literal["exec", "tcp", "copy", "logs", "ssh"]


# =========================================================================== the typed messages


@dataclass(frozen=True, slots=True)
class ExecParams:
    """kind "exec": a process in the instance's container."""

    cmd: list[str] = field(default_factory=list)  # empty: the shell (the user's, else bash, else sh)
    tty: bool = True
    cols: int = 80
    rows: int = 24
    env: dict[str, str] = field(default_factory=dict)
    user: str = ""  # empty: the container's user
    workdir: str = ""


@dataclass(frozen=True, slots=True)
class TcpParams:
    """kind "tcp": a TCP connection to one of the instance's own ports."""

    port: int


@dataclass(frozen=True, slots=True)
class CopyParams:
    """kind "copy": a tar stream into ("in": extracted at ``path``) or out of ("out": ``path``
    packed) the container."""

    direction: Literal["in", "out"]
    path: str


@dataclass(frozen=True, slots=True)
class LogsParams:
    """kind "logs": the instance's output lines, new ones pushed while ``follow``."""

    tail: int | None = 200
    follow: bool = True


@dataclass(frozen=True, slots=True)
class SshParams:
    """kind "ssh": the agent serves SSH for the instance on this stream (its image has no server)."""

    user: str  # the DM user, for the agent's log
    login: str  # the login name the gateway was asked for ("" when it does not know it)
    keys: list[str] = field(default_factory=list)  # OpenSSH public key lines that may log in


@dataclass(frozen=True, slots=True)
class StreamOpen:
    kind: Kind
    instance_id: int
    exec: ExecParams | None = None
    tcp: TcpParams | None = None
    copy: CopyParams | None = None
    logs: LogsParams | None = None
    ssh: SshParams | None = None

    def check(self) -> None:
        """The parameters of its kind are there; raises ValueError naming what is missing."""
        if getattr(self, self.kind) is None and self.kind not in ("exec", "logs"):
            raise ValueError(f"a {self.kind} stream needs its '{self.kind}' parameters")


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """Why a stream ended. ``code``: closed (normally), refused, not_found, not_running, limit,
    unsupported, error, revoked, link_lost, or a driver's error code."""

    code: str = "closed"
    reason: str = ""
    exit_status: int | None = None


class StreamClosed(Exception):
    """A write on a stream that has ended."""

    def __init__(self, end: StreamEnd) -> None:
        super().__init__(end.reason or end.code)
        self.end = end


class StreamRefused(Exception):
    """The agent did not accept the stream (or the link ended first)."""

    def __init__(self, end: StreamEnd) -> None:
        super().__init__(end.reason or end.code)
        self.end = end


# =========================================================================== frames


def frame(op: int, stream_id: int, payload: bytes = b"") -> bytes:
    return _HEADER.pack(op, stream_id) + payload


def parse_frame(raw: bytes) -> tuple[int, int, bytes]:
    if len(raw) < _HEADER.size:
        raise ProtocolError("stream frame shorter than its header")
    op, sid = _HEADER.unpack_from(raw)
    if op not in _OPS:
        raise ProtocolError(f"unknown stream frame op {op}")
    payload = raw[_HEADER.size:]
    if op == OP_DATA:
        if len(payload) > CHUNK:
            raise ProtocolError(f"stream DATA of {len(payload)} bytes exceeds {CHUNK}")
    elif len(payload) > MAX_CONTROL_BYTES:
        raise ProtocolError(f"stream frame op {op} of {len(payload)} bytes exceeds {MAX_CONTROL_BYTES}")
    return op, sid, payload


def _json_payload(value: Any) -> bytes:
    return json.dumps(encode(value), separators=(",", ":"), ensure_ascii=False).encode()


def _json_object(payload: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError):
        raise ProtocolError(f"stream {what} is not valid JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"stream {what} must be a JSON object")
    return obj


# =========================================================================== one stream


class Stream:
    """One byte stream, the same on both ends. Reads return chunks as they came (b"" at the
    end); writes wait for the peer's credit."""

    def __init__(self, mux: Mux, stream_id: int, opening: StreamOpen) -> None:
        self._mux = mux
        self.id = stream_id
        self.open = opening
        self.bytes_in = 0
        self.bytes_out = 0
        self._buf: deque[bytes] = deque()
        self._readable = asyncio.Event()
        self._eof_in = False
        self._eof_out = False
        self._credit = WINDOW  # what we may still send
        self._credit_changed = asyncio.Event()
        self._allowance = WINDOW  # what the peer may still send us
        self._consumed = 0  # read but not yet returned as credit
        self._controls: deque[dict[str, Any]] = deque(maxlen=MAX_CONTROLS_QUEUED)
        self._control_ready = asyncio.Event()
        self._out: deque[bytes] = deque()  # frames in order: DATA, EOF, CLOSE
        self._end: StreamEnd | None = None
        self._ended = asyncio.Event()
        self._accepted: asyncio.Future[None] | None = None
        self.accepted = False

    # -- reading -----------------------------------------------------------------
    async def read(self) -> bytes:
        while not self._buf:
            if self._eof_in or self._end is not None:
                return b""
            self._readable.clear()
            await self._readable.wait()
        chunk = self._buf.popleft()
        self._consumed += len(chunk)
        if self._consumed >= _CREDIT_EVERY and self._end is None:
            self._mux.put_control(frame(OP_CREDIT, self.id, _U32.pack(self._consumed)))
            self._allowance += self._consumed
            self._consumed = 0
        return chunk

    async def next_control(self) -> dict[str, Any] | None:
        while not self._controls:
            if self._end is not None:
                return None
            self._control_ready.clear()
            await self._control_ready.wait()
        return self._controls.popleft()

    # -- writing -----------------------------------------------------------------
    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._end is not None or self._eof_out:
                raise StreamClosed(self._end or StreamEnd("closed", "this side already sent EOF"))
            if self._credit <= 0:
                self._credit_changed.clear()
                await self._credit_changed.wait()
                continue
            n = min(len(view), self._credit, CHUNK)
            self._credit -= n
            self.bytes_out += n
            self._queue(frame(OP_DATA, self.id, bytes(view[:n])))
            view = view[n:]

    async def write_eof(self) -> None:
        if self._end is None and not self._eof_out:
            self._eof_out = True
            self._queue(frame(OP_EOF, self.id))

    def control(self, msg: dict[str, Any]) -> None:
        if self._end is None:
            payload = json.dumps(msg, separators=(",", ":")).encode()
            if len(payload) > MAX_CONTROL_BYTES:
                raise ValueError("control message too large")
            self._mux.put_control(frame(OP_CONTROL, self.id, payload))

    def accept(self) -> None:
        """Agent side: the stream runs; the opener's ``open`` returns."""
        if not self.accepted and self._end is None:
            self.accepted = True
            self._mux.put_control(frame(OP_ACCEPT, self.id))

    async def close(self, end: StreamEnd | None = None) -> None:
        """End the stream (idempotent); the peer learns why after the data already queued."""
        if self._end is not None:
            return
        end = end or StreamEnd()
        self._finish(end)
        self._queue(frame(OP_CLOSE, self.id, _json_payload(end)))
        self._mux._forget(self.id)

    async def wait_closed(self) -> StreamEnd:
        await self._ended.wait()
        assert self._end is not None
        return self._end

    @property
    def closed(self) -> bool:
        return self._end is not None

    @property
    def end(self) -> StreamEnd | None:
        return self._end

    # -- the mux's side ------------------------------------------------------------
    def _queue(self, data: bytes) -> None:
        self._out.append(data)
        self._mux._ready_to_send(self)

    def _finish(self, end: StreamEnd) -> None:
        self._end = end
        self._ended.set()
        self._readable.set()
        self._credit_changed.set()
        self._control_ready.set()
        if self._accepted is not None and not self._accepted.done():
            self._accepted.set_exception(StreamRefused(end))

    def _data(self, payload: bytes) -> None:
        if self._eof_in:
            raise ProtocolError(f"stream {self.id}: DATA after EOF")
        if len(payload) > self._allowance:
            raise ProtocolError(f"stream {self.id}: {len(payload)} bytes beyond the credit given "
                                f"({self._allowance})")
        self._allowance -= len(payload)
        self.bytes_in += len(payload)
        if payload:
            self._buf.append(payload)
            self._readable.set()

    def _credit_in(self, n: int) -> None:
        self._credit = min(self._credit + n, WINDOW)
        self._credit_changed.set()


# =========================================================================== the multiplexer

Accept = Callable[[Stream], Coroutine[Any, Any, None]]


class Mux:
    """The streams of one link and the link's one writer (see the module docstring)."""

    def __init__(
        self,
        role: Literal["dmd", "agent"],
        send_text: Callable[[str], Awaitable[None]],
        send_bytes: Callable[[bytes], Awaitable[None]],
        *,
        accept: Accept | None = None,
        max_streams: int = MAX_STREAMS_PER_LINK,
    ) -> None:
        self.role = role
        self._send_text = send_text
        self._send_bytes = send_bytes
        self._accept = accept
        self.max_streams = max_streams
        self.streams: dict[int, Stream] = {}
        self._ids = itertools.count(1)
        # (item, future set once written); item None: a marker, nothing to send (``drain``)
        self._control: deque[tuple[str | bytes | None, asyncio.Future[None] | None]] = deque()
        self._ready: deque[Stream] = deque()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._dead: BaseException | None = None

    # -- sending ---------------------------------------------------------------------
    @property
    def control_queued(self) -> int:
        return len(self._control)

    def put_control(self, item: str | bytes) -> None:
        """Queue an envelope (text) or a stream control frame, ahead of all data."""
        self._control.append((item, None))
        self._wake.set()

    async def drain(self) -> None:
        """Wait until the control items queued before now have been written."""
        await self.send_control(None)

    async def send_control(self, item: str | bytes | None) -> None:
        """Queue ahead of all data and wait until it is written (raises what the send raised)."""
        if self._dead is not None:
            raise ConnectionError(f"the link's writer ended: {self._dead}")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._control.append((item, fut))
        self._wake.set()
        await fut

    def _ready_to_send(self, stream: Stream) -> None:
        if stream not in self._ready:
            self._ready.append(stream)
        self._wake.set()

    async def run_writer(self) -> None:
        """The link's one writer; returns never, raises what a send raised."""
        try:
            while True:
                if self._control:
                    item, fut = self._control.popleft()
                    try:
                        if isinstance(item, str):
                            await self._send_text(item)
                        elif item is not None:
                            await self._send_bytes(item)
                    except BaseException as e:
                        if fut is not None and not fut.done():
                            fut.set_exception(e if isinstance(e, Exception) else ConnectionError("cancelled"))
                        raise
                    if fut is not None and not fut.done():
                        fut.set_result(None)
                elif self._ready:
                    stream = self._ready.popleft()
                    data = stream._out.popleft()
                    if stream._out:
                        self._ready.append(stream)  # round robin: one chunk per stream in turn
                    await self._send_bytes(data)
                else:
                    self._wake.clear()
                    await self._wake.wait()
        except BaseException as e:
            self._dead = e
            for _item, fut in self._control:
                if fut is not None and not fut.done():
                    fut.set_exception(ConnectionError("the link's writer ended"))
            self._control.clear()
            raise

    # -- opening (dmd) ----------------------------------------------------------------
    async def open(self, opening: StreamOpen, timeout: float = OPEN_TIMEOUT_S) -> Stream:
        if self.role != "dmd":
            raise RuntimeError("only dmd opens streams")
        if len(self.streams) >= self.max_streams:
            raise StreamRefused(StreamEnd("limit", f"this node's link already carries {self.max_streams} streams"))
        sid = next(self._ids)
        stream = Stream(self, sid, opening)
        stream._accepted = asyncio.get_running_loop().create_future()
        self.streams[sid] = stream
        self.put_control(frame(OP_OPEN, sid, _json_payload(opening)))
        try:
            async with asyncio.timeout(timeout):
                await stream._accepted
        except TimeoutError:
            await stream.close(StreamEnd("timeout", f"the agent did not accept the stream within {timeout:g} s"))
            raise StreamRefused(StreamEnd("timeout", f"the agent did not accept the stream within {timeout:g} s"))\
                from None
        except asyncio.CancelledError:
            await stream.close(StreamEnd("closed", "the opener went away"))
            raise
        stream.accepted = True
        return stream

    # -- receiving ----------------------------------------------------------------------
    def feed(self, raw: bytes) -> None:
        """One binary frame from the peer. ProtocolError: the peer broke the protocol."""
        op, sid, payload = parse_frame(raw)
        if op == OP_OPEN:
            self._on_open(sid, payload)
            return
        stream = self.streams.get(sid)
        if stream is None:
            return  # a stream this side already closed: frames still in flight are dropped
        if op == OP_DATA:
            stream._data(payload)
        elif op == OP_EOF:
            stream._eof_in = True
            stream._readable.set()
        elif op == OP_CREDIT:
            if len(payload) != _U32.size:
                raise ProtocolError(f"stream {sid}: CREDIT needs 4 bytes")
            stream._credit_in(_U32.unpack(payload)[0])
        elif op == OP_CONTROL:
            stream._controls.append(_json_object(payload, "CONTROL"))
            stream._control_ready.set()
        elif op == OP_ACCEPT:
            if self.role != "dmd":
                raise ProtocolError("dmd does not accept streams")
            if stream._accepted is not None and not stream._accepted.done():
                stream._accepted.set_result(None)
        elif op == OP_CLOSE:
            obj = _json_object(payload, "CLOSE")
            try:
                end: StreamEnd = decode(StreamEnd, obj)
            except DecodeError as e:
                raise ProtocolError(f"stream {sid} CLOSE: {e}") from None
            end = StreamEnd(end.code[:64], end.reason[:500], end.exit_status)
            self.streams.pop(sid, None)
            stream._finish(end)

    def _on_open(self, sid: int, payload: bytes) -> None:
        if self.role != "agent" or self._accept is None:
            raise ProtocolError("agents may not open streams", CLOSE_PROTOCOL)
        if sid in self.streams:
            raise ProtocolError(f"stream {sid} is already open")
        obj = _json_object(payload, "OPEN")
        try:
            opening: StreamOpen = decode(StreamOpen, obj)
            opening.check()
        except (DecodeError, ValueError) as e:
            self.put_control(frame(OP_CLOSE, sid, _json_payload(StreamEnd("refused", f"bad stream request: {e}"))))
            return
        if len(self.streams) >= self.max_streams:
            self.put_control(frame(OP_CLOSE, sid, _json_payload(
                StreamEnd("limit", f"this agent already runs {self.max_streams} streams"))))
            return
        stream = Stream(self, sid, opening)
        self.streams[sid] = stream
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(
            self._accept(stream), name=f"stream-{sid}-{opening.kind}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _forget(self, sid: int) -> None:
        self.streams.pop(sid, None)

    # -- the end of the link --------------------------------------------------------------
    def close_all(self, end: StreamEnd) -> None:
        """The link ended: every stream ends with ``end`` (nothing can be sent any more)."""
        for stream in list(self.streams.values()):
            stream._finish(end)
        self.streams.clear()
        self._ready.clear()

    async def stop(self) -> None:
        """Cancel the stream tasks this side runs (agent) and wait for them."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._tasks, return_exceptions=True)


# =========================================================================== a socket on a stream


async def bridge(stream: Stream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy both ways between ``stream`` and a socket until both directions ended, each end's
    EOF passed on as a half close. Returns when both are done; closes the socket, not the stream."""

    async def up() -> None:  # socket -> stream
        while data := await reader.read(CHUNK):
            await stream.write(data)
        await stream.write_eof()

    async def down() -> None:  # stream -> socket
        while data := await stream.read():
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    tasks = [asyncio.ensure_future(up()), asyncio.ensure_future(down())]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if task.exception() is not None:
                for other in pending:
                    other.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                raise task.exception()  # type: ignore[misc]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
