"""Port maps: host ports of a node forwarded to an instance's ports, added and removed live."""

from __future__ import annotations

from typing import Any

from dmd.api.registry import Api, Ctx
from dmd.auth.flows import actor_of
from dmd.models import PortMap
from dmd.schemas import Page, PortMapIn, PortMapOut, PortMapQuery, page_of
from dmd.usecases import nodes as node_uc
from dmd.usecases import port_maps as uc
from dmd.views import map_out, node_address

api = Api()


async def _out(ctx: Ctx, maps: list[PortMap]) -> list[PortMapOut]:
    host = ctx.request.url.host
    nodes = await node_uc.by_ids(ctx.dm, {m.node_id for m in maps})
    addresses = {node_id: node_address(node, host) for node_id, node in nodes.items()}
    return [map_out(m, addresses[m.node_id]) for m in maps]


@api.post("/instances/{id}/port-maps", summary="Map a host port of the instance's node to one of its ports; "
          "works on a running instance at once", tag="port-maps", body=PortMapIn, response=PortMapOut, status=201,
          errors=(404, 409, 422))
async def create_map(ctx: Ctx) -> Any:
    b: PortMapIn = ctx.body
    m, node = await uc.add(ctx.dm, actor_of(ctx.request, ctx.identity), ctx.user_identity.user, ctx.path_int("id"),
                           b.protocol, b.instance_port, b.host_port)
    return map_out(m, node_address(node, ctx.request.url.host))


@api.get("/port-maps", summary="Your port maps (administrators: all)", tag="port-maps", query=PortMapQuery,
         response=Page[PortMapOut])
async def list_maps(ctx: Ctx) -> Any:
    q: PortMapQuery = ctx.query
    rows = await uc.list_visible(ctx.dm, ctx.user_identity.user, limit=q.limit + 1, after_id=q.cursor_id,
                                 instance_id=q.instance_id, node_id=q.node_id)
    return page_of(await _out(ctx, rows), q)


@api.get("/port-maps/{id}", summary="One port map", tag="port-maps", response=PortMapOut, errors=(404,))
async def get_map(ctx: Ctx) -> Any:
    m = await uc.get_visible(ctx.dm, ctx.user_identity.user, ctx.path_int("id"))
    return (await _out(ctx, [m]))[0]


@api.delete("/port-maps/{id}", summary="Remove a port map: its host port stops taking connections at once and "
            "is free again", tag="port-maps", status=204, errors=(404,))
async def delete_map(ctx: Ctx) -> Any:
    await uc.remove(ctx.dm, actor_of(ctx.request, ctx.identity), ctx.user_identity.user, ctx.path_int("id"))
    return None
