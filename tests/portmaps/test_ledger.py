"""The port ledger on SQLite, PostgreSQL and MariaDB: no host port is ever given twice."""

from __future__ import annotations

import asyncio
import json

import pytest
import sqlalchemy as sa

from agent import protocol as p
from dmd.db import Database
from dmd.db.schema import instances, nodes, port_maps
from dmd.db.types import utcnow
from dmd.errors import ApiError
from dmd.queries import instances as inst_svc
from dmd.queries import nodes as node_svc
from dmd.queries import port_maps as svc
from dmd.queries import users as user_svc


async def _setup(db: Database, pools: dict | None = None, n_instances: int = 1) -> tuple[int, list[int]]:
    now = utcnow()
    async with db.begin() as conn:
        user = await user_svc.create(conn, email="u@example.org", password_hash="x")
        facts = {"ports": {"pools": pools}} if pools is not None else {}
        res = await conn.execute(nodes.insert().values(
            name="n1", owner_id=None, status="online", cordoned=False, local=False, facts=json.dumps(facts),
            created_at=now, updated_at=now))
        node_id = int(res.inserted_primary_key[0])
        ids = []
        for i in range(n_instances):
            r = await conn.execute(instances.insert().values(
                name=f"i{i}", owner_id=user.id, node_id=node_id, image="x:1", env="{}", privileged=False,
                host_network=False, desired="running", status="running", created_at=now, updated_at=now))
            ids.append(int(r.inserted_primary_key[0]))
    return node_id, ids


async def _alloc(db: Database, node_id: int, instance_id: int, instance_port: int, host_port: int | None = None,
                 protocol: str = "tcp") -> svc.PortMap:
    async def record(conn):  # as dmd.usecases.port_maps runs it: again after a deadlock
        inst = await inst_svc.get(conn, instance_id)
        node = await node_svc.get(conn, node_id)
        return await svc.allocate(conn, inst, node, protocol, instance_port, host_port)

    return await db.run(record)


async def test_parallel_allocations_never_share_a_host_port(db: Database) -> None:
    # A small pool makes collisions between the parallel pickers likely, so the retry path runs.
    node_id, ids = await _setup(db, {"tcp": [[30000, 30149]], "udp": []}, n_instances=10)
    maps = await asyncio.gather(*(_alloc(db, node_id, ids[i % 10], 1000 + i) for i in range(100)))
    ports = [m.host_port for m in maps]
    assert len(set(ports)) == 100
    assert all(30000 <= p <= 30149 for p in ports)
    async with db.read() as conn:
        rows = (await conn.execute(sa.select(port_maps.c.host_port))).scalars().all()
    assert sorted(rows) == sorted(ports)


async def test_parallel_allocations_keep_the_per_instance_limit(db: Database) -> None:
    """More parallel requests for one instance than it may have maps: exactly the limit are
    recorded, the rest refused with too_many_maps (the count must not race)."""
    node_id, (a,) = await _setup(db)
    extra = 10

    async def attempt(i: int) -> str:
        try:
            await _alloc(db, node_id, a, 1000 + i)
        except ApiError as e:
            return e.code
        return "ok"

    results = await asyncio.gather(*(attempt(i) for i in range(svc.MAX_MAPS_PER_INSTANCE + extra)))
    assert sorted(results) == ["ok"] * svc.MAX_MAPS_PER_INSTANCE + ["too_many_maps"] * extra, results
    async with db.read() as conn:
        count = (await conn.execute(sa.select(sa.func.count()).select_from(port_maps))).scalar_one()
    assert count == svc.MAX_MAPS_PER_INSTANCE


async def test_parallel_maps_of_one_instance_port_yield_one(db: Database) -> None:
    """The same instance port asked for many times at once: one map, the others already_mapped."""
    node_id, (a,) = await _setup(db)

    async def attempt() -> str:
        try:
            await _alloc(db, node_id, a, 8080)
        except ApiError as e:
            return e.code
        return "ok"

    results = await asyncio.gather(*(attempt() for _ in range(10)))
    assert sorted(results) == ["already_mapped"] * 9 + ["ok"], results


async def test_requested_ports_and_their_errors(db: Database) -> None:
    node_id, (a, b) = await _setup(db, n_instances=2)  # no pools reported: the default 20000-29999
    m = await _alloc(db, node_id, a, 80, 20080)
    assert (m.host_port, m.instance_port, m.protocol, m.state) == (20080, 80, "tcp", "pending")
    with pytest.raises(ApiError) as e:
        await _alloc(db, node_id, b, 80, 20080)
    assert (e.value.status, e.value.code) == (409, "port_taken")
    # The same number on the other protocol is another port.
    assert (await _alloc(db, node_id, b, 53, 20080, "udp")).host_port == 20080
    with pytest.raises(ApiError) as e:
        await _alloc(db, node_id, b, 81, 19999)
    assert (e.value.status, e.value.code, e.value.field) == (422, "out_of_pool", "host_port")
    assert "20000-29999" in e.value.message
    with pytest.raises(ApiError) as e:
        await _alloc(db, node_id, a, 80)
    assert (e.value.status, e.value.code) == (409, "already_mapped")
    with pytest.raises(ApiError) as e:
        await _alloc(db, node_id, a, 81, protocol="sctp")
    assert e.value.status == 422
    for bad in (0, 65536):
        with pytest.raises(ApiError) as e:
            await _alloc(db, node_id, a, bad)
        assert (e.value.status, e.value.field) == (422, "instance_port")
    async with db.read() as conn:
        count = (await conn.execute(sa.select(sa.func.count()).select_from(port_maps))).scalar_one()
    assert count == 2  # nothing recorded by the refused requests
    # The first and last port are ports; the pool's first and last too.
    assert [(await _alloc(db, node_id, b, port)).instance_port for port in (1, 65535)] == [1, 65535]
    assert (await _alloc(db, node_id, b, 2, 20000)).host_port == 20000
    assert (await _alloc(db, node_id, b, 3, 29999)).host_port == 29999
    with pytest.raises(ApiError) as e:
        await _alloc(db, node_id, b, 4, 30000)
    assert (e.value.status, e.value.code) == (422, "out_of_pool")


async def test_busy_ports_are_never_handed_out_and_the_pool_runs_out(db: Database) -> None:
    node_id, (a,) = await _setup(db, {"tcp": [[31000, 31003]], "udp": [[31000, 31000]]})
    async with db.begin() as conn:
        await svc.set_busy_ports(conn, node_id, p.Listening(tcp=[31001], udp=[]))
    with pytest.raises(ApiError) as e:
        await _alloc(db, node_id, a, 1, 31001)
    assert (e.value.status, e.value.code) == (409, "port_busy")
    got = {(await _alloc(db, node_id, a, p)).host_port for p in (1, 2, 3)}
    assert got == {31000, 31002, 31003}
    with pytest.raises(ApiError) as e:
        await _alloc(db, node_id, a, 4)
    assert (e.value.status, e.value.code) == (409, "pool_exhausted")
    assert "31000-31003" in e.value.message


async def test_freed_with_the_instance_and_on_delete(db: Database) -> None:
    node_id, (a, b) = await _setup(db, {"tcp": [[32000, 32000]], "udp": []}, n_instances=2)
    m = await _alloc(db, node_id, a, 22)
    async with db.begin() as conn:
        await svc.delete(conn, m.id)
    m = await _alloc(db, node_id, b, 22)
    assert m.host_port == 32000
    async with db.begin() as conn:
        await inst_svc.forget(conn, b)
    assert (await _alloc(db, node_id, a, 22)).host_port == 32000


async def test_no_maps_for_host_network_or_deleting_instances(db: Database) -> None:
    node_id, (a, b) = await _setup(db, n_instances=2)
    async with db.begin() as conn:
        await conn.execute(instances.update().where(instances.c.id == a).values(host_network=True))
        await conn.execute(instances.update().where(instances.c.id == b).values(desired="deleted"))
    for iid, code in ((a, "host_network"), (b, "deleting")):
        with pytest.raises(ApiError) as e:
            await _alloc(db, node_id, iid, 80)
        assert (e.value.status, e.value.code) == (409, code)


def test_deadlock_victims_are_recognised() -> None:
    """MariaDB's 1213 (also when a savepoint's rollback failed after it), PostgreSQL's 40P01."""
    from sqlalchemy.exc import IntegrityError, OperationalError

    from dmd.db.engine import is_retryable

    class MySqlError(Exception):
        pass

    class PgError(Exception):
        sqlstate = "40P01"

    deadlock = OperationalError("INSERT", {}, MySqlError(1213, "Deadlock found"))
    assert is_retryable(deadlock)
    try:
        try:
            raise deadlock
        except OperationalError:
            raise OperationalError("ROLLBACK TO SAVEPOINT", {}, MySqlError(1305, "SAVEPOINT does not exist"))  # noqa: B904
    except OperationalError as e:
        assert is_retryable(e)
    assert is_retryable(OperationalError("x", {}, PgError()))
    assert not is_retryable(IntegrityError("x", {}, MySqlError(1062, "Duplicate entry")))
    assert not is_retryable(OperationalError("x", {}, MySqlError(2003, "Can't connect")))
