"""First run: a one-time setup token that lets one person create the first admin."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from dmd.auth.tokens import hash_secret, new_secret, same
from dmd.errors import Conflict, Forbidden
from dmd.queries import settings, users

KEY = "setup_token_hash"


async def issue_if_needed(conn: AsyncConnection) -> str | None:
    """A fresh setup token when no user exists yet (any older one stops working)."""
    if await users.count(conn) > 0:
        await settings.delete(conn, KEY)
        return None
    token = new_secret(nbytes=24)
    await settings.put(conn, KEY, hash_secret(token))
    return token


async def is_valid(conn: AsyncConnection, token: str) -> bool:
    stored = await settings.get(conn, KEY)
    return stored is not None and same(stored, hash_secret(token)) and await users.count(conn) == 0


async def consume(conn: AsyncConnection, token: str) -> None:
    """Use the token up inside the caller's transaction (which then creates the admin)."""
    stored = await settings.get(conn, KEY, for_update=True)
    if stored is None or await users.count(conn) > 0:
        raise Conflict("setup is already complete: log in instead", code="setup_done")
    if not same(stored, hash_secret(token)):
        raise Forbidden("this setup link is not valid; use the newest link from dmd's log", code="bad_setup_token")
    await settings.delete(conn, KEY)
