"""Compute nodes: create (with a join token), join, list, rename, cordon, rotate, share, delete."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dmd.api.registry import Api, Ctx
from dmd.auth.flows import actor_of
from dmd.errors import Invalid
from dmd.net import server_url
from dmd.schemas import (
    ContainerOut,
    JoinIn,
    JoinOut,
    JoinTokenOut,
    MetricsOut,
    NodeCreatedOut,
    NodeCreateIn,
    NodeOut,
    NodePatchIn,
    NodePublicIn,
    Page,
    PageQuery,
    PingOut,
    RotateOut,
    SharedWithMeOut,
    ShareIn,
    ShareOut,
    page_of,
)
from dmd.usecases import nodes as uc
from dmd.views import node_out

api = Api()


def join_command(request: web.Request, token: str) -> str:
    return uc.join_command(server_url(request), token)


@api.get("/nodes", summary="Nodes you own, that are shared with you, or (admins) all", tag="nodes",
         query=PageQuery, response=Page[NodeOut])
async def list_nodes(ctx: Ctx) -> Any:
    q: PageQuery = ctx.query
    user = ctx.user_identity.user
    rows = await uc.list_visible(ctx.dm, user, limit=q.limit + 1, after_id=q.cursor_id)
    return page_of([node_out(ctx.dm.hub, n, user) for n in rows], q)


@api.post("/nodes", summary="Create a node; the reply holds its one-time join command", tag="nodes",
          body=NodeCreateIn, response=NodeCreatedOut, status=201, errors=(403, 409, 422))
async def create_node(ctx: Ctx) -> Any:
    b: NodeCreateIn = ctx.body
    user = ctx.user_identity.user
    node, token = await uc.create(ctx.dm, actor_of(ctx.request, ctx.identity), user, b.name)
    out = node_out(ctx.dm.hub, node, user)
    return NodeCreatedOut(**out.model_dump(), join_token=token, join_command=join_command(ctx.request, token))


@api.post("/nodes/join", summary="Agent: trade a join token for the node's credential", tag="nodes",
          auth="none", body=JoinIn, response=JoinOut, errors=(403, 410))
async def join_node(ctx: Ctx) -> Any:
    b: JoinIn = ctx.body
    node, credential = await uc.join(ctx.dm, actor_of(ctx.request, None), b.token.strip(), b.hostname)
    return JoinOut(node_id=node.id, name=node.name, credential=credential,
                   heartbeat_s=ctx.dm.config.agent_heartbeat_s)


@api.get("/nodes/{id}", summary="One node with its facts and GPUs", tag="nodes", response=NodeOut, errors=(404,))
async def get_node(ctx: Ctx) -> Any:
    user = ctx.user_identity.user
    node = await uc.get_visible(ctx.dm, user, ctx.path_int("id"))
    return node_out(ctx.dm.hub, node, user)


@api.patch("/nodes/{id}", summary="Rename a node", tag="nodes", body=NodePatchIn, response=NodeOut,
           errors=(403, 404, 409))
async def rename_node(ctx: Ctx) -> Any:
    b: NodePatchIn = ctx.body
    user = ctx.user_identity.user
    node = await uc.rename(ctx.dm, actor_of(ctx.request, ctx.identity), user, ctx.path_int("id"), b.name)
    return node_out(ctx.dm.hub, node, user)


async def _set_cordon(ctx: Ctx, cordoned: bool) -> Any:
    user = ctx.user_identity.user
    node = await uc.set_cordon(ctx.dm, actor_of(ctx.request, ctx.identity), user, ctx.path_int("id"), cordoned)
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
    node, token = await uc.new_join_token(ctx.dm, actor_of(ctx.request, ctx.identity), user, ctx.path_int("id"))
    assert node.join_expires_at is not None
    return JoinTokenOut(join_token=token, join_command=join_command(ctx.request, token),
                        join_expires_at=node.join_expires_at)


@api.post("/nodes/{id}/rotate-credential",
          summary="Replace the node's credential: handed to the agent when online, else re-join with a new token",
          tag="nodes", response=RotateOut, errors=(403, 404, 502, 504))
async def rotate_credential(ctx: Ctx) -> Any:
    rotated = await uc.rotate_credential(ctx.dm, actor_of(ctx.request, ctx.identity), ctx.user_identity.user,
                                         ctx.path_int("id"))
    if rotated.delivered:
        return RotateOut(delivered=True)
    assert rotated.join_token is not None
    return RotateOut(delivered=False, join_token=rotated.join_token,
                     join_command=join_command(ctx.request, rotated.join_token))


@api.delete("/nodes/{id}", summary="Delete a node: its agent is told, and its credential stops working",
            tag="nodes", status=204, errors=(403, 404))
async def delete_node(ctx: Ctx) -> Any:
    await uc.delete(ctx.dm, actor_of(ctx.request, ctx.identity), ctx.user_identity.user, ctx.path_int("id"))
    return None


@api.get("/nodes/{id}/metrics", summary="Recent live metrics pushed by the agent (kept briefly, in memory)",
         tag="nodes", response=MetricsOut, errors=(404,))
async def node_metrics(ctx: Ctx) -> Any:
    return MetricsOut(items=await uc.metrics(ctx.dm, ctx.user_identity.user, ctx.path_int("id")))


@api.post("/nodes/{id}/ping", summary="Round trip to the node's agent over its link", tag="nodes",
          response=PingOut, errors=(404, 409, 504))
async def ping_node(ctx: Ctx) -> Any:
    rtt_ms, agent_time = await uc.ping(ctx.dm, ctx.user_identity.user, ctx.path_int("id"))
    return PingOut(rtt_ms=rtt_ms, agent_time=agent_time)


@api.post("/nodes/{id}/facts/refresh", summary="Ask the agent to collect its facts again now", tag="nodes",
          response=NodeOut, errors=(403, 404, 409, 504))
async def refresh_facts(ctx: Ctx) -> Any:
    user = ctx.user_identity.user
    node = await uc.refresh_facts(ctx.dm, user, ctx.path_int("id"))
    return node_out(ctx.dm.hub, node, user)


@api.get("/nodes/{id}/containers", summary="Every container on the node, with those DM did not create marked "
         "unmanaged (DM never touches them)", tag="nodes", response=list[ContainerOut], errors=(403, 404, 409, 504))
async def list_containers(ctx: Ctx) -> Any:
    return [ContainerOut(id=c.id, name=c.name, image=c.image, state=c.state, managed=c.managed,
                         instance_id=c.instance_id)
            for c in await uc.containers(ctx.dm, ctx.user_identity.user, ctx.path_int("id"))]


@api.get("/nodes/{id}/shares", summary="Users a node is shared with", tag="nodes", response=list[ShareOut],
         errors=(403, 404))
async def list_shares(ctx: Ctx) -> Any:
    return [ShareOut(**s) for s in await uc.shares(ctx.dm, ctx.user_identity.user, ctx.path_int("id"))]


@api.post("/nodes/{id}/shares", summary="Offer a node to a user by exact username (administrators may give "
          "user_id); pending until they accept it", tag="nodes", body=ShareIn, response=ShareOut, status=201,
          errors=(403, 404, 409, 422))
async def add_share(ctx: Ctx) -> Any:
    b: ShareIn = ctx.body
    if (b.username is None) == (b.user_id is None):
        raise Invalid("username: give either username or user_id", field="username")
    created = await uc.share(ctx.dm, actor_of(ctx.request, ctx.identity), ctx.user_identity.user,
                             ctx.path_int("id"), username=b.username, user_id=b.user_id)
    return ShareOut(**created)


@api.delete("/nodes/{id}/shares/{user_id}", summary="Stop sharing a node with a user", tag="nodes", status=204,
            errors=(403, 404))
async def remove_share(ctx: Ctx) -> Any:
    await uc.unshare(ctx.dm, actor_of(ctx.request, ctx.identity), ctx.user_identity.user,
                     ctx.path_int("id"), ctx.path_int("user_id"))
    return None


@api.post("/nodes/{id}/public", summary="Administrators: provide the node for everyone (every user may place on "
          "it, and automatic placement may choose it), or stop", tag="nodes", auth="admin", body=NodePublicIn,
          response=NodeOut, errors=(404, 409))
async def set_public(ctx: Ctx) -> Any:
    b: NodePublicIn = ctx.body
    user = ctx.user_identity.user
    node = await uc.set_public(ctx.dm, actor_of(ctx.request, ctx.identity), user, ctx.path_int("id"), b.public)
    return node_out(ctx.dm.hub, node, user)


# --- shares offered to the caller ------------------------------------------------------------

@api.get("/shares", summary="Nodes shared with you: pending (accept or decline) and accepted (leave at any time)",
         tag="nodes", response=list[SharedWithMeOut])
async def shared_with_me(ctx: Ctx) -> Any:
    return [SharedWithMeOut(**s) for s in await uc.shared_with(ctx.dm, ctx.user_identity.user)]


@api.post("/shares/{id}/accept", summary="Accept the node {id} shared with you: you may then place instances "
          "on it, and automatic placement may choose it", tag="nodes", response=SharedWithMeOut, errors=(404,))
async def accept_share(ctx: Ctx) -> Any:
    return SharedWithMeOut(**await uc.accept_share(ctx.dm, actor_of(ctx.request, ctx.identity),
                                                   ctx.user_identity.user, ctx.path_int("id")))


@api.delete("/shares/{id}", summary="Decline the pending share of node {id}, or leave it once accepted "
            "(your instances there stay; no new one goes there)", tag="nodes", status=204, errors=(404,))
async def leave_share(ctx: Ctx) -> Any:
    await uc.leave_share(ctx.dm, actor_of(ctx.request, ctx.identity), ctx.user_identity.user,
                         ctx.path_int("id"))
    return None
