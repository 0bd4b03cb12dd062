"""Who sees which port maps, and the pools and busy ports the ledger picks from (storage level,
on SQLite, PostgreSQL and MariaDB)."""

from __future__ import annotations

import json

import pytest

from agent import protocol as p
from dmd.db import Database
from dmd.db.schema import instances, nodes
from dmd.db.types import utcnow
from dmd.errors import NotFound
from dmd.models import Node
from dmd.queries import nodes as node_svc
from dmd.queries import port_maps as svc
from dmd.queries import users as user_svc
from tests.portmaps.test_ledger import _alloc


async def _world(db: Database):
    """Alice with two instances on n1 and one on n2, Bob with one on n1, an admin; a map each."""
    now = utcnow()
    async with db.begin() as conn:
        alice = await user_svc.create(conn, email="alice@example.org", password_hash="x")
        bob = await user_svc.create(conn, email="bob@example.org", password_hash="x")
        boss = await user_svc.create(conn, email="boss@example.org", password_hash="x", role="admin")
        node_ids = []
        for name in ("n1", "n2"):
            r = await conn.execute(nodes.insert().values(name=name, owner_id=None, status="online", cordoned=False,
                                                         local=False, facts="{}", created_at=now, updated_at=now))
            node_ids.append(int(r.inserted_primary_key[0]))
        inst = {}
        for name, owner, node_id in (("a1", alice, node_ids[0]), ("a2", alice, node_ids[0]),
                                     ("a3", alice, node_ids[1]), ("b1", bob, node_ids[0])):
            r = await conn.execute(instances.insert().values(
                name=name, owner_id=owner.id, node_id=node_id, image="x:1", env="{}", privileged=False,
                host_network=False, desired="running", status="running", created_at=now, updated_at=now))
            inst[name] = int(r.inserted_primary_key[0])
    maps = {name: await _alloc(db, node_ids[0] if name != "a3" else node_ids[1], iid, 80)
            for name, iid in inst.items()}
    return alice, bob, boss, node_ids, inst, maps


async def test_each_user_sees_the_maps_of_their_own_instances(db: Database) -> None:
    alice, bob, boss, (n1, n2), inst, maps = await _world(db)
    async with db.read() as conn:
        for user, own in ((alice, ["a1", "a2", "a3"]), (bob, ["b1"]), (boss, ["a1", "a2", "a3", "b1"])):
            listed = await svc.list_visible(conn, user, limit=10)
            assert [m.id for m in listed] == sorted(maps[n].id for n in own), user.email
            for name, m in maps.items():
                if name in own:
                    got = await svc.get_visible(conn, user, m.id)
                    assert (got.id, got.instance_id, got.owner_id) == (m.id, inst[name], m.owner_id)
                else:
                    with pytest.raises(NotFound):
                        await svc.get_visible(conn, user, m.id)
        # Filters and pages.
        assert [m.id for m in await svc.list_visible(conn, alice, limit=10, instance_id=inst["a2"])] == \
            [maps["a2"].id]
        assert [m.id for m in await svc.list_visible(conn, alice, limit=10, node_id=n2)] == [maps["a3"].id]
        assert [m.id for m in await svc.list_visible(conn, boss, limit=10, node_id=n1)] == \
            sorted(maps[n].id for n in ("a1", "a2", "b1"))
        first = await svc.list_visible(conn, alice, limit=2)
        rest = await svc.list_visible(conn, alice, limit=2, after_id=first[-1].id)
        assert [m.id for m in first + rest] == sorted(maps[n].id for n in ("a1", "a2", "a3"))
        assert await svc.list_visible(conn, bob, limit=10, after_id=maps["b1"].id) == []
        with pytest.raises(NotFound):
            await svc.get_visible(conn, boss, 999_999)


def _node(facts: dict) -> Node:
    now = utcnow()
    return Node(id=1, name="n", owner_id=None, status="online", cordoned=False, local=False, join_expires_at=None,
                facts=facts, agent_version=None, protocol_version=None, connected_at=None, last_seen=None,
                created_at=now, updated_at=now)


def test_pools_of_a_node():
    default = {"tcp": [(20000, 29999)], "udp": [(20000, 29999)]}
    assert svc.pools_of(_node({})) == default
    assert svc.pools_of(_node({"ports": {"pools": "bogus"}})) == default
    got = svc.pools_of(_node({"ports": {"pools": {"tcp": [[1, 1], [30000, 30010], [5, 4], [0, 3], [7, 65536],
                                                          ["a", 9], [1, 2, 3], 8], "udp": None}}}))
    assert got == {"tcp": [(1, 1), (30000, 30010)], "udp": []}
    assert svc.pools_of(_node({"ports": {"pools": {"tcp": [[65535, 65535]]}}})) == {"tcp": [(65535, 65535)],
                                                                                   "udp": []}
    ranges = [(10, 20), (30, 30)]
    assert [p for p in (9, 10, 15, 20, 21, 29, 30, 31) if svc.in_pool(ranges, p)] == [10, 15, 20, 30]
    assert not svc.in_pool([], 10)


def test_pick_takes_only_free_ports_of_the_pool():
    assert svc._pick([], set()) is None
    assert svc._pick([(5, 5)], {5}) is None
    assert svc._pick([(5, 5)], set()) == 5
    picks = {svc._pick([(10, 12), (20, 21)], {11, 20}) for _ in range(200)}
    assert picks == {10, 12, 21}
    # Nearly full: the fallback walks the whole pool.
    assert {svc._pick([(1, 1000)], set(range(1, 1000))) for _ in range(5)} == {1000}


async def test_busy_ports_are_stored_clean(db: Database) -> None:
    _, _, _, (n1, n2), _, _ = await _world(db)
    async with db.begin() as conn:
        await svc.set_busy_ports(conn, n1, p.Listening(tcp=[22, 22, 80], udp=[]))
        assert await svc.busy_ports(conn, n1) == {"tcp": {22, 80}, "udp": set()}
        # What an agent says of them is checked on the wire: junk never reaches the ledger.
        with pytest.raises(p.DecodeError, match=r"tcp\[3\]"):
            p.parse(p.Listening, {"tcp": [22, 22, 80, "x", 1.5], "udp": None})
        assert await svc.busy_ports(conn, n2) == {"tcp": set(), "udp": set()}  # never reported
        await conn.execute(nodes.update().where(nodes.c.id == n2).values(busy_ports="not json"))
        assert await svc.busy_ports(conn, n2) == {"tcp": set(), "udp": set()}
        await conn.execute(nodes.update().where(nodes.c.id == n2).values(busy_ports=json.dumps({"tcp": [1, "2"]})))
        assert await svc.busy_ports(conn, n2) == {"tcp": {1}, "udp": set()}
        node = await node_svc.get(conn, n1)
        assert node.id == n1
