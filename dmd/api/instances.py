"""Instances: create (placed by DM or on a chosen node), list, start, stop, restart, delete, logs."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from agent import protocol as p
from dmd.api.registry import Api, Ctx
from dmd.auth.flows import actor_of
from dmd.capabilities import Unsupported
from dmd.errors import ApiError, Conflict
from dmd.models import Instance, InstanceDetail
from dmd.schemas import (
    CapacityOut,
    InstanceCreateIn,
    InstanceDefaultsIn,
    InstanceDefaultsOut,
    InstanceOut,
    InstanceQuery,
    LogsQuery,
    Page,
    SshPatchIn,
    page_of,
)
from dmd.usecases import instances as uc
from dmd.usecases import streams as streams_uc
from dmd.views import full_out, held_out

api = Api()


async def _full(ctx: Ctx, inst: Instance) -> InstanceOut:
    """The instance as it is now, with its SSH access and port maps (single-instance replies)."""
    return _out(ctx, await uc.detail(ctx.dm, inst.id))


def _out(ctx: Ctx, d: InstanceDetail) -> InstanceOut:
    return full_out(d, ctx.request.url.host, node_online=ctx.dm.hub.is_online(d.instance.node_id))


@api.post("/instances", summary="Create an instance; DM places it when node_id is omitted", tag="instances",
          body=InstanceCreateIn, response=InstanceOut, status=201, errors=(403, 409, 422))
async def create_instance(ctx: Ctx) -> Any:
    held = await uc.create(ctx.dm, actor_of(ctx.request, ctx.identity), ctx.user_identity.user, ctx.body)
    return await _full(ctx, held.instance)


@api.get("/instances", summary="Your instances (admins: all)", tag="instances", query=InstanceQuery,
         response=Page[InstanceOut])
async def list_instances(ctx: Ctx) -> Any:
    q: InstanceQuery = ctx.query
    rows = await uc.list_held(ctx.dm, ctx.user_identity.user, limit=q.limit + 1, after_id=q.cursor_id,
                              node_id=q.node_id)
    hub = ctx.dm.hub
    return page_of([held_out(h.instance, h.gpus, node_online=hub.is_online(h.instance.node_id)) for h in rows], q)


@api.get("/instances/{id}", summary="One instance", tag="instances", response=InstanceOut, errors=(404,))
async def get_instance(ctx: Ctx) -> Any:
    return _out(ctx, await uc.detail(ctx.dm, ctx.path_int("id"), ctx.user_identity.user))


@api.patch("/instances/{id}/ssh", summary="Turn SSH on or off, or choose the keys that go in (running "
           "instances follow at once)", tag="instances", body=SshPatchIn, response=InstanceOut, errors=(404, 409, 422))
async def patch_ssh(ctx: Ctx) -> Any:
    b: SshPatchIn = ctx.body
    given = b.model_fields_set
    inst = await uc.set_ssh(ctx.dm, actor_of(ctx.request, ctx.identity), ctx.user_identity.user,
                            ctx.path_int("id"), enabled=b.enabled, key_ids=b.ssh_key_ids,
                            set_keys="ssh_key_ids" in given)
    return await _full(ctx, inst)


async def _set_desired(ctx: Ctx, desired: str, action: str) -> Any:
    inst = await uc.set_desired(ctx.dm, actor_of(ctx.request, ctx.identity), ctx.user_identity.user,
                                ctx.path_int("id"), desired, action)
    return await _full(ctx, inst)


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
    inst = await uc.restart(ctx.dm, actor_of(ctx.request, ctx.identity), ctx.user_identity.user, ctx.path_int("id"))
    return await _full(ctx, inst)


@api.delete("/instances/{id}", summary="Delete: the container goes, its GPUs are freed (when the node is "
            "offline: once it returns)", tag="instances", response=InstanceOut, status=202, errors=(404,))
async def delete_instance(ctx: Ctx) -> Any:
    held = await uc.delete(ctx.dm, actor_of(ctx.request, ctx.identity), ctx.user_identity.user, ctx.path_int("id"))
    return held_out(held.instance, held.gpus, node_online=ctx.dm.hub.is_online(held.instance.node_id))


def _line(line: str) -> bytes:
    return (line if line.endswith("\n") else line + "\n").encode()


@api.get("/instances/{id}/logs", summary="The container's output (text/plain); follow=true streams it (at most "
         "your log follow limit at once: 429 too_many_follows)", tag="instances", query=LogsQuery,
         errors=(404, 409, 429, 504))
async def instance_logs(ctx: Ctx) -> Any:
    q: LogsQuery = ctx.query
    user, iid = ctx.user_identity.user, ctx.path_int("id")
    if not q.follow:
        got = await uc.logs(ctx.dm, user, iid, q.tail)
        return web.Response(text="".join(line if line.endswith("\n") else line + "\n" for line in got.lines),
                            content_type="text/plain")
    async with uc.following(ctx.dm, user):  # 429 beyond the user's log follow limit
        opening = p.StreamOpen("logs", iid, logs=p.LogsParams(tail=q.tail, follow=True))
        try:
            # The agent pushes the lines as they come, on a stream of the node's link.
            async with streams_uc.instance_stream(ctx.dm, actor_of(ctx.request, ctx.identity), user, iid, opening,
                                                  via="logs") as opened:
                return await _push(ctx, opened.stream)
        except Unsupported:
            pass  # an agent without streams: ask it for new lines every second
        except Conflict as e:
            if e.code != "not_running":
                raise  # a stopped instance: its last lines, then whatever follows once it runs
        return await _follow(ctx, await uc.logs(ctx.dm, user, iid, q.tail))


async def _push(ctx: Ctx, stream: p.Stream) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-cache"})
    await resp.prepare(ctx.request)
    try:
        while True:
            try:
                data = await asyncio.wait_for(stream.read(), 5.0)
            except TimeoutError:  # quiet: has the client gone? (aiohttp does not cancel us when it goes)
                transport = ctx.request.transport
                if transport is None or transport.is_closing():
                    break
                continue
            if not data:
                break
            await resp.write(data)
    except ConnectionResetError:
        pass  # the client stopped following
    return resp


async def _follow(ctx: Ctx, got: uc.Logs) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-cache"})
    await resp.prepare(ctx.request)
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
                got = await uc.logs_since(ctx.dm, got.instance, got.last_ts)
            except ApiError:
                break
            lines = got.lines
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
            gpus_total=c.free.gpus_total, default_cpus=c.default[0], default_memory_mb=c.default[1],
        )
        for c in await uc.capacity(ctx.dm, ctx.user_identity.user)
    ]


@api.route("PUT", "/nodes/{id}/instance-defaults", summary="The size of instances created on the node without one "
         "(administrators)", tag="instances", auth="admin", body=InstanceDefaultsIn, response=InstanceDefaultsOut,
         errors=(404, 422))
async def set_instance_defaults(ctx: Ctx) -> Any:
    b: InstanceDefaultsIn = ctx.body
    node = await uc.set_node_defaults(ctx.dm, actor_of(ctx.request, ctx.identity), ctx.path_int("id"),
                                      b.cpus, b.memory_mb)
    cpus, memory_mb = uc.default_size(node)
    return InstanceDefaultsOut(node_id=node.id, cpus=node.default_cpus, memory_mb=node.default_memory_mb,
                               effective_cpus=cpus, effective_memory_mb=memory_mb)
