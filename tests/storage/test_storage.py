"""The same storage tests on SQLite, PostgreSQL and MariaDB (real servers)."""

import asyncio
import datetime as dt

import pytest
import sqlalchemy as sa

from dmd.auth.tokens import hash_secret
from dmd.db.migrate import current_revision, head_revision, upgrade
from dmd.db.schema import users as users_t
from dmd.errors import Conflict, Forbidden
from dmd.models import Actor
from dmd.queries import audit, settings, setup, tokens, users


async def test_migrations_are_idempotent(db):
    assert await current_revision(db) == head_revision()
    before, after = await upgrade(db)
    assert before == after == head_revision()


async def test_user_roundtrip_and_uniqueness(db):
    async with db.begin() as conn:
        u = await users.create(conn, email="Ünïcode.User@Example.org", password_hash="h")
    assert u.email == "ünïcode.user@example.org"
    assert u.created_at.tzinfo == dt.UTC
    async with db.begin() as conn:
        with pytest.raises(Conflict):
            await users.create(conn, email="ünïcode.user@example.org", password_hash="h")
        # The failed insert did not poison the transaction.
        other = await users.create(conn, email="other@example.org", password_hash="h", username="x-1")
    async with db.read() as conn:
        assert (await users.get(conn, other.id)).username == "x-1"
        assert await users.count(conn) == 2


async def test_datetimes_keep_microseconds_and_utc(db):
    when = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.timezone(dt.timedelta(hours=9)))
    async with db.begin() as conn:
        u = await users.create(conn, email="t@example.org", password_hash="h")
        tok, _ = await tokens.create(conn, u.id, "t", when)
    assert tok.expires_at == when and tok.expires_at.tzinfo == dt.UTC


async def test_transaction_rolls_back_everything(db):
    with pytest.raises(RuntimeError):
        async with db.begin() as conn:
            u = await users.create(conn, email="r@example.org", password_hash="h")
            await audit.record(conn, Actor(u), "user.create", "user", u.id)
            raise RuntimeError("half-way")
    async with db.read() as conn:
        assert await users.count(conn) == 0
        assert await audit.list_entries(conn, limit=10) == []


async def test_parallel_creates_of_one_email_yield_one_user(db):
    async def attempt(i: int) -> str:
        try:
            async with db.begin() as conn:
                await users.create(conn, email="race@example.org", password_hash="h", username=f"race{i}")
            return "ok"
        except Conflict:
            return "conflict"

    results = await asyncio.gather(*(attempt(i) for i in range(8)))
    assert results.count("ok") == 1 and results.count("conflict") == 7


async def test_token_lookup_respects_expiry_and_disabled(db):
    async with db.begin() as conn:
        u = await users.create(conn, email="t@example.org", password_hash="h")
        live, secret = await tokens.create(conn, u.id, "live", None)
        _, old = await tokens.create(conn, u.id, "old", dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
    async with db.read() as conn:
        found = await tokens.lookup(conn, hash_secret(secret))
        assert found is not None and found[1].id == live.id and found[0].id == u.id
        assert await tokens.lookup(conn, hash_secret(old)) is None
        assert await tokens.lookup(conn, hash_secret("dm_unknown")) is None
    async with db.begin() as conn:
        await users.update(conn, u.id, {"disabled": True})
    async with db.read() as conn:
        assert await tokens.lookup(conn, hash_secret(secret)) is None


async def test_deleting_a_user_deletes_their_tokens(db):
    async with db.begin() as conn:
        a = await users.create(conn, email="admin@example.org", password_hash="h", role="admin")
        u = await users.create(conn, email="t@example.org", password_hash="h")
        await tokens.create(conn, u.id, "x", None)
    async with db.begin() as conn:
        await users.delete(conn, u.id)
    async with db.read() as conn:
        assert await tokens.count_for(conn, u.id) == 0
        assert (await users.get(conn, a.id)).is_admin


async def test_last_admin_rule(db):
    async with db.begin() as conn:
        a = await users.create(conn, email="a@example.org", password_hash="h", role="admin")
    async with db.begin() as conn:
        with pytest.raises(Conflict):
            await users.update(conn, a.id, {"role": "user"})
    async with db.begin() as conn:
        b = await users.create(conn, email="b@example.org", password_hash="h", role="admin")
        _, after = await users.update(conn, a.id, {"disabled": True})
        assert after.disabled and after.auth_version == a.auth_version + 1
    async with db.begin() as conn:
        with pytest.raises(Conflict):
            await users.delete(conn, b.id)


async def test_setup_token_is_single_use(db):
    async with db.begin() as conn:
        token = await setup.issue_if_needed(conn)
    assert token
    async with db.read() as conn:
        assert await setup.is_valid(conn, token)
        assert not await setup.is_valid(conn, token + "x")
    async with db.begin() as conn:
        with pytest.raises(Forbidden):
            await setup.consume(conn, "wrong")
    async with db.begin() as conn:
        await setup.consume(conn, token)
        await users.create(conn, email="first@example.org", password_hash="h", role="admin")
    async with db.begin() as conn:
        with pytest.raises(Conflict):
            await setup.consume(conn, token)
        assert await setup.issue_if_needed(conn) is None


async def test_settings_and_audit_filters(db):
    async with db.begin() as conn:
        await settings.put(conn, "k", "v1")
        await settings.put(conn, "k", "v2")
        for i in range(5):
            await audit.record(conn, Actor(None, "10.0.0.1", "cli"), "user.create" if i % 2 else "token.create",
                               "user", i, n=i, text="日本語")
    async with db.read() as conn:
        assert await settings.get(conn, "k") == "v2"
        newest = await audit.list_entries(conn, limit=2)
        assert [e["detail"]["n"] for e in newest] == [4, 3]
        older = await audit.list_entries(conn, limit=10, before_id=newest[-1]["id"])
        assert [e["detail"]["n"] for e in older] == [2, 1, 0]
        users_only = await audit.list_entries(conn, limit=10, action="user.")
        assert {e["action"] for e in users_only} == {"user.create"}
        like_escape = await audit.list_entries(conn, limit=10, action="us%.")
        assert like_escape == []
        assert newest[0]["detail"]["text"] == "日本語" and newest[0]["ip"] == "10.0.0.1"


async def test_sql_injection_strings_stored_verbatim(db):
    nasty = "x'); DROP TABLE users; --"
    async with db.begin() as conn:
        u = await users.create(conn, email="n@example.org", password_hash=nasty)
        tok, _ = await tokens.create(conn, u.id, nasty, None)
    async with db.read() as conn:
        assert (await tokens.get(conn, u.id, tok.id)).name == nasty
        assert await users.password_hash_for(conn, u.id) == nasty
        assert (await conn.execute(sa.select(sa.func.count()).select_from(users_t))).scalar_one() == 1


async def test_touch_many_nodes_at_once(db):
    from dmd.queries import nodes

    async with db.begin() as conn:
        made = [(await nodes.create(conn, name=f"n{i}", owner=None, join_ttl_s=60))[0] for i in range(5)]
    when = dt.datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC)
    async with db.begin() as conn:
        await nodes.touch(conn, {n.id: when + dt.timedelta(seconds=i) for i, n in enumerate(made)})
    async with db.read() as conn:
        for i, n in enumerate(made):
            assert (await nodes.get(conn, n.id)).last_seen == when + dt.timedelta(seconds=i)
