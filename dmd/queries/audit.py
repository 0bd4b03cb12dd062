"""The audit trail: who did what to which object, when, from where."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from dmd.db.schema import audit_log
from dmd.db.types import utcnow
from dmd.models import Actor


async def record(
    conn: AsyncConnection,
    actor: Actor,
    action: str,
    target_type: str | None = None,
    target_id: int | str | None = None,
    **detail: Any,
) -> None:
    await conn.execute(
        audit_log.insert().values(
            at=utcnow(),
            actor_id=actor.user.id if actor.user else None,
            actor=actor.name[:64],
            action=action,
            target_type=target_type,
            target_id=None if target_id is None else str(target_id)[:64],
            ip=actor.ip[:64] if actor.ip else None,
            detail=json.dumps(detail, default=str, ensure_ascii=False) if detail else None,
        )
    )


async def list_entries(
    conn: AsyncConnection,
    *,
    limit: int,
    before_id: int | None = None,
    action: str | None = None,
    actor_id: int | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
) -> list[dict[str, Any]]:
    q = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
    if before_id is not None:
        q = q.where(audit_log.c.id < before_id)
    if action:
        # "user." matches every user action; "user.create" only that one.
        q = q.where(
            audit_log.c.action.startswith(action, autoescape=True)
            if action.endswith(".")
            else audit_log.c.action == action
        )
    if actor_id is not None:
        q = q.where(audit_log.c.actor_id == actor_id)
    if target_type:
        q = q.where(audit_log.c.target_type == target_type)
    if target_id:
        q = q.where(audit_log.c.target_id == target_id)
    rows = (await conn.execute(q)).all()
    out = []
    for r in rows:
        d = dict(r._mapping)
        d["detail"] = json.loads(d["detail"]) if d["detail"] else {}
        out.append(d)
    return out
