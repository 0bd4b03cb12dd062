"""ssh_keys on SQLite, PostgreSQL and MariaDB: the migration matches schema.py, ownership,
uniqueness per user, and the cascade when a user is deleted."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from dmd.app import compose
from dmd.db.schema import metadata, ssh_keys
from dmd.errors import Conflict, Invalid, NotFound
from dmd.models import Actor
from dmd.queries import audit, users
from dmd.queries import ssh_keys as svc
from dmd.usecases import ssh_keys as uc
from tests.conftest import make_config


@pytest.fixture
async def dm(db, tmp_path):
    """dmd's parts on the test's database (the use cases take them)."""
    return await compose(make_config(tmp_path), db)


async def test_migration_matches_schema(db):
    def diff(conn: sa.Connection) -> list:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return [d for d in compare_metadata(ctx, metadata) if "ssh_keys" in repr(d)]

    async with db.engine.connect() as conn:
        assert await conn.run_sync(diff) == []
        names = await conn.run_sync(lambda c: {
            "uq": {u["name"] for u in sa.inspect(c).get_unique_constraints("ssh_keys")},
            "ix": {i["name"] for i in sa.inspect(c).get_indexes("ssh_keys")},
            "fk": [(f["name"], f["options"].get("ondelete")) for f in sa.inspect(c).get_foreign_keys("ssh_keys")],
        })
    assert "uq_ssh_keys_user_id_fingerprint" in names["uq"] | names["ix"]
    assert "ix_ssh_keys_user_id" in names["ix"]
    assert names["fk"] == [("fk_ssh_keys_user_id_users", "CASCADE")]


async def _user(db, email):
    async with db.begin() as conn:
        return await users.create(conn, email=email, password_hash="h")


async def test_add_list_rename_delete_with_audit(db, keys, dm):
    alice = await _user(db, "alice@example.org")
    actor = Actor(alice, "127.0.0.1")
    text = 'no-pty,command="rm -rf /" ' + keys["ed25519"].pub_line
    key, parsed = await uc.add(dm, actor, alice, None, text)
    assert key.name == "ed25519@test"  # the comment, when no name is given
    assert key.public_key == keys["ed25519"].pub_line  # stored without the options
    assert parsed.options_removed == ("no-pty", "command")
    assert key.created_at.tzinfo == dt.UTC and key.key_type == "ssh-ed25519" and key.bits == 256
    k2, _ = await uc.add(dm, actor, alice, "laptop", keys["rsa2048"].pub_text)
    async with db.read() as conn:
        assert [k.id for k in await svc.list_for(conn, alice.id, limit=10)] == [key.id, k2.id]
        assert [k.id for k in await svc.list_for(conn, alice.id, limit=10, after_id=key.id)] == [k2.id]
    renamed = await uc.rename(dm, actor, alice, key.id, "desk")
    assert renamed.name == "desk" and renamed.updated_at >= key.updated_at
    await uc.delete(dm, actor, alice, k2.id)
    async with db.read() as conn:
        assert [k.name for k in await svc.list_for(conn, alice.id, limit=10)] == ["desk"]
        entries = await audit.list_entries(conn, limit=10, action="ssh_key.")
    assert [e["action"] for e in entries] == ["ssh_key.delete", "ssh_key.rename", "ssh_key.create",
                                              "ssh_key.create"]
    assert entries[1]["detail"]["before"] == "ed25519@test" and entries[1]["detail"]["after"] == "desk"
    assert entries[3]["detail"]["fingerprint"] == key.fingerprint
    assert entries[3]["detail"]["options_removed"] == ["no-pty", "command"]
    assert all(e["actor_id"] == alice.id and e["target_type"] == "ssh_key" for e in entries)


async def test_same_key_twice_for_one_user_two_users_fine(db, keys, dm):
    alice = await _user(db, "alice@example.org")
    bob = await _user(db, "bob@example.org")
    line = keys["ecdsa256"].pub_line
    a, _ = await uc.add(dm, Actor(alice), alice, "a", line)
    with pytest.raises(Conflict) as exc:
        # The same key with other options or another comment is still the same key.
        await uc.add(dm, Actor(alice), alice, "again", "no-pty " + line.rsplit(" ", 1)[0] + " other")
    assert exc.value.code == "key_exists" and "'a'" in exc.value.message
    b, _ = await uc.add(dm, Actor(bob), bob, "b", line)
    assert a.fingerprint == b.fingerprint and a.id != b.id
    async with db.read() as conn:
        assert await svc.count_for(conn, alice.id) == 1
        with pytest.raises(NotFound):
            await svc.get(conn, bob.id, a.id)
    with pytest.raises(NotFound):
        await uc.rename(dm, Actor(bob), bob, a.id, "mine now")
    with pytest.raises(NotFound):
        await uc.delete(dm, Actor(bob), bob, a.id)


async def test_parallel_adds_of_one_key_yield_one_row(db, keys, dm):
    alice = await _user(db, "alice@example.org")

    async def attempt(i: int) -> str:
        try:
            await uc.add(dm, Actor(alice), alice, f"k{i}", keys["ed25519_b"].pub_line)
            return "ok"
        except Conflict:
            return "conflict"

    results = await asyncio.gather(*(attempt(i) for i in range(6)))
    assert results.count("ok") == 1 and results.count("conflict") == 5


async def test_fingerprints_compare_case_sensitively(db, keys, dm):
    """Two fingerprints differing only in case are different keys (MariaDB's default collation would
    say otherwise)."""
    alice = await _user(db, "alice@example.org")
    k, _ = await uc.add(dm, Actor(alice), alice, "x", keys["ed25519"].pub_line)
    async with db.begin() as conn:
        await conn.execute(ssh_keys.insert().values(
            user_id=alice.id, name="y", key_type=k.key_type, public_key=k.public_key,
            fingerprint=k.fingerprint.swapcase().replace("sha256:", "SHA256:"), bits=k.bits, comment="",
            created_at=k.created_at, updated_at=k.updated_at))
        found = await svc.find_by_fingerprint(conn, alice.id, k.fingerprint)
        assert found is not None and found.id == k.id
        assert await svc.count_for(conn, alice.id) == 2


async def test_keys_go_with_their_user(db, keys, dm):
    alice = await _user(db, "alice@example.org")
    await uc.add(dm, Actor(alice), alice, None, keys["ed25519"].pub_line)
    async with db.begin() as conn:
        await users.delete(conn, alice.id)
    async with db.read() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(ssh_keys))).scalar_one() == 0


async def test_refusals_write_nothing(db, keys, dm):
    alice = await _user(db, "alice@example.org")
    for text in (keys["rsa1024"].pub_text, keys["ed25519"].private.read_text(), "garbage"):
        with pytest.raises(Invalid) as exc:
            await uc.add(dm, Actor(alice), alice, None, text)
        assert exc.value.status == 422 and exc.value.field == "public_key"
    async with db.read() as conn:
        assert await svc.count_for(conn, alice.id) == 0
        assert await audit.list_entries(conn, limit=10, action="ssh_key.") == []
