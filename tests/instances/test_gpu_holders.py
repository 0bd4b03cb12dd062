"""The GPU ledger joined to its holders (instance and owner) in one query, on SQLite,
PostgreSQL and MariaDB: what the node page and the GPU overview show."""

from __future__ import annotations

from dmd.db import Database
from dmd.db.schema import gpu_allocations, instances, nodes
from dmd.db.types import utcnow
from dmd.queries import instances as svc
from dmd.queries import users as user_svc


async def test_gpu_holders_per_node(db: Database) -> None:
    now = utcnow()
    async with db.begin() as conn:
        alice = await user_svc.create(conn, email="alice@example.org", password_hash="x", username="alice")
        bob = await user_svc.create(conn, email="bob@example.org", password_hash="x", username="bob")
        node_ids = []
        for name in ("n1", "n2", "n3"):
            r = await conn.execute(nodes.insert().values(name=name, owner_id=None, status="online", cordoned=False,
                                                         local=False, facts="{}", created_at=now, updated_at=now))
            node_ids.append(int(r.inserted_primary_key[0]))
        n1, n2, n3 = node_ids
        iids = {}
        for name, owner, node_id, keys in (("a1", alice, n1, ["GPU-2", "GPU-1"]), ("b1", bob, n1, ["GPU-3"]),
                                           ("b2", bob, n2, ["index:0"])):
            r = await conn.execute(instances.insert().values(
                name=name, owner_id=owner.id, node_id=node_id, image="x:1", env="{}", privileged=False,
                host_network=False, desired="running", status="running", created_at=now, updated_at=now))
            iids[name] = int(r.inserted_primary_key[0])
            for key in keys:
                await conn.execute(gpu_allocations.insert().values(node_id=node_id, gpu_key=key,
                                                                   instance_id=iids[name], created_at=now))
    async with db.read() as conn:
        on_n1 = await svc.gpu_holders(conn, [n1])
        assert [(h.gpu_key, h.instance_name, h.username, h.owner_id) for h in on_n1] == [
            ("GPU-1", "a1", "alice", alice.id), ("GPU-2", "a1", "alice", alice.id), ("GPU-3", "b1", "bob", bob.id)]
        assert [(h.node_id, h.gpu_key, h.instance_id) for h in await svc.gpu_holders(conn, [n2, n3])] == [
            (n2, "index:0", iids["b2"])]
        assert await svc.gpu_holders(conn, []) == []
        assert len(await svc.gpu_holders(conn)) == 4
