"""Instances: create (placed by DM or on a chosen node), list, start, stop, restart, delete, logs."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from agent import protocol as p
from dmd.agents import HUB
from dmd.api.registry import Api, Ctx
from dmd.api.schemas import (
    CapacityOut,
    InstanceCreateIn,
    InstanceOut,
    InstanceQuery,
    LogsQuery,
    Page,
    page_of,
)
from dmd.auth.flows import actor_of
from dmd.errors import Forbidden
from dmd.models import Instance
from dmd.reconciler import RECONCILER
from dmd.services import audit
from dmd.services import instances as svc
from dmd.state import DB

api = Api()


async def instance_out(conn: Any, inst: Instance) -> InstanceOut:
    keys = await svc.gpus_of(conn, inst)
    return InstanceOut(
        id=inst.id, name=inst.name, owner_id=inst.owner_id, node_id=inst.node_id, image=inst.image, cpus=inst.cpus,
        memory_mb=inst.memory_mb, gpus=keys, env=inst.env, command=inst.command, privileged=inst.privileged,
        host_network=inst.host_network, desired=inst.desired,  # type: ignore[arg-type]
        status=inst.status, status_message=inst.status_message,  # type: ignore[arg-type]
        container_id=inst.container_id, created_at=inst.created_at, updated_at=inst.updated_at,
    )


@api.post("/instances", summary="Create an instance; DM places it when node_id is omitted", tag="instances",
          body=InstanceCreateIn, response=InstanceOut, status=201, errors=(403, 409, 422))
async def create_instance(ctx: Ctx) -> Any:
    b: InstanceCreateIn = ctx.body
    user = ctx.user_identity.user
    if (b.privileged or b.host_network) and not user.is_admin:
        raise Forbidden("privileged and host-network instances are for administrators only", code="admin_only")
    req = svc.CreateRequest(
        name=b.name, image=b.image, node_id=b.node_id, cpus=b.cpus, memory_mb=b.memory_mb,
        gpu_count=b.gpus if isinstance(b.gpus, int) else 0,
        gpu_uuids=list(dict.fromkeys(b.gpus)) if isinstance(b.gpus, list) else None,
        env=dict(b.env), command=list(b.command) if b.command else None, privileged=b.privileged,
        host_network=b.host_network,
    )
    online = set(ctx.app[HUB].conns)
    async with ctx.app[DB].begin() as conn:
        inst = await svc.create(conn, user, req, online)
        await audit.record(conn, actor_of(ctx.request, ctx.identity), "instance.create", "instance", inst.id,
                           name=inst.name, node_id=inst.node_id, image=inst.image)
        out = await instance_out(conn, inst)
    ctx.app[RECONCILER].kick(inst.node_id)
    return out


@api.get("/instances", summary="Your instances (admins: all)", tag="instances", query=InstanceQuery,
         response=Page[InstanceOut])
async def list_instances(ctx: Ctx) -> Any:
    q: InstanceQuery = ctx.query
    async with ctx.app[DB].read() as conn:
        rows = await svc.list_visible(conn, ctx.user_identity.user, limit=q.limit + 1, after_id=q.cursor_id,
                                      node_id=q.node_id)
        items = [await instance_out(conn, i) for i in rows]
    return page_of(items, q)


@api.get("/instances/{id}", summary="One instance", tag="instances", response=InstanceOut, errors=(404,))
async def get_instance(ctx: Ctx) -> Any:
    async with ctx.app[DB].read() as conn:
        inst = await svc.get_visible(conn, ctx.user_identity.user, ctx.path_int("id"))
        return await instance_out(conn, inst)


async def _set_desired(ctx: Ctx, desired: str, action: str) -> Instance:
    async with ctx.app[DB].begin() as conn:
        inst = await svc.get_visible(conn, ctx.user_identity.user, ctx.path_int("id"))
        if inst.desired == "deleted":
            from dmd.errors import Conflict

            raise Conflict("this instance is being deleted", code="deleting")
        inst = await svc.set_desired(conn, inst.id, desired)
        await audit.record(conn, actor_of(ctx.request, ctx.identity), action, "instance", inst.id, name=inst.name)
    ctx.app[RECONCILER].kick(inst.node_id)
    return inst


@api.post("/instances/{id}/start", summary="Start (desired state: running)", tag="instances",
          response=InstanceOut, status=202, errors=(404, 409))
async def start_instance(ctx: Ctx) -> Any:
    inst = await _set_desired(ctx, "running", "instance.start")
    async with ctx.app[DB].read() as conn:
        return await instance_out(conn, inst)


@api.post("/instances/{id}/stop", summary="Stop (desired state: stopped)", tag="instances",
          response=InstanceOut, status=202, errors=(404, 409))
async def stop_instance(ctx: Ctx) -> Any:
    inst = await _set_desired(ctx, "stopped", "instance.stop")
    async with ctx.app[DB].read() as conn:
        return await instance_out(conn, inst)


@api.post("/instances/{id}/restart", summary="Restart now (the node must be online)", tag="instances",
          response=InstanceOut, errors=(404, 409, 502, 504))
async def restart_instance(ctx: Ctx) -> Any:
    inst = await _set_desired(ctx, "running", "instance.restart")
    await ctx.app[RECONCILER].restart(inst)
    async with ctx.app[DB].read() as conn:
        return await instance_out(conn, await svc.get(conn, inst.id))


@api.delete("/instances/{id}", summary="Delete: the container goes, its GPUs are freed (when the node is "
            "offline: once it returns)", tag="instances", response=InstanceOut, status=202, errors=(404,))
async def delete_instance(ctx: Ctx) -> Any:
    async with ctx.app[DB].begin() as conn:
        inst = await svc.get_visible(conn, ctx.user_identity.user, ctx.path_int("id"))
        inst = await svc.set_desired(conn, inst.id, "deleted")
        await audit.record(conn, actor_of(ctx.request, ctx.identity), "instance.delete", "instance", inst.id,
                           name=inst.name)
        out = await instance_out(conn, inst)
    ctx.app[RECONCILER].kick(inst.node_id)
    return out


@api.get("/instances/{id}/logs", summary="The container's output (text/plain); follow=true streams it",
         tag="instances", query=LogsQuery, errors=(404, 409, 504))
async def instance_logs(ctx: Ctx) -> Any:
    q: LogsQuery = ctx.query
    async with ctx.app[DB].read() as conn:
        inst = await svc.get_visible(conn, ctx.user_identity.user, ctx.path_int("id"))
    hub = ctx.app[HUB]
    reply = await hub.call(inst.node_id, p.INSTANCE_LOGS, {"instance_id": inst.id, "tail": q.tail, "since": None})
    lines = [str(x) for x in reply.get("lines") or []]
    if not q.follow:
        return web.Response(text="".join(line if line.endswith("\n") else line + "\n" for line in lines),
                            content_type="text/plain")
    resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-cache"})
    await resp.prepare(ctx.request)
    for line in lines:
        await resp.write((line if line.endswith("\n") else line + "\n").encode())
    since = reply.get("last_ts")
    # Follow by polling the agent: one short request a second, resumed from the last timestamp.
    while not ctx.request.transport or not ctx.request.transport.is_closing():
        await asyncio.sleep(1.0)
        try:
            reply = await hub.call(inst.node_id, p.INSTANCE_LOGS,
                                   {"instance_id": inst.id, "tail": None, "since": since}, timeout=15)
        except Exception:
            break
        for line in reply.get("lines") or []:
            await resp.write((line if line.endswith("\n") else line + "\n").encode())
        since = reply.get("last_ts") or since
    return resp


@api.get("/capacity", summary="Free CPU, memory and GPUs on each node you may use", tag="instances",
         response=list[CapacityOut])
async def capacity(ctx: Ctx) -> Any:
    hub = ctx.app[HUB]
    out = []
    async with ctx.app[DB].read() as conn:
        for node in await svc.usable_nodes(conn, ctx.user_identity.user):
            free = await svc.free_on(conn, node)
            out.append(CapacityOut(
                node_id=node.id, name=node.name, status="online" if hub.is_online(node.id) else node.status,
                cordoned=node.cordoned, cpus_free=free.cpus, memory_mb_free=free.memory_mb,
                gpus_free=[{"key": k, "uuid": g.get("uuid"), "index": g.get("index"), "name": g.get("name")}
                           for k, g in free.gpus],
                gpus_total=free.gpus_total,
            ))
    return out
