"""The agents' side of dmd: one AgentConn per connected node, and the Hub that holds them.

Each connection has a bounded send queue drained by its own writer task, so a slow or
stuck agent is disconnected instead of buffering without limit. Requests to an agent
carry ids and time limits; its replies resolve the waiting futures. Liveness (last
heartbeat) is kept in memory and written to the database in batches, so thousands of
heartbeats a minute cost a handful of writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import WSCloseCode, web

from agent import protocol as p
from dmd.agents.dispatch import Incoming
from dmd.agents.limits import check_metrics
from dmd.db import Database
from dmd.errors import ApiError
from dmd.queries import nodes as node_svc

if TYPE_CHECKING:
    from dmd.agents.handshake import Handshake

R = TypeVar("R")

log = logging.getLogger("dmd.agents")

SEND_QUEUE_MAX = 256
METRICS_KEPT = 90  # samples per node (15 minutes at the default 10 s)
FLUSH_EVERY_S = 30.0
FLUSH_BATCH = 250


class NodeOffline(ApiError):
    status, code = 409, "node_offline"


class AgentTimeout(ApiError):
    status, code = 504, "agent_timeout"


class AgentFailed(ApiError):
    status, code = 502, "agent_error"


class AgentConn:
    def __init__(self, hub: Hub, node_id: int, node_name: str, ws: web.WebSocketResponse, remote: str) -> None:
        self.hub = hub
        self.node_id = node_id
        self.node_name = node_name
        self.ws = ws
        self.remote = remote
        # The link's one writer: envelopes and stream control first, then stream data in turn.
        self.mux = p.Mux("dmd", self._send_text, self._send_bytes)
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.ids = p.IdSource("d")
        self.last_seen = time.time()
        self.connected_at = self.last_seen
        self.agent_version = ""
        self.protocol = 0
        self.closing = False
        self.writer: asyncio.Task[None] | None = None
        self.close_task: asyncio.Task[None] | None = None

    def send(self, env: p.Envelope) -> None:
        """Queue a message; an agent that cannot keep up is disconnected."""
        if self.closing:
            return
        if self.mux.control_queued >= SEND_QUEUE_MAX:
            log.warning("node %s: send queue full (%d messages); disconnecting the slow agent",
                        self.node_id, SEND_QUEUE_MAX)
            self.close_soon(p.CLOSE_SLOW, "send queue overflow: the agent is not reading")
            return
        self.mux.put_control(env.to_json())

    async def _send_text(self, text: str) -> None:
        await self.ws.send_str(text)

    async def _send_bytes(self, data: bytes) -> None:
        await self.ws.send_bytes(data)

    async def write_loop(self) -> None:
        try:
            await self.mux.run_writer()
        except (ConnectionError, RuntimeError) as e:
            log.info("node %s: send failed: %s", self.node_id, e)

    async def flush(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until what is queued now has been written."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.mux.drain(), timeout)

    async def open_stream(self, opening: p.StreamOpen) -> p.Stream:
        if self.closing:
            raise p.StreamRefused(p.StreamEnd("link_lost", f"node {self.node_name} is going offline"))
        return await self.mux.open(opening)

    async def request(self, type_: str, data: dict[str, Any] | None = None, timeout: float = 30.0) -> dict[str, Any]:
        """One request, its reply's data (see :meth:`Hub.ask` for the typed form)."""
        req_id = self.ids.next()
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[req_id] = fut
        try:
            self.send(p.message(type_, data or {}, req_id))
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise AgentTimeout(f"node {self.node_name} did not answer {type_} within {timeout:g} s") from None
        finally:
            self.pending.pop(req_id, None)

    def resolve(self, env: p.Envelope) -> None:
        assert env.id is not None
        fut = self.pending.get(env.id)
        if fut is None or fut.done():
            log.debug("node %s: reply to unknown or finished request %s", self.node_id, env.id)
            return
        if env.ok:
            fut.set_result(env.data)
        else:
            err = env.error or {}
            fut.set_exception(p.RemoteError(err.get("code", "error"), err.get("message", "")))

    def close_soon(self, code: int, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        # The endpoint awaits this task before it returns, so the close handshake completes.
        self.close_task = asyncio.get_running_loop().create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, message=reason.encode()[:120])

    def fail_pending(self, why: str) -> None:
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(NodeOffline(why))
        self.pending.clear()
        self.mux.close_all(p.StreamEnd("link_lost", why))


class Hub:
    def __init__(self, db: Database, heartbeat_s: float, installation_id: str = "") -> None:
        self.db = db
        self.heartbeat_s = heartbeat_s
        self.installation_id = installation_id
        self.conns: dict[int, AgentConn] = {}
        self.metrics: dict[int, deque[dict[str, Any]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        # Called with (node_id, event body) for each event, and with (node_id, handshake) once a
        # link is up; the reconciler subscribes to both.
        self.event_listeners: list[Callable[[int, p.EventBody], None]] = []
        self.connect_listeners: list[Callable[[int, Handshake], None]] = []
        self.incoming = Incoming()
        self.incoming.register(p.Heartbeat, lambda conn, msg: None)  # last_seen is updated for every message
        self.incoming.register(p.Metrics, self._on_metrics)
        self.incoming.register(p.NodeFacts, self._on_facts)
        self.incoming.register(p.Event, self._on_event)
        self.incoming.refuse(p.Hello, "hello was already received on this link")
        self.incoming.refuse(p.SnapshotPart, "the state was already received on this link")

    # --- lifecycle ----------------------------------------------------------------
    async def start(self) -> None:
        async with self.db.begin() as conn:
            await node_svc.reset_online(conn)
        self._tasks = [asyncio.create_task(self._watchdog()), asyncio.create_task(self._flush_loop())]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for conn in list(self.conns.values()):
            conn.closing = True
            await conn._close(WSCloseCode.GOING_AWAY, "dmd is shutting down")
        await asyncio.gather(*self._tasks, *self._background, return_exceptions=True)
        await self._flush()

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- queries --------------------------------------------------------------------
    def is_online(self, node_id: int) -> bool:
        return node_id in self.conns

    def last_seen(self, node_id: int) -> dt.datetime | None:
        c = self.conns.get(node_id)
        return dt.datetime.fromtimestamp(c.last_seen, dt.UTC) if c else None

    def recent_metrics(self, node_id: int) -> list[dict[str, Any]]:
        return list(self.metrics.get(node_id, ()))

    async def ask(self, node_id: int, req: p.Request[R], timeout: float | None = None) -> R:
        """Send a request to a node's agent and wait for its reply (at most ``timeout`` seconds,
        by default the request's own limit). A reply that does not decode is the agent's failure."""
        data = await self._call(node_id, req.TYPE, p.to_data(req), req.TIMEOUT_S if timeout is None else timeout)
        try:
            reply: R = p.parse(req.REPLY, data)
        except p.DecodeError as e:
            name = self.conns[node_id].node_name if node_id in self.conns else node_id
            raise AgentFailed(f"the agent on node {name} sent a malformed {req.TYPE} reply: {e}",
                              extra={"agent_code": "bad_reply"}) from None
        return reply

    async def _call(self, node_id: int, type_: str, data: dict[str, Any] | None = None,
                    timeout: float = 30.0) -> dict[str, Any]:
        """Send a request to a node's agent and wait for its reply's data (see :meth:`ask`)."""
        conn = self.conns.get(node_id)
        if conn is None or conn.closing:
            raise NodeOffline(f"node {node_id} is offline")
        try:
            return await conn.request(type_, data, timeout)
        except p.RemoteError as e:
            raise AgentFailed(f"the agent on node {conn.node_name} failed: {e.message}",
                              extra={"agent_code": e.code}) from None

    async def open_stream(self, node_id: int, opening: p.StreamOpen) -> p.Stream:
        """A byte stream to the node's agent (see :mod:`agent.protocol.streams`); NodeOffline, or
        StreamRefused with the agent's reason."""
        conn = self.conns.get(node_id)
        if conn is None or conn.closing:
            raise NodeOffline(f"node {node_id} is offline")
        return await conn.open_stream(opening)

    async def disconnect(self, node_id: int, code: int, reason: str, notice: p.Envelope | None = None) -> None:
        conn = self.conns.get(node_id)
        if conn is None:
            return
        if notice is not None:
            conn.send(notice)
            await conn.flush(2)
        conn.closing = True
        await conn._close(code, reason)

    # --- connection bookkeeping ---------------------------------------------------------
    async def register(self, conn: AgentConn, shake: Handshake) -> None:
        old = self.conns.get(conn.node_id)
        if old is not None:
            log.info("node %s connected again from %s; closing the older link", conn.node_id, conn.remote)
            self.conns.pop(conn.node_id, None)
            old.fail_pending("the agent reconnected")
            old.close_soon(p.CLOSE_REPLACED, "replaced by a newer connection of the same node")
        hello, protocol = shake.hello, shake.version
        conn.agent_version, conn.protocol = hello.agent_version, protocol
        async with self.db.begin() as db:
            await node_svc.mark_online(db, conn.node_id, facts=shake.facts, agent_version=hello.agent_version,
                                       protocol=protocol)
        self.conns[conn.node_id] = conn
        for listener in self.connect_listeners:
            listener(conn.node_id, shake)
        log.info("node %s (%s) online from %s, agent %s, protocol %d", conn.node_id, conn.node_name, conn.remote,
                 hello.agent_version, protocol)

    async def unregister(self, conn: AgentConn, why: str) -> None:
        conn.fail_pending(f"node {conn.node_name} went offline")
        if self.conns.get(conn.node_id) is not conn:
            return  # replaced by a newer link, or never registered
        del self.conns[conn.node_id]
        async with self.db.begin() as db:
            await node_svc.mark_offline(db, conn.node_id, dt.datetime.fromtimestamp(conn.last_seen, dt.UTC))
        log.info("node %s (%s) offline: %s", conn.node_id, conn.node_name, why)

    # --- notices from agents ---------------------------------------------------------------
    def _on_metrics(self, conn: AgentConn, msg: p.Metrics) -> None:
        check_metrics(msg)  # raises ProtocolError: the link closes, nothing is kept
        self.record_metrics(conn.node_id, p.to_data(msg))

    def _on_facts(self, conn: AgentConn, msg: p.NodeFacts) -> None:
        self.spawn(self._store_facts(conn.node_id, p.to_data(msg)))

    async def _store_facts(self, node_id: int, facts: dict[str, Any]) -> None:
        async with self.db.begin() as db:
            await node_svc.store_facts(db, node_id, facts)

    def _on_event(self, conn: AgentConn, msg: p.Event) -> None:
        for listener in self.event_listeners:
            listener(conn.node_id, msg.body)

    def record_metrics(self, node_id: int, data: dict[str, Any]) -> None:
        buf = self.metrics.get(node_id)
        if buf is None:
            buf = self.metrics[node_id] = deque(maxlen=METRICS_KEPT)
        buf.append({**data, "received_at": time.time()})

    def forget(self, node_id: int) -> None:
        self.metrics.pop(node_id, None)

    # --- periodic work --------------------------------------------------------------
    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(min(self.heartbeat_s, 5.0))
            limit = time.time() - 3 * self.heartbeat_s
            for conn in list(self.conns.values()):
                if conn.last_seen < limit and not conn.closing:
                    log.warning("node %s (%s): no heartbeat for %.0f s; closing the link", conn.node_id,
                                conn.node_name, time.time() - conn.last_seen)
                    conn.close_soon(p.CLOSE_HEARTBEAT, "no heartbeat for three intervals")
                    # Mark it offline now; the socket's own close may take a while on a dead peer.
                    await self.unregister(conn, "missed three heartbeats")

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_EVERY_S)
            try:
                await self._flush()
            except Exception:
                log.exception("writing last_seen failed")

    async def _flush(self) -> None:
        seen = [(nid, dt.datetime.fromtimestamp(c.last_seen, dt.UTC)) for nid, c in self.conns.items()]
        # In batches, each its own short transaction, so requests interleave with the writes.
        for i in range(0, len(seen), FLUSH_BATCH):
            async with self.db.begin() as db:
                await node_svc.touch(db, dict(seen[i:i + FLUSH_BATCH]))
            await asyncio.sleep(0)
