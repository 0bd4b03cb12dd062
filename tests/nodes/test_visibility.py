"""Who sees and manages which node (storage level, on the three databases): owners and the
users a node is shared with see it, owners and administrators manage it, nobody else learns
that it exists."""

from __future__ import annotations

import pytest

from dmd.db import Database
from dmd.errors import ApiError
from dmd.queries import nodes as svc
from dmd.queries import users as user_svc


async def test_owners_shared_users_and_admins(db: Database) -> None:
    async with db.begin() as conn:
        alice = await user_svc.create(conn, email="alice@example.org", password_hash="x")
        bob = await user_svc.create(conn, email="bob@example.org", password_hash="x")
        carol = await user_svc.create(conn, email="carol@example.org", password_hash="x")
        boss = await user_svc.create(conn, email="boss@example.org", password_hash="x", role="admin")
        a1, _ = await svc.create(conn, name="a1", owner=alice, join_ttl_s=60)
        a2, _ = await svc.create(conn, name="a2", owner=alice, join_ttl_s=60)
        b1, _ = await svc.create(conn, name="b1", owner=bob, join_ttl_s=60)
        site, _ = await svc.create(conn, name="site", owner=None, join_ttl_s=60)
        await svc.share(conn, a2, bob)
        await svc.share(conn, site, carol)
        await svc.accept(conn, bob, a2.id)
        await svc.accept(conn, carol, site.id)
    seen = {alice: ["a1", "a2"], bob: ["a2", "b1"], carol: ["site"], boss: ["a1", "a2", "b1", "site"]}
    managed = {alice: ["a1", "a2"], bob: ["b1"], carol: [], boss: ["a1", "a2", "b1", "site"]}
    async with db.read() as conn:
        for user, names in seen.items():
            listed = await svc.list_visible(conn, user, limit=10, after_id=None)
            assert [n.name for n in listed] == names, user.email
            for node in (a1, a2, b1, site):
                if node.name in names:
                    assert (await svc.get_visible(conn, user, node.id)).name == node.name
                else:
                    with pytest.raises(ApiError) as e:
                        await svc.get_visible(conn, user, node.id)
                    assert (e.value.status, e.value.message) == (404, f"no such node: {node.id}")
                if node.name in managed[user]:
                    assert (await svc.get_manageable(conn, user, node.id)).name == node.name
                else:
                    with pytest.raises(ApiError) as e:
                        await svc.get_manageable(conn, user, node.id)
                    assert e.value.status == (403 if node.name in names else 404), (user.email, node.name)
        page = await svc.list_visible(conn, boss, limit=2, after_id=None)
        assert [n.name for n in page] == ["a1", "a2"]
        assert [n.name for n in await svc.list_visible(conn, boss, limit=10, after_id=page[-1].id)] == ["b1", "site"]
        assert [n.name for n in await svc.list_visible(conn, bob, limit=10, after_id=a2.id)] == ["b1"]


async def test_the_node_quota_counts_the_users_own_nodes(db: Database) -> None:
    async with db.begin() as conn:
        alice = await user_svc.create(conn, email="alice@example.org", password_hash="x", node_limit=1)
        bob = await user_svc.create(conn, email="bob@example.org", password_hash="x")
        boss = await user_svc.create(conn, email="boss@example.org", password_hash="x", role="admin", node_limit=0)
        for name in ("b1", "b2"):
            await svc.create(conn, name=name, owner=bob, join_ttl_s=60)
        await svc.create(conn, name="site", owner=None, join_ttl_s=60)
        assert (await svc.create(conn, name="a1", owner=alice, join_ttl_s=60))[0].owner_id == alice.id
        assert (await svc.create(conn, name="boss1", owner=boss, join_ttl_s=60))[0].owner_id == boss.id
    async with db.begin() as conn:
        with pytest.raises(ApiError) as e:
            await svc.create(conn, name="a2", owner=alice, join_ttl_s=60)
    assert (e.value.status, e.value.code, e.value.message) == (
        403, "quota_exceeded", "you may own at most 1 node(s); delete one or ask an administrator")


async def test_a_join_uses_up_its_own_token_only(db: Database) -> None:
    async with db.begin() as conn:
        first, first_token = await svc.create(conn, name="first", owner=None, join_ttl_s=60)
        second, second_token = await svc.create(conn, name="second", owner=None, join_ttl_s=60)
        joined, credential = await svc.join(conn, first_token)
        assert joined.id == first.id and credential.startswith("dmn_")
        again, _ = await svc.join(conn, second_token)  # untouched by the first join
        assert again.id == second.id
        with pytest.raises(ApiError) as e:
            await svc.join(conn, first_token)
        assert (e.value.status, e.value.code) == (403, "join_token_invalid")
