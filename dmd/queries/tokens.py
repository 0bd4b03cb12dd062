"""Personal API tokens: shown once, stored as SHA-256 hashes."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from dmd.auth.tokens import API_TOKEN_PREFIX, hash_secret, new_secret
from dmd.db.schema import api_tokens, users
from dmd.db.types import utcnow
from dmd.errors import NotFound
from dmd.models import ApiToken, User

MAX_TOKENS_PER_USER = 100


async def create(
    conn: AsyncConnection, user_id: int, name: str, expires_at: dt.datetime | None
) -> tuple[ApiToken, str]:
    secret = new_secret(API_TOKEN_PREFIX)
    key = (await conn.execute(sa.select(users.c.session_key).where(users.c.id == user_id))).scalar_one_or_none()
    if key is None:
        raise NotFound(f"no such user: {user_id}")
    res = await conn.execute(
        api_tokens.insert().values(
            user_id=user_id,
            user_key=key,
            name=name,
            token_hash=hash_secret(secret),
            prefix=secret[:10],
            created_at=utcnow(),
            expires_at=expires_at,
        )
    )
    pk = res.inserted_primary_key
    assert pk is not None
    return await get(conn, user_id, int(pk[0])), secret


async def count_for(conn: AsyncConnection, user_id: int) -> int:
    q = sa.select(sa.func.count()).select_from(api_tokens).where(api_tokens.c.user_id == user_id)
    return int((await conn.execute(q)).scalar_one())


async def get(conn: AsyncConnection, user_id: int, token_id: int) -> ApiToken:
    row = (
        await conn.execute(
            sa.select(api_tokens).where(api_tokens.c.id == token_id, api_tokens.c.user_id == user_id)
        )
    ).first()
    if row is None:
        raise NotFound(f"no such token: {token_id}")
    return ApiToken.from_row(row)


async def list_for(
    conn: AsyncConnection, user_id: int, *, limit: int, after_id: int | None = None
) -> list[ApiToken]:
    q = sa.select(api_tokens).where(api_tokens.c.user_id == user_id).order_by(api_tokens.c.id).limit(limit)
    if after_id is not None:
        q = q.where(api_tokens.c.id > after_id)
    return [ApiToken.from_row(r) for r in (await conn.execute(q)).all()]


async def revoke(conn: AsyncConnection, user_id: int, token_id: int) -> ApiToken:
    tok = await get(conn, user_id, token_id)
    await conn.execute(api_tokens.delete().where(api_tokens.c.id == token_id))
    return tok


async def lookup(conn: AsyncConnection, token_hash: str) -> tuple[User, ApiToken] | None:
    """The enabled user owning an unexpired token with this hash."""
    q = (
        sa.select(api_tokens, users)
        .join(users, users.c.id == api_tokens.c.user_id)
        .where(api_tokens.c.token_hash == token_hash)
        # Bound to the owner's never-reused key, not only to an id.
        .where(api_tokens.c.user_key == users.c.session_key)
    )
    row = (await conn.execute(q)).first()
    if row is None:
        return None
    tok = _token_from_joined(row)
    user = _user_from_joined(row)
    if user.disabled or (tok.expires_at is not None and tok.expires_at <= utcnow()):
        return None
    return user, tok


def _token_from_joined(row: sa.Row) -> ApiToken:  # type: ignore[type-arg]
    m = row._mapping
    return ApiToken(
        id=m[api_tokens.c.id], user_id=m[api_tokens.c.user_id], name=m[api_tokens.c.name],
        prefix=m[api_tokens.c.prefix], created_at=m[api_tokens.c.created_at],
        expires_at=m[api_tokens.c.expires_at], last_used_at=m[api_tokens.c.last_used_at],
    )


def _user_from_joined(row: sa.Row) -> User:  # type: ignore[type-arg]
    m = row._mapping
    return User(**{k: m[users.c[k]] for k in User.__slots__})  # type: ignore[attr-defined]


async def revoke_all(conn: AsyncConnection, user_id: int) -> int:
    """Delete every token of the user; how many there were."""
    res = await conn.execute(api_tokens.delete().where(api_tokens.c.user_id == user_id))
    return int(res.rowcount or 0)


async def mark_used(conn: AsyncConnection, token_ids: list[int], when: dt.datetime) -> None:
    if token_ids:
        await conn.execute(
            api_tokens.update().where(api_tokens.c.id.in_(token_ids)).values(last_used_at=when)
        )
