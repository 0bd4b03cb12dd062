"""The audit trail, for administrators (entries are recorded by each use case, in its own
transaction)."""

from __future__ import annotations

from typing import Any

from dmd.core import Dm
from dmd.queries import audit


async def list_entries(dm: Dm, *, limit: int, before_id: int | None = None, action: str | None = None,
                       actor_id: int | None = None, target_type: str | None = None,
                       target_id: str | None = None) -> list[dict[str, Any]]:
    """Newest first; `action` ending in "." matches every action of that family."""
    async with dm.db.read() as conn:
        return await audit.list_entries(conn, limit=limit, before_id=before_id, action=action, actor_id=actor_id,
                                        target_type=target_type, target_id=target_id)
