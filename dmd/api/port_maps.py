"""Port maps: host ports of a node forwarded to an instance's ports, added and removed live."""

from __future__ import annotations

from typing import Any

from dmd.api.registry import Api, Ctx
from dmd.api.schemas import Page, PortMapIn, PortMapOut, PortMapQuery, page_of
from dmd.auth.flows import actor_of
from dmd.services import instance_access as access
from dmd.services import nodes as node_svc
from dmd.services import port_maps as svc
from dmd.services import port_ops as ops

api = Api()


def map_out(m: svc.PortMap, address: str) -> PortMapOut:
    return PortMapOut(
        id=m.id, instance_id=m.instance_id, instance_name=m.instance_name, node_id=m.node_id, node_name=m.node_name,
        protocol=m.protocol,  # type: ignore[arg-type]
        host_port=m.host_port, instance_port=m.instance_port,
        state=m.state,  # type: ignore[arg-type]
        message=m.message, address=f"{address}:{m.host_port}" if ":" not in address else f"[{address}]:{m.host_port}",
        created_at=m.created_at,
    )


async def _out(ctx: Ctx, maps: list[svc.PortMap]) -> list[PortMapOut]:
    host = ctx.request.url.host
    addresses: dict[int, str] = {}
    async with ctx.dm.db.read() as conn:
        for node_id in {m.node_id for m in maps}:
            addresses[node_id] = access.node_address(await node_svc.get(conn, node_id), host)
    return [map_out(m, addresses[m.node_id]) for m in maps]


@api.post("/instances/{id}/port-maps", summary="Map a host port of the instance's node to one of its ports; "
          "works on a running instance at once", tag="port-maps", body=PortMapIn, response=PortMapOut, status=201,
          errors=(404, 409, 422))
async def create_map(ctx: Ctx) -> Any:
    b: PortMapIn = ctx.body
    m = await ops.add(ctx.dm.db, ctx.dm.ports, actor_of(ctx.request, ctx.identity),
                      ctx.user_identity.user, ctx.path_int("id"), b.protocol, b.instance_port, b.host_port)
    return (await _out(ctx, [m]))[0]


@api.get("/port-maps", summary="Your port maps (administrators: all)", tag="port-maps", query=PortMapQuery,
         response=Page[PortMapOut])
async def list_maps(ctx: Ctx) -> Any:
    q: PortMapQuery = ctx.query
    async with ctx.dm.db.read() as conn:
        rows = await svc.list_visible(conn, ctx.user_identity.user, limit=q.limit + 1, after_id=q.cursor_id,
                                      instance_id=q.instance_id, node_id=q.node_id)
    return page_of(await _out(ctx, rows), q)


@api.get("/port-maps/{id}", summary="One port map", tag="port-maps", response=PortMapOut, errors=(404,))
async def get_map(ctx: Ctx) -> Any:
    async with ctx.dm.db.read() as conn:
        m = await svc.get_visible(conn, ctx.user_identity.user, ctx.path_int("id"))
    return (await _out(ctx, [m]))[0]


@api.delete("/port-maps/{id}", summary="Remove a port map: its host port stops taking connections at once and "
            "is free again", tag="port-maps", status=204, errors=(404,))
async def delete_map(ctx: Ctx) -> Any:
    await ops.remove(ctx.dm.db, ctx.dm.ports, actor_of(ctx.request, ctx.identity),
                     ctx.user_identity.user, ctx.path_int("id"))
    return None
