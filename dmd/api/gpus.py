"""Every GPU of every node, with its holder, usage and idle time (admins only)."""

from __future__ import annotations

from typing import Any

from dmd.api.registry import Api, Ctx
from dmd.schemas import GpuOut
from dmd.usecases import gpus as uc

api = Api()


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _float(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


@api.get("/gpus", summary="Every GPU of every node: its holder, usage and memory from the newest metrics, and how "
         "long it has been idle", tag="nodes", auth="admin", response=list[GpuOut])
async def list_gpus(ctx: Ctx) -> Any:
    out = []
    for s in await uc.every_gpu(ctx.dm, ctx.user_identity.user):
        f, h = s.gpu.facts, s.gpu.holder
        out.append(GpuOut(
            node_id=s.node.id, node_name=s.node.name, node_online=s.online, key=s.gpu.key, index=_int(f.get("index")),
            name=_str(f.get("name")), uuid=_str(f.get("uuid")),
            instance_id=h.instance_id if h else None, instance_name=h.instance_name if h else None,
            username=h.username if h else None, utilization_pct=_float(s.live.get("utilization_pct")),
            memory_used_mb=_float(s.live.get("memory_used_mb")),
            memory_total_mb=_float(s.live.get("memory_total_mb") or f.get("memory_total_mb")),
            idle=s.idle.state, idle_s=s.idle.seconds))
    return out
