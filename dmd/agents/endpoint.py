"""GET /agent/ws: where agents connect. Authentication, the handshake, then the message loop."""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import WSMsgType, web

from agent import protocol as p
from dmd import __version__
from dmd.agents.handshake import Refused, held_back, receive_hello
from dmd.agents.hub import AgentConn, Hub
from dmd.agents.limits import LinkLimits, size_of
from dmd.core import DM
from dmd.models import Node
from dmd.net import client_ip
from dmd.queries import nodes as node_svc

log = logging.getLogger("dmd.agents")


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
    throttle = request.app[DM].throttle
    if (refused := held_back(throttle, remote)) is not None:
        await _refuse(ws, refused.code, refused.reason, remote)
        return ws
    node = await _node_of(request, credential.strip()) if scheme.lower() == "bearer" and credential else None
    if node is None:
        throttle.failure([f"ip:{remote}"])
        await _refuse(ws, p.CLOSE_AUTH, "unknown or revoked node credential", remote)
        return ws
    try:
        shake = await receive_hello(ws, node)
    except Refused as e:
        await _refuse(ws, e.code, e.reason, remote, node.id)
        return ws
    conn = AgentConn(hub, node.id, node.name, ws, remote)
    conn.writer = asyncio.get_running_loop().create_task(conn.write_loop())
    await hub.register(conn, shake)
    version = shake.version
    # This frame lives as long as the link: drop the handshake's objects (the parsed state) so
    # thousands of idle links do not keep them alive and lengthen every full GC pass.
    del shake
    conn.send(p.notice_envelope(p.Welcome(protocol=version, node_id=node.id, heartbeat_s=hub.heartbeat_s,
                                          server_version=__version__, installation_id=hub.installation_id)))
    await _serve(hub, conn, ws, node, remote)
    return ws


async def _serve(hub: Hub, conn: AgentConn, ws: web.WebSocketResponse, node: Node, remote: str) -> None:
    """The established link's messages until it ends; then the node goes offline."""
    why = "the agent closed the link"
    limits = LinkLimits()  # sizes per message type and rates: an agent is untrusted input
    try:
        async for msg in ws:
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                conn.last_seen = time.time()
                try:
                    if msg.type == WSMsgType.TEXT:
                        env = p.decode(msg.data)
                        limits.check(env, size_of(msg.data))
                        hub.incoming.dispatch(conn, env)
                        del env
                    else:
                        conn.mux.feed(msg.data)  # a stream frame: flow control bounds what it buffers
                except p.ProtocolError as e:
                    log.warning("node %s (%s) from %s: %s; closing the link", node.id, node.name, remote, e)
                    why = f"protocol error: {e}"
                    conn.closing = True
                    await ws.close(code=e.close_code, message=str(e).encode()[:120])
                    break
            elif msg.type == WSMsgType.ERROR:
                why = f"link error: {ws.exception()}"
                break
        else:
            if ws.close_code and ws.close_code != 1000:
                why = f"closed with code {ws.close_code}"
    finally:
        conn.closing = True
        if conn.writer is not None:
            conn.writer.cancel()
        await hub.unregister(conn, why)
        if conn.close_task is not None:
            await asyncio.wait([conn.close_task], timeout=5)


async def _node_of(request: web.Request, credential: str) -> Node | None:
    # A function of its own, so the finished database connection is not kept by agent_ws's
    # long-lived frame.
    async with request.app[DM].db.read() as db:
        return await node_svc.by_credential(db, credential)
