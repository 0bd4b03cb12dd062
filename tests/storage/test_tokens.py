"""API tokens at the storage level, on the three databases: each user's own, revoked one at a
time, pages, and the lookup that turns a secret into a user."""

from __future__ import annotations

import datetime as dt

import pytest

from dmd.auth.tokens import hash_secret
from dmd.errors import NotFound
from dmd.queries import tokens, users


async def test_each_user_lists_and_revokes_their_own(db):
    async with db.begin() as conn:
        alice = await users.create(conn, email="alice@example.org", password_hash="h")
        bob = await users.create(conn, email="bob@example.org", password_hash="h")
        a = [(await tokens.create(conn, alice.id, f"a{i}", None))[0] for i in range(3)]
        b, b_secret = await tokens.create(conn, bob.id, "b", None)
    async with db.begin() as conn:
        assert [t.name for t in await tokens.list_for(conn, alice.id, limit=10)] == ["a0", "a1", "a2"]
        assert [t.name for t in await tokens.list_for(conn, alice.id, limit=2)] == ["a0", "a1"]
        assert [t.name for t in await tokens.list_for(conn, alice.id, limit=10, after_id=a[0].id)] == ["a1", "a2"]
        assert [t.name for t in await tokens.list_for(conn, bob.id, limit=10)] == ["b"]
        with pytest.raises(NotFound):
            await tokens.revoke(conn, alice.id, b.id)  # not hers
        assert (await tokens.revoke(conn, alice.id, a[1].id)).name == "a1"
    async with db.read() as conn:
        assert [t.name for t in await tokens.list_for(conn, alice.id, limit=10)] == ["a0", "a2"]
        assert [t.name for t in await tokens.list_for(conn, bob.id, limit=10)] == ["b"]
        found = await tokens.lookup(conn, hash_secret(b_secret))
        assert found is not None and (found[0].id, found[1].id) == (bob.id, b.id)
        assert await tokens.lookup(conn, hash_secret("dm_" + "x" * 40)) is None


async def test_lookup_refuses_disabled_users_and_expired_tokens(db):
    now = dt.datetime.now(dt.UTC)
    async with db.begin() as conn:
        u = await users.create(conn, email="u@example.org", password_hash="h")
        _, soon = await tokens.create(conn, u.id, "soon", now + dt.timedelta(minutes=1))
        _, gone = await tokens.create(conn, u.id, "gone", now - dt.timedelta(seconds=1))
    async with db.begin() as conn:
        assert await tokens.lookup(conn, hash_secret(soon)) is not None
        assert await tokens.lookup(conn, hash_secret(gone)) is None
        await users.update(conn, u.id, {"disabled": True})
        assert await tokens.lookup(conn, hash_secret(soon)) is None
