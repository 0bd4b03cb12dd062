"""Instances: create (placed by DM or on a chosen node), list, start, stop, restart, delete, logs."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from agent import protocol as p
from dmd.api.port_maps import map_out
from dmd.api.registry import Api, Ctx
from dmd.api.schemas import (
    CapacityOut,
    InstanceCreateIn,
    InstanceOut,
    InstanceQuery,
    LogsQuery,
    Page,
    PortMapOut,
    SshOut,
    SshPatchIn,
    page_of,
)
from dmd.auth.flows import actor_of
from dmd.errors import ApiError
from dmd.models import Instance
from dmd.services import access_ops
from dmd.services import instance_access as access
from dmd.services import instance_ops as ops
from dmd.services import instances as svc
from dmd.services import nodes as node_svc
from dmd.services import port_maps as port_svc

api = Api()


def held_out(inst: Instance, keys: list[str], ssh: SshOut | None = None,
             maps: list[PortMapOut] | None = None) -> InstanceOut:
    return InstanceOut(
        id=inst.id, name=inst.name, owner_id=inst.owner_id, node_id=inst.node_id, image=inst.image, cpus=inst.cpus,
        memory_mb=inst.memory_mb, gpus=keys, env=inst.env, command=inst.command, privileged=inst.privileged,
        host_network=inst.host_network, desired=inst.desired,  # type: ignore[arg-type]
        status=inst.status, status_message=inst.status_message,  # type: ignore[arg-type]
        container_id=inst.container_id, created_at=inst.created_at, updated_at=inst.updated_at,
        ssh=ssh, port_maps=maps,
    )


async def instance_out(conn: Any, inst: Instance) -> InstanceOut:
    return held_out(inst, await svc.gpus_of(conn, inst))


async def full_out(ctx: Ctx, inst: Instance) -> InstanceOut:
    """The instance as it is now, with its SSH access and port maps (single-instance replies)."""
    async with ctx.dm.db.read() as conn:
        return await full_out_on(ctx, conn, await svc.get(conn, inst.id))


async def full_out_on(ctx: Ctx, conn: Any, inst: Instance) -> InstanceOut:
    node = await node_svc.get(conn, inst.node_id)
    maps = await port_svc.of_instance(conn, inst.id)
    view = access.ssh_view(inst, node, await access.key_ids(conn, inst), maps, ctx.request.url.host)
    return held_out(inst, await svc.gpus_of(conn, inst), SshOut(**{
        k: getattr(view, k) for k in SshOut.model_fields}), [map_out(m, view.address) for m in maps])


def create_request(b: InstanceCreateIn) -> svc.CreateRequest:
    return svc.CreateRequest(
        name=b.name, image=b.image, node_id=b.node_id, cpus=b.cpus, memory_mb=b.memory_mb,
        gpu_count=b.gpus if isinstance(b.gpus, int) else 0,
        gpu_uuids=list(dict.fromkeys(b.gpus)) if isinstance(b.gpus, list) else None,
        env=dict(b.env), command=list(b.command) if b.command else None, privileged=b.privileged,
        host_network=b.host_network, ssh=b.ssh, ssh_key_ids=b.ssh_key_ids,
        port_maps=[(m.protocol, m.instance_port, m.host_port) for m in b.port_maps],
    )


@api.post("/instances", summary="Create an instance; DM places it when node_id is omitted", tag="instances",
          body=InstanceCreateIn, response=InstanceOut, status=201, errors=(403, 409, 422))
async def create_instance(ctx: Ctx) -> Any:
    held = await ops.create(ctx.dm.db, ctx.dm.hub, ctx.dm.reconciler, actor_of(ctx.request, ctx.identity),
                            ctx.user_identity.user, create_request(ctx.body))
    return await full_out(ctx, held.instance)


@api.get("/instances", summary="Your instances (admins: all)", tag="instances", query=InstanceQuery,
         response=Page[InstanceOut])
async def list_instances(ctx: Ctx) -> Any:
    q: InstanceQuery = ctx.query
    async with ctx.dm.db.read() as conn:
        rows = await svc.list_visible(conn, ctx.user_identity.user, limit=q.limit + 1, after_id=q.cursor_id,
                                      node_id=q.node_id)
        items = [await instance_out(conn, i) for i in rows]
    return page_of(items, q)


@api.get("/instances/{id}", summary="One instance", tag="instances", response=InstanceOut, errors=(404,))
async def get_instance(ctx: Ctx) -> Any:
    async with ctx.dm.db.read() as conn:
        inst = await svc.get_visible(conn, ctx.user_identity.user, ctx.path_int("id"))
        return await full_out_on(ctx, conn, inst)


@api.patch("/instances/{id}/ssh", summary="Turn SSH on or off, or choose the keys that go in (running "
           "instances follow at once)", tag="instances", body=SshPatchIn, response=InstanceOut, errors=(404, 409, 422))
async def patch_ssh(ctx: Ctx) -> Any:
    b: SshPatchIn = ctx.body
    given = b.model_fields_set
    inst = await access_ops.set_ssh(ctx.dm.db, ctx.dm.reconciler, actor_of(ctx.request, ctx.identity),
                             ctx.user_identity.user, ctx.path_int("id"), enabled=b.enabled,
                             key_ids=b.ssh_key_ids, set_keys="ssh_key_ids" in given)
    return await full_out(ctx, inst)


async def _set_desired(ctx: Ctx, desired: str, action: str) -> Any:
    inst = await ops.set_desired(ctx.dm.db, ctx.dm.reconciler, actor_of(ctx.request, ctx.identity),
                                 ctx.user_identity.user, ctx.path_int("id"), desired, action)
    return await full_out(ctx, inst)


@api.post("/instances/{id}/start", summary="Start (desired state: running)", tag="instances",
          response=InstanceOut, status=202, errors=(404, 409))
async def start_instance(ctx: Ctx) -> Any:
    return await _set_desired(ctx, "running", "instance.start")


@api.post("/instances/{id}/stop", summary="Stop (desired state: stopped)", tag="instances",
          response=InstanceOut, status=202, errors=(404, 409))
async def stop_instance(ctx: Ctx) -> Any:
    return await _set_desired(ctx, "stopped", "instance.stop")


@api.post("/instances/{id}/restart", summary="Restart now (the node must be online)", tag="instances",
          response=InstanceOut, errors=(404, 409, 502, 504))
async def restart_instance(ctx: Ctx) -> Any:
    inst = await ops.restart(ctx.dm.db, ctx.dm.reconciler, actor_of(ctx.request, ctx.identity),
                             ctx.user_identity.user, ctx.path_int("id"))
    return await full_out(ctx, inst)


@api.delete("/instances/{id}", summary="Delete: the container goes, its GPUs are freed (when the node is "
            "offline: once it returns)", tag="instances", response=InstanceOut, status=202, errors=(404,))
async def delete_instance(ctx: Ctx) -> Any:
    held = await ops.delete(ctx.dm.db, ctx.dm.reconciler, actor_of(ctx.request, ctx.identity),
                            ctx.user_identity.user, ctx.path_int("id"))
    return held_out(held.instance, held.gpus)


def _line(line: str) -> bytes:
    return (line if line.endswith("\n") else line + "\n").encode()


@api.get("/instances/{id}/logs", summary="The container's output (text/plain); follow=true streams it",
         tag="instances", query=LogsQuery, errors=(404, 409, 504))
async def instance_logs(ctx: Ctx) -> Any:
    q: LogsQuery = ctx.query
    hub = ctx.dm.hub
    got = await ops.logs(ctx.dm.db, hub, ctx.user_identity.user, ctx.path_int("id"), q.tail)
    inst = got.instance
    if not q.follow:
        return web.Response(text="".join(line if line.endswith("\n") else line + "\n" for line in got.lines),
                            content_type="text/plain")
    resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-cache"})
    await resp.prepare(ctx.request)
    since = got.last_ts
    lines = got.lines
    # Follow by polling the agent: one short request a second, resumed from the last timestamp,
    # until the client goes away or the node stops answering.
    try:
        while True:
            for line in lines:
                await resp.write(_line(line))
            transport = ctx.request.transport
            if transport is None or transport.is_closing():
                break
            await asyncio.sleep(1.0)
            try:
                reply = await hub.call(inst.node_id, p.INSTANCE_LOGS,
                                       {"instance_id": inst.id, "tail": None, "since": since}, timeout=15)
            except ApiError:
                break
            lines = [str(x) for x in reply.get("lines") or []]
            since = reply.get("last_ts") or since
    except ConnectionResetError:
        pass  # the client stopped following
    return resp


@api.get("/capacity", summary="Free CPU, memory and GPUs on each node you may use", tag="instances",
         response=list[CapacityOut])
async def capacity(ctx: Ctx) -> Any:
    return [
        CapacityOut(
            node_id=c.node.id, name=c.node.name, status=c.status, cordoned=c.node.cordoned, cpus_free=c.free.cpus,
            memory_mb_free=c.free.memory_mb,
            gpus_free=[{"key": k, "uuid": g.get("uuid"), "index": g.get("index"), "name": g.get("name")}
                       for k, g in c.free.gpus],
            gpus_total=c.free.gpus_total,
        )
        for c in await ops.capacity(ctx.dm.db, ctx.dm.hub, ctx.user_identity.user)
    ]
