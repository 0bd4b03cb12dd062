"""Small key/value settings kept in the database."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from dmd.db.schema import settings
from dmd.db.types import utcnow


async def get(conn: AsyncConnection, key: str, *, for_update: bool = False) -> str | None:
    q = sa.select(settings.c.value).where(settings.c.key == key)
    if for_update:
        q = q.with_for_update()
    v = (await conn.execute(q)).scalar_one_or_none()
    return None if v is None else str(v)


async def put(conn: AsyncConnection, key: str, value: str) -> None:
    # Delete-then-insert is an upsert that reads the same on all three dialects.
    await conn.execute(settings.delete().where(settings.c.key == key))
    await conn.execute(settings.insert().values(key=key, value=value, updated_at=utcnow()))


async def delete(conn: AsyncConnection, key: str) -> None:
    await conn.execute(settings.delete().where(settings.c.key == key))
