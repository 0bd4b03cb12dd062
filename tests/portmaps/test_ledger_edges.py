"""The port ledger's edges: pools of other nodes and protocols, other instances' maps, and a
node so busy that every pick collides (storage level, on the three databases)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy.exc import IntegrityError

from dmd.db import Database
from dmd.db.schema import nodes
from dmd.db.types import utcnow
from dmd.errors import ApiError
from dmd.queries import port_maps as svc
from tests.portmaps.test_ledger import _alloc, _setup


async def test_the_same_port_number_on_another_node_or_protocol_is_free(db: Database) -> None:
    one_port = {"tcp": [[30000, 30000]], "udp": [[30000, 30000]]}
    node_a, (a,) = await _setup(db, one_port)
    now = utcnow()
    async with db.begin() as conn:
        r = await conn.execute(nodes.insert().values(name="n2", owner_id=None, status="online", cordoned=False,
                                                     local=False, facts=json.dumps({"ports": {"pools": one_port}}),
                                                     created_at=now, updated_at=now))
        node_b = int(r.inserted_primary_key[0])
    _, (b,) = await _setup_instance_on(db, node_b)
    assert (await _alloc(db, node_a, a, 80)).host_port == 30000
    assert (await _alloc(db, node_a, a, 53, protocol="udp")).host_port == 30000
    assert (await _alloc(db, node_b, b, 80)).host_port == 30000  # the other node's pool is its own
    with pytest.raises(ApiError) as e:
        await _alloc(db, node_a, a, 81)
    assert (e.value.status, e.value.code) == (409, "pool_exhausted")


async def _setup_instance_on(db: Database, node_id: int) -> tuple[int, list[int]]:
    from dmd.db.schema import instances
    from dmd.queries import users as user_svc

    now = utcnow()
    async with db.begin() as conn:
        u = await user_svc.create(conn, email="other@example.org", password_hash="x")
        r = await conn.execute(instances.insert().values(
            name="other", owner_id=u.id, node_id=node_id, image="x:1", env="{}", privileged=False,
            host_network=False, desired="running", status="running", created_at=now, updated_at=now))
    return node_id, [int(r.inserted_primary_key[0])]


async def test_other_instances_maps_do_not_count_against_an_instances_limit(db: Database) -> None:
    node_id, (a, b) = await _setup(db, n_instances=2)
    await _alloc(db, node_id, b, 1)
    for port in range(1, svc.MAX_MAPS_PER_INSTANCE + 1):
        await _alloc(db, node_id, a, port)
    with pytest.raises(ApiError) as e:
        await _alloc(db, node_id, a, 9999)
    assert (e.value.status, e.value.code) == (409, "too_many_maps")
    assert (await _alloc(db, node_id, b, 2)).instance_port == 2


async def test_a_pick_that_always_collides_gives_up_with_busy(db: Database, monkeypatch) -> None:
    node_id, (a,) = await _setup(db)
    tries = []

    async def taken(conn, inst, protocol, host_port, instance_port):
        tries.append(host_port)
        raise IntegrityError("INSERT", {}, Exception("duplicate"))

    monkeypatch.setattr(svc, "_insert", taken)
    with pytest.raises(ApiError) as e:
        await _alloc(db, node_id, a, 80)
    assert (e.value.status, e.value.code) == (409, "busy")
    assert len(tries) == svc._PICK_TRIES
