"""Migration 0006 on a database with data: every user gets a session key, tokens keep working,
nothing that refers to a user is lost (SQLite rebuilds the users table), and the schema then
matches dmd.db.schema."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from dmd.auth.tokens import hash_secret
from dmd.db import Database
from dmd.db.migrate import upgrade
from dmd.db.schema import metadata
from dmd.queries import tokens

_NOW = dt.datetime(2026, 1, 1)


async def test_upgrade_keeps_every_row_and_binds_existing_tokens(db_url):
    db = Database(db_url)
    try:
        await upgrade(db, "0005")
        async with db.begin() as conn:
            for uid, email in ((1, "a@example.org"), (2, "b@example.org")):
                await conn.execute(sa.text(
                    "INSERT INTO users (id, email, username, password_hash, role, disabled, auth_version,"
                    " created_at, updated_at) VALUES (:id, :e, :u, 'h', 'user', false, 1, :now, :now)"
                ), {"id": uid, "e": email, "u": email.split("@")[0], "now": _NOW})
            await conn.execute(sa.text(
                "INSERT INTO api_tokens (user_id, name, token_hash, prefix, created_at)"
                " VALUES (2, 't', :h, 'dm_x', :now)"), {"h": hash_secret("dm_" + "s" * 40), "now": _NOW})
            await conn.execute(sa.text(
                "INSERT INTO nodes (name, owner_id, status, cordoned, local, created_at, updated_at)"
                " VALUES ('n1', 2, 'pending', false, false, :now, :now)"), {"now": _NOW})
            await conn.execute(sa.text("INSERT INTO node_shares (node_id, user_id, created_at)"
                                       " SELECT id, 1, :now FROM nodes"), {"now": _NOW})
        await upgrade(db)
        async with db.read() as conn:
            keys = (await conn.execute(sa.text("SELECT session_key FROM users ORDER BY id"))).scalars().all()
            assert len(keys) == 2 and len(set(keys)) == 2 and all(len(k) == 32 for k in keys)
            assert (await conn.execute(sa.text("SELECT owner_id FROM nodes"))).scalar_one() == 2
            assert (await conn.execute(sa.text("SELECT user_id FROM node_shares"))).scalar_one() == 1
            found = await tokens.lookup(conn, hash_secret("dm_" + "s" * 40))
            assert found is not None and found[0].email == "b@example.org"

            def diff(sync: sa.Connection) -> list[object]:
                ctx = MigrationContext.configure(sync)
                return [d for d in compare_metadata(ctx, metadata)
                        if any(t in repr(d) for t in ("'users'", "'api_tokens'"))]

            assert await conn.run_sync(diff) == []
            if db.dialect == "sqlite":
                sql = (await conn.execute(sa.text(
                    "SELECT sql FROM sqlite_master WHERE name IN ('users', 'api_tokens')"))).scalars().all()
                assert all("AUTOINCREMENT" in s for s in sql), sql
                # Foreign keys are on again for the connections that follow.
                assert (await conn.execute(sa.text("PRAGMA foreign_keys"))).scalar_one() == 1
    finally:
        await db.close()
