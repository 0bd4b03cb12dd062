"""The per-user ceiling on port maps held at once (users.port_map_limit), counted under the
owner's row lock: parallel requests on PostgreSQL and MariaDB (and SQLite) never exceed it,
and only the user at the ceiling is refused."""

from __future__ import annotations

import asyncio
import json

import sqlalchemy as sa

from dmd.db import Database
from dmd.db.schema import instances, nodes, port_maps, users
from dmd.db.types import utcnow
from dmd.errors import ApiError
from dmd.queries import instances as inst_svc
from dmd.queries import nodes as node_svc
from dmd.queries import port_maps as svc
from dmd.queries import users as user_svc


async def _user_with_instances(db: Database, email: str, node_id: int, n: int, limit: int | None) -> list[int]:
    now = utcnow()
    async with db.begin() as conn:
        user = await user_svc.create(conn, email=email, password_hash="x", port_map_limit=limit)
        ids = []
        for i in range(n):
            r = await conn.execute(instances.insert().values(
                name=f"i{i}", owner_id=user.id, node_id=node_id, image="x:1", env="{}", privileged=False,
                host_network=False, desired="running", status="running", created_at=now, updated_at=now))
            ids.append(int(r.inserted_primary_key[0]))
    return ids


async def _node(db: Database) -> int:
    now = utcnow()
    async with db.begin() as conn:
        res = await conn.execute(nodes.insert().values(
            name="n1", owner_id=None, status="online", cordoned=False, local=False,
            facts=json.dumps({"ports": {"pools": {"tcp": [[30000, 30999]], "udp": []}}}), created_at=now,
            updated_at=now))
        return int(res.inserted_primary_key[0])


async def _attempt(db: Database, node_id: int, instance_id: int, instance_port: int) -> str:
    async def record(conn):  # as dmd.usecases.port_maps runs it: again after a deadlock
        inst = await inst_svc.get(conn, instance_id)
        node = await node_svc.get(conn, node_id)
        return await svc.allocate(conn, inst, node, "tcp", instance_port)

    try:
        await db.run(record)
    except ApiError as e:
        return f"{e.status} {e.code}"
    return "ok"


async def _held(db: Database, instance_ids: list[int]) -> int:
    async with db.read() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(port_maps)
                                       .where(port_maps.c.instance_id.in_(instance_ids)))).scalar_one())


async def test_parallel_maps_of_one_user_stop_at_their_ceiling_and_others_carry_on(db: Database) -> None:
    node_id = await _node(db)
    limited = await _user_with_instances(db, "u@example.org", node_id, 4, limit=5)
    other = await _user_with_instances(db, "v@example.org", node_id, 2, limit=None)
    tries = [_attempt(db, node_id, limited[i % 4], 1000 + i) for i in range(24)]
    others = [_attempt(db, node_id, other[i % 2], 1000 + i) for i in range(8)]
    results = await asyncio.gather(*tries, *others)
    mine, theirs = results[:24], results[24:]
    assert sorted(mine) == ["403 quota_exceeded"] * 19 + ["ok"] * 5, mine
    assert theirs == ["ok"] * 8
    assert await _held(db, limited) == 5
    assert await _held(db, other) == 8


async def test_the_refusal_says_what_to_change_and_a_freed_map_makes_room(db: Database) -> None:
    node_id = await _node(db)
    (a,) = await _user_with_instances(db, "u@example.org", node_id, 1, limit=1)
    assert await _attempt(db, node_id, a, 80) == "ok"
    try:
        async with db.begin() as conn:
            await svc.allocate(conn, await inst_svc.get(conn, a), await node_svc.get(conn, node_id), "tcp", 81)
        raise AssertionError("allocated beyond the ceiling")
    except ApiError as e:
        assert (e.status, e.code) == (403, "quota_exceeded")
        assert e.message == ("you may hold at most 1 port map(s) at once; delete one or ask an administrator to "
                             "raise your port map limit")
    async with db.begin() as conn:
        await conn.execute(port_maps.delete().where(port_maps.c.instance_id == a))
    assert await _attempt(db, node_id, a, 81) == "ok"
    # An administrator raises it (null: no limit).
    async with db.begin() as conn:
        await conn.execute(users.update().values(port_map_limit=None))
    assert [await _attempt(db, node_id, a, p) for p in (82, 83)] == ["ok", "ok"]
