"""GET /agent/ws: where agents connect. Authentication, handshake, then the message loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiohttp import WSMsgType, web

from agent import protocol as p
from dmd import __version__
from dmd.agents.hub import AgentConn
from dmd.core import DM
from dmd.models import Node
from dmd.net import client_ip
from dmd.queries import nodes as node_svc

log = logging.getLogger("dmd.agents")
HELLO_TIMEOUT_S = 10.0


async def _refuse(ws: web.WebSocketResponse, code: int, reason: str, remote: str, node: object = "?") -> None:
    log.warning("agent link from %s (node %s) refused: %s", remote, node, reason)
    await ws.close(code=code, message=reason.encode()[:120])


async def agent_ws(request: web.Request) -> web.StreamResponse:
    hub = request.app[DM].hub
    remote = client_ip(request)
    auth = request.headers.get("Authorization", "")
    scheme, _, credential = auth.partition(" ")
    # Accept the upgrade first so that every refusal reaches the agent as a close reason.
    ws = web.WebSocketResponse(max_msg_size=2 * p.MAX_MESSAGE_BYTES, autoping=True)
    await ws.prepare(request)
    node = await _node_of(request, credential.strip()) if scheme.lower() == "bearer" and credential else None
    if node is None:
        await _refuse(ws, p.CLOSE_AUTH, "unknown or revoked node credential", remote)
        return ws
    try:
        first = await ws.receive(timeout=HELLO_TIMEOUT_S)
    except TimeoutError:
        await _refuse(ws, p.CLOSE_PROTOCOL, f"no hello within {HELLO_TIMEOUT_S:g} s", remote, node.id)
        return ws
    if first.type != WSMsgType.TEXT:
        await _refuse(ws, p.CLOSE_PROTOCOL, "expected a hello text message", remote, node.id)
        return ws
    try:
        env = p.decode(first.data)
        if env.type != p.HELLO:
            raise p.ProtocolError(f"the first message must be hello, not {env.type}")
        hello = p.Hello.from_data(env.data)
    except p.ProtocolError as e:
        await _refuse(ws, e.close_code, str(e), remote, node.id)
        return ws
    if hello.node_id != node.id:
        await _refuse(ws, p.CLOSE_FORBIDDEN, f"this credential belongs to node {node.id}, not {hello.node_id}",
                      remote, node.id)
        return ws
    version = p.negotiate(hello.protocol_min, hello.protocol_max)
    if version is None:
        await _refuse(ws, p.CLOSE_PROTOCOL,
                      f"agent speaks protocol {hello.protocol_min}-{hello.protocol_max}, dmd speaks "
                      f"{p.MIN_PROTOCOL_VERSION}-{p.PROTOCOL_VERSION}", remote, node.id)
        return ws

    conn = AgentConn(hub, node.id, node.name, ws, remote)
    conn.writer = asyncio.get_running_loop().create_task(conn.write_loop())
    await hub.register(conn, hello, version)
    # This frame lives as long as the link: drop the handshake's objects (the parsed facts) so
    # thousands of idle links do not keep them alive and lengthen every full GC pass.
    del first, env, hello
    conn.send(p.message(p.WELCOME, {"protocol": version, "node_id": node.id, "heartbeat_s": hub.heartbeat_s,
                                    "server_version": __version__, "installation_id": hub.installation_id}))
    why = "the agent closed the link"
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                try:
                    _handle(conn, p.decode(msg.data))
                except p.ProtocolError as e:
                    log.warning("node %s (%s) from %s: %s; closing the link", node.id, node.name, remote, e)
                    why = f"protocol error: {e}"
                    conn.closing = True
                    await ws.close(code=e.close_code, message=str(e).encode()[:120])
                    break
            elif msg.type == WSMsgType.BINARY:
                why = "binary frame"
                log.warning("node %s from %s sent a binary frame; closing the link", node.id, remote)
                conn.closing = True
                await ws.close(code=p.CLOSE_PROTOCOL, message=b"binary frames are not part of the protocol")
                break
            elif msg.type == WSMsgType.ERROR:
                why = f"link error: {ws.exception()}"
                break
        else:
            if ws.close_code and ws.close_code != 1000:
                why = f"closed with code {ws.close_code}"
    finally:
        conn.closing = True
        with contextlib.suppress(asyncio.QueueFull):
            conn.queue.put_nowait(None)
        if conn.writer is not None:
            conn.writer.cancel()
        await hub.unregister(conn, why)
        if conn.close_task is not None:
            await asyncio.wait([conn.close_task], timeout=5)
    return ws


async def _node_of(request: web.Request, credential: str) -> Node | None:
    # A function of its own, so the finished database connection is not kept by agent_ws's
    # long-lived frame.
    async with request.app[DM].db.read() as db:
        return await node_svc.by_credential(db, credential)


def _handle(conn: AgentConn, env: p.Envelope) -> None:
    conn.last_seen = time.time()
    hub = conn.hub
    if env.type == p.REPLY:
        conn.resolve(env)
        return
    claimed = env.data.get("node_id")
    if claimed is not None and claimed != conn.node_id:
        raise p.ProtocolError(f"message about node {claimed} on the link of node {conn.node_id}", p.CLOSE_FORBIDDEN)
    if env.type == p.HEARTBEAT:
        return
    if env.type == p.METRICS:
        hub.record_metrics(conn.node_id, env.data)
    elif env.type == p.FACTS:
        hub.spawn(_store_facts(conn, env.data))
    elif env.type == p.EVENT:
        for listener in hub.event_listeners:
            listener(conn.node_id, env)
    elif env.type == p.HELLO:
        raise p.ProtocolError("hello was already received on this link")
    elif env.id is not None:
        conn.send(p.reply_error(env.id, "unknown_type", f"dmd does not handle {env.type!r} requests"))
    else:
        log.debug("node %s: ignoring unknown notice %r", conn.node_id, env.type)


async def _store_facts(conn: AgentConn, facts: dict[str, object]) -> None:
    async with conn.hub.db.begin() as db:
        await node_svc.store_facts(db, conn.node_id, dict(facts))
