"""SSH public keys of users (parsed by dmd.sshkeys): read, count, insert.

A key belongs to one user; the same key may be registered by two users, but not twice by one
(409). Adding, renaming and deleting, with their audit entries, are dmd.usecases.ssh_keys.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from dmd.db.schema import ssh_keys
from dmd.db.types import utcnow
from dmd.errors import Conflict, NotFound
from dmd.models import SshKey
from dmd.sshkeys import ParsedKey

MAX_KEYS_PER_USER = 100


async def get(conn: AsyncConnection, user_id: int, key_id: int) -> SshKey:
    """One of the user's keys (another user's key is NotFound, as if it did not exist)."""
    row = (
        await conn.execute(sa.select(ssh_keys).where(ssh_keys.c.id == key_id, ssh_keys.c.user_id == user_id))
    ).first()
    if row is None:
        raise NotFound(f"no such SSH key: {key_id}")
    return SshKey.from_row(row)


async def list_for(conn: AsyncConnection, user_id: int, *, limit: int, after_id: int | None = None) -> list[SshKey]:
    q = sa.select(ssh_keys).where(ssh_keys.c.user_id == user_id).order_by(ssh_keys.c.id).limit(limit)
    if after_id is not None:
        q = q.where(ssh_keys.c.id > after_id)
    return [SshKey.from_row(r) for r in (await conn.execute(q)).all()]


async def count_for(conn: AsyncConnection, user_id: int) -> int:
    q = sa.select(sa.func.count()).select_from(ssh_keys).where(ssh_keys.c.user_id == user_id)
    return int((await conn.execute(q)).scalar_one())


async def find_by_fingerprint(conn: AsyncConnection, user_id: int, fingerprint: str) -> SshKey | None:
    q = sa.select(ssh_keys).where(ssh_keys.c.user_id == user_id, ssh_keys.c.fingerprint == fingerprint)
    row = (await conn.execute(q)).first()
    return None if row is None else SshKey.from_row(row)


async def insert(conn: AsyncConnection, user_id: int, name: str, key: ParsedKey) -> SshKey:
    if await count_for(conn, user_id) >= MAX_KEYS_PER_USER:
        raise Conflict(f"you have {MAX_KEYS_PER_USER} SSH keys, the most allowed; delete one first",
                       code="too_many_keys")
    now = utcnow()
    try:
        async with conn.begin_nested():
            res = await conn.execute(
                ssh_keys.insert().values(
                    user_id=user_id, name=name, key_type=key.key_type, public_key=key.line,
                    fingerprint=key.fingerprint, bits=key.bits, comment=key.comment,
                    created_at=now, updated_at=now,
                )
            )
    except IntegrityError:
        existing = await find_by_fingerprint(conn, user_id, key.fingerprint)
        name_part = f" as {existing.name!r}" if existing else ""
        raise Conflict(f"you have added this key already{name_part} ({key.fingerprint})", code="key_exists",
                       extra={"fingerprint": key.fingerprint}) from None
    pk = res.inserted_primary_key
    assert pk is not None
    return await get(conn, user_id, int(pk[0]))


async def rename(conn: AsyncConnection, key_id: int, name: str) -> None:
    await conn.execute(ssh_keys.update().where(ssh_keys.c.id == key_id).values(name=name, updated_at=utcnow()))


async def delete(conn: AsyncConnection, key_id: int) -> None:
    await conn.execute(ssh_keys.delete().where(ssh_keys.c.id == key_id))
