"""The audit trail (admins only)."""

from __future__ import annotations

from typing import Any

from dmd.api.registry import Api, Ctx
from dmd.schemas import AuditOut, AuditQuery, Page, page_of
from dmd.usecases import audit

api = Api()


@api.get("/audit", summary="Audit entries, newest first; filter by action ('user.' for a prefix), actor or target",
         tag="audit", auth="admin", query=AuditQuery, response=Page[AuditOut])
async def list_audit(ctx: Ctx) -> Any:
    q: AuditQuery = ctx.query
    rows = await audit.list_entries(
        ctx.dm, limit=q.limit + 1, before_id=q.cursor_id, action=q.action, actor_id=q.actor_id,
        target_type=q.target_type, target_id=q.target_id,
    )
    return page_of([AuditOut.model_validate(r) for r in rows], q)
