"""Administrators' overview of every GPU of every node: its holder (instance and user), usage
and memory from the node's latest metrics, and how long it has been idle (from the metrics
the hub keeps in memory, so at most about HISTORY_S back)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dmd.pages.figures import HISTORY_S, idle_text
from dmd.pages.render import admin_required, current_identity, dm_of, render, translator
from dmd.usecases import gpus as uc

routes = web.RouteTableDef()


@routes.get("/gpus")
@admin_required
async def gpus_overview(request: web.Request) -> web.StreamResponse:
    _ = translator(request)
    found = await uc.every_gpu(dm_of(request), current_identity(request).user)
    nodes: dict[int, dict[str, Any]] = {}
    for s in found:
        n = nodes.setdefault(s.node.id, {"node": s.node, "online": s.online, "rows": []})
        n["rows"].append({"g": s.gpu, "live": s.live, "idle_state": s.idle.state,
                          "idle": idle_text(_, s.idle.state, s.idle.seconds),
                          "memory_total_mb": s.live.get("memory_total_mb") or s.gpu.facts.get("memory_total_mb")})
    return await render(request, "gpus.html", {
        "nav_active": "gpus", "nodes": list(nodes.values()), "total": len(found),
        "free": sum(1 for s in found if s.gpu.holder is None), "history_min": HISTORY_S // 60})
