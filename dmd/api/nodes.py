"""Compute nodes: create (with a join token), join, list, rename, cordon, rotate, share, delete."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from agent import protocol as p
from dmd.agents.hub import Hub
from dmd.api.registry import Api, Ctx
from dmd.api.schemas import (
    ContainerOut,
    JoinIn,
    JoinOut,
    JoinTokenOut,
    MetricsOut,
    NodeCreatedOut,
    NodeCreateIn,
    NodeOut,
    NodePatchIn,
    Page,
    PageQuery,
    PingOut,
    RotateOut,
    ShareIn,
    ShareOut,
    page_of,
)
from dmd.auth.flows import actor_of
from dmd.errors import Invalid
from dmd.models import Node, User
from dmd.net import server_url
from dmd.services import audit, node_ops
from dmd.services import nodes as svc

api = Api()


def join_command(request: web.Request, token: str) -> str:
    return node_ops.join_command(server_url(request), token)


def node_out(hub: Hub, node: Node, user: User) -> NodeOut:
    if node.owner_id == user.id:
        access = "owner"
    elif user.is_admin:
        access = "admin"
    else:
        access = "shared"
    status = node.status
    if hub.is_online(node.id):
        status = "online"
    elif status == "online":
        status = "offline"  # online in the database, but its link is not on this dmd
    return NodeOut(
        id=node.id, name=node.name, owner_id=node.owner_id, access=access, status=status,  # type: ignore[arg-type]
        cordoned=node.cordoned, local=node.local, last_seen=hub.last_seen(node.id) or node.last_seen,
        connected_at=node.connected_at, agent_version=node.agent_version, protocol_version=node.protocol_version,
        facts=node.facts, gpus=node.gpus, join_expires_at=node.join_expires_at, created_at=node.created_at,
        updated_at=node.updated_at,
    )


@api.get("/nodes", summary="Nodes you own, that are shared with you, or (admins) all", tag="nodes",
         query=PageQuery, response=Page[NodeOut])
async def list_nodes(ctx: Ctx) -> Any:
    q: PageQuery = ctx.query
    user = ctx.user_identity.user
    async with ctx.dm.db.read() as conn:
        rows = await svc.list_visible(conn, user, limit=q.limit + 1, after_id=q.cursor_id)
    return page_of([node_out(ctx.dm.hub, n, user) for n in rows], q)


@api.post("/nodes", summary="Create a node; the reply holds its one-time join command", tag="nodes",
          body=NodeCreateIn, response=NodeCreatedOut, status=201, errors=(403, 409, 422))
async def create_node(ctx: Ctx) -> Any:
    b: NodeCreateIn = ctx.body
    user = ctx.user_identity.user
    node, token = await node_ops.create(ctx.dm.db, actor_of(ctx.request, ctx.identity), user, b.name,
                                        ctx.dm.config.join_token_ttl_s)
    out = node_out(ctx.dm.hub, node, user)
    return NodeCreatedOut(**out.model_dump(), join_token=token, join_command=join_command(ctx.request, token))


@api.post("/nodes/join", summary="Agent: trade a join token for the node's credential", tag="nodes",
          auth="none", body=JoinIn, response=JoinOut, errors=(403, 410))
async def join_node(ctx: Ctx) -> Any:
    b: JoinIn = ctx.body
    async with ctx.dm.db.begin() as conn:
        node, credential = await svc.join(conn, b.token.strip())
        await audit.record(conn, actor_of(ctx.request, None), "node.join", "node", node.id,
                           hostname=(b.hostname or "")[:255])
    return JoinOut(node_id=node.id, name=node.name, credential=credential,
                   heartbeat_s=ctx.dm.config.agent_heartbeat_s)


@api.get("/nodes/{id}", summary="One node with its facts and GPUs", tag="nodes", response=NodeOut, errors=(404,))
async def get_node(ctx: Ctx) -> Any:
    user = ctx.user_identity.user
    async with ctx.dm.db.read() as conn:
        node = await svc.get_visible(conn, user, ctx.path_int("id"))
    return node_out(ctx.dm.hub, node, user)


@api.patch("/nodes/{id}", summary="Rename a node", tag="nodes", body=NodePatchIn, response=NodeOut,
           errors=(403, 404, 409))
async def rename_node(ctx: Ctx) -> Any:
    b: NodePatchIn = ctx.body
    user = ctx.user_identity.user
    node = await node_ops.rename(ctx.dm.db, actor_of(ctx.request, ctx.identity), user, ctx.path_int("id"), b.name)
    return node_out(ctx.dm.hub, node, user)


async def _set_cordon(ctx: Ctx, cordoned: bool) -> Any:
    user = ctx.user_identity.user
    node = await node_ops.set_cordon(ctx.dm.db, actor_of(ctx.request, ctx.identity), user, ctx.path_int("id"),
                                     cordoned)
    return node_out(ctx.dm.hub, node, user)


@api.post("/nodes/{id}/cordon", summary="Cordon: no new instances are placed on the node", tag="nodes",
          response=NodeOut, errors=(403, 404))
async def cordon(ctx: Ctx) -> Any:
    return await _set_cordon(ctx, True)


@api.post("/nodes/{id}/uncordon", summary="Uncordon: the node takes new instances again", tag="nodes",
          response=NodeOut, errors=(403, 404))
async def uncordon(ctx: Ctx) -> Any:
    return await _set_cordon(ctx, False)


@api.post("/nodes/{id}/join-token", summary="A new one-time join token (the old one stops working)",
          tag="nodes", response=JoinTokenOut, status=201, errors=(403, 404))
async def new_join_token(ctx: Ctx) -> Any:
    user = ctx.user_identity.user
    node, token = await node_ops.new_join_token(ctx.dm.db, actor_of(ctx.request, ctx.identity), user,
                                                ctx.path_int("id"), ctx.dm.config.join_token_ttl_s)
    assert node.join_expires_at is not None
    return JoinTokenOut(join_token=token, join_command=join_command(ctx.request, token),
                        join_expires_at=node.join_expires_at)


@api.post("/nodes/{id}/rotate-credential",
          summary="Replace the node's credential: handed to the agent when online, else re-join with a new token",
          tag="nodes", response=RotateOut, errors=(403, 404, 502, 504))
async def rotate_credential(ctx: Ctx) -> Any:
    rotated = await node_ops.rotate_credential(
        ctx.dm.db, ctx.dm.hub, actor_of(ctx.request, ctx.identity), ctx.user_identity.user, ctx.path_int("id"),
        ctx.dm.config.join_token_ttl_s,
    )
    if rotated.delivered:
        return RotateOut(delivered=True)
    assert rotated.join_token is not None
    return RotateOut(delivered=False, join_token=rotated.join_token,
                     join_command=join_command(ctx.request, rotated.join_token))


@api.delete("/nodes/{id}", summary="Delete a node: its agent is told, and its credential stops working",
            tag="nodes", status=204, errors=(403, 404))
async def delete_node(ctx: Ctx) -> Any:
    await node_ops.delete(ctx.dm.db, ctx.dm.hub, actor_of(ctx.request, ctx.identity), ctx.user_identity.user,
                          ctx.path_int("id"))
    return None


@api.get("/nodes/{id}/metrics", summary="Recent live metrics pushed by the agent (kept briefly, in memory)",
         tag="nodes", response=MetricsOut, errors=(404,))
async def node_metrics(ctx: Ctx) -> Any:
    async with ctx.dm.db.read() as conn:
        node = await svc.get_visible(conn, ctx.user_identity.user, ctx.path_int("id"))
    return MetricsOut(items=ctx.dm.hub.recent_metrics(node.id))


@api.post("/nodes/{id}/ping", summary="Round trip to the node's agent over its link", tag="nodes",
          response=PingOut, errors=(404, 409, 504))
async def ping_node(ctx: Ctx) -> Any:
    async with ctx.dm.db.read() as conn:
        node = await svc.get_visible(conn, ctx.user_identity.user, ctx.path_int("id"))
    started = time.monotonic()
    reply = await ctx.dm.hub.call(node.id, p.PING, timeout=10)
    return PingOut(rtt_ms=round((time.monotonic() - started) * 1000, 2), agent_time=float(reply.get("at", 0)))


@api.post("/nodes/{id}/facts/refresh", summary="Ask the agent to collect its facts again now", tag="nodes",
          response=NodeOut, errors=(403, 404, 409, 504))
async def refresh_facts(ctx: Ctx) -> Any:
    user = ctx.user_identity.user
    async with ctx.dm.db.read() as conn:
        node = await svc.get_manageable(conn, user, ctx.path_int("id"))
    facts = await ctx.dm.hub.call(node.id, p.FACTS_REFRESH, timeout=60)
    async with ctx.dm.db.begin() as conn:
        await svc.store_facts(conn, node.id, facts)
        node = await svc.get(conn, node.id)
    return node_out(ctx.dm.hub, node, user)


@api.get("/nodes/{id}/containers", summary="Every container on the node, with those DM did not create marked "
         "unmanaged (DM never touches them)", tag="nodes", response=list[ContainerOut], errors=(403, 404, 409, 504))
async def list_containers(ctx: Ctx) -> Any:
    async with ctx.dm.db.read() as conn:
        node = await svc.get_manageable(conn, ctx.user_identity.user, ctx.path_int("id"))
    reply = await ctx.dm.hub.call(node.id, p.CONTAINERS_LIST, timeout=30)
    return [ContainerOut(id=str(c.get("id", "")), name=str(c.get("name", "")), image=str(c.get("image", "")),
                         state=str(c.get("state", "")), managed=bool(c.get("managed")),
                         instance_id=c.get("instance_id") if isinstance(c.get("instance_id"), int) else None)
            for c in reply.get("containers") or [] if isinstance(c, dict)]


@api.get("/nodes/{id}/shares", summary="Users a node is shared with", tag="nodes", response=list[ShareOut],
         errors=(403, 404))
async def list_shares(ctx: Ctx) -> Any:
    async with ctx.dm.db.read() as conn:
        node = await svc.get_manageable(conn, ctx.user_identity.user, ctx.path_int("id"))
        return [ShareOut(**s) for s in await svc.shares(conn, node.id)]


@api.post("/nodes/{id}/shares", summary="Share a node with a user (they may then place instances on it)",
          tag="nodes", body=ShareIn, response=ShareOut, status=201, errors=(403, 404, 409, 422))
async def add_share(ctx: Ctx) -> Any:
    b: ShareIn = ctx.body
    if (b.username is None) == (b.user_id is None):
        raise Invalid("username: give either username or user_id", field="username")
    created = await node_ops.share(ctx.dm.db, actor_of(ctx.request, ctx.identity), ctx.user_identity.user,
                                   ctx.path_int("id"), username=b.username, user_id=b.user_id)
    return ShareOut(**created)


@api.delete("/nodes/{id}/shares/{user_id}", summary="Stop sharing a node with a user", tag="nodes", status=204,
            errors=(403, 404))
async def remove_share(ctx: Ctx) -> Any:
    await node_ops.unshare(ctx.dm.db, actor_of(ctx.request, ctx.identity), ctx.user_identity.user,
                           ctx.path_int("id"), ctx.path_int("user_id"))
    return None
