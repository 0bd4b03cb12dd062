"""SSH public keys of users: add (parsed by dmd.sshkeys), list, rename, delete.

The functions that take a Database open their own transaction and record the audit entry,
shared by the JSON API and the pages (as in dmd.services.accounts); those that take a
connection are the plain queries. A key belongs to one user; the same key may be registered
by two users, but not twice by one (409).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from dmd.db import Database
from dmd.db.schema import ssh_keys
from dmd.db.types import utcnow
from dmd.errors import Conflict, Invalid, NotFound
from dmd.models import User
from dmd.services import audit
from dmd.services.audit import Actor
from dmd.sshkeys import ParsedKey, ParseError, label_of, parse_public_key

MAX_KEYS_PER_USER = 100
NAME_MAX = 100


@dataclass(frozen=True, slots=True)
class SshKey:
    id: int
    user_id: int
    name: str
    key_type: str
    public_key: str
    fingerprint: str
    bits: int
    comment: str
    created_at: dt.datetime
    updated_at: dt.datetime

    @property
    def label(self) -> str:
        """ED25519, ECDSA, RSA, ... as `ssh-keygen -l` names the type."""
        return label_of(self.key_type)

    @classmethod
    def from_row(cls, row: Any) -> SshKey:
        m = row._mapping
        return cls(**{k: m[k] for k in cls.__slots__})  # type: ignore[attr-defined]


def parse(text: str | bytes) -> ParsedKey:
    """The key in `text`, or Invalid (422) on field public_key with the parser's reason as code."""
    try:
        return parse_public_key(text)
    except ParseError as e:
        raise Invalid(f"public_key: {e.message}", field="public_key", code=e.code, extra=dict(e.params)) from None


def default_name(key: ParsedKey) -> str:
    return (key.comment or f"{key.label} key")[:NAME_MAX].strip() or f"{key.label} key"


# --- queries --------------------------------------------------------------------------

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


# --- changes (own transaction + audit) ----------------------------------------------------

async def add(db: Database, actor: Actor, user: User, name: str | None, text: str | bytes) -> tuple[SshKey, ParsedKey]:
    """Parse and store a key for `user`. Nothing is written when the key is refused."""
    key = parse(text)
    final_name = name.strip() if name and name.strip() else default_name(key)
    async with db.begin() as conn:
        row = await insert(conn, user.id, final_name, key)
        await audit.record(conn, actor, "ssh_key.create", "ssh_key", row.id, user_id=user.id, name=row.name,
                           type=row.key_type, bits=row.bits, fingerprint=row.fingerprint,
                           options_removed=list(key.options_removed))
    return row, key


async def rename(db: Database, actor: Actor, user: User, key_id: int, name: str) -> SshKey:
    async with db.begin() as conn:
        before = await get(conn, user.id, key_id)
        await conn.execute(
            ssh_keys.update().where(ssh_keys.c.id == before.id).values(name=name, updated_at=utcnow())
        )
        after = await get(conn, user.id, key_id)
        await audit.record(conn, actor, "ssh_key.rename", "ssh_key", after.id, user_id=user.id,
                           before=before.name, after=after.name, fingerprint=after.fingerprint)
    return after


async def delete(db: Database, actor: Actor, user: User, key_id: int) -> SshKey:
    async with db.begin() as conn:
        key = await get(conn, user.id, key_id)
        await conn.execute(ssh_keys.delete().where(ssh_keys.c.id == key.id))
        await audit.record(conn, actor, "ssh_key.delete", "ssh_key", key.id, user_id=user.id, name=key.name,
                           fingerprint=key.fingerprint)
    return key
