"""Administrators' overview of every GPU of every node: its holder (instance and user), usage
and memory from the node's latest metrics, and how long it has been idle (from the metrics
the hub keeps in memory, so at most about HISTORY_S back)."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from dmd.pages.figures import HISTORY_S, gpu_idle, gpu_latest
from dmd.pages.render import admin_required, current_identity, dm_of, render, translator
from dmd.usecases import gpus as uc

routes = web.RouteTableDef()


@routes.get("/gpus")
@admin_required
async def gpus_overview(request: web.Request) -> web.StreamResponse:
    _ = translator(request)
    dm = dm_of(request)
    now = time.time()
    nodes: list[dict[str, Any]] = []
    total = free = 0
    for node, gpus in await uc.every_gpu(dm, current_identity(request).user):
        samples = dm.hub.recent_metrics(node.id)
        online = dm.hub.is_online(node.id)
        rows = []
        for g in gpus:
            live = gpu_latest(samples, g.facts) if online else None
            state, idle = gpu_idle(_, samples, g.facts, now) if online else ("unknown", _("gpu.idle.unknown"))
            rows.append({"g": g, "live": live or {}, "idle_state": state, "idle": idle,
                         "memory_total_mb": (live or {}).get("memory_total_mb") or g.facts.get("memory_total_mb")})
            total += 1
            free += g.holder is None
        nodes.append({"node": node, "online": online, "rows": rows})
    return await render(request, "gpus.html", {"nav_active": "gpus", "nodes": nodes, "total": total, "free": free,
                                                "history_min": HISTORY_S // 60})
