"""Automatic placement never sends a user's instance (and its environment) to a node they did
not choose: a plain user's node shared with them counts only once they accept it; the nodes an
administrator provides for everyone count for all. At the storage level, on each database."""

from __future__ import annotations

from dmd.db import Database
from dmd.db.schema import nodes
from dmd.queries import instances as svc
from dmd.queries import nodes as node_svc
from tests.instances.test_quota_units import add_node, create, refused, req, user


async def _share(db: Database, node_id: int, owner, recipient, *, accept: bool) -> None:
    async with db.begin() as conn:
        node = await node_svc.get(conn, node_id)
        await node_svc.share(conn, node, recipient)
        if accept:
            await node_svc.accept(conn, recipient, node_id)


async def test_a_node_shared_by_its_owner_never_receives_the_recipients_instances(db: Database) -> None:
    mallory = await user(db, "mallory@example.org")
    victim = await user(db, "victim@example.org")
    admin = await user(db, "admin@example.org", role="admin")
    # mallory's node comes first (the placement tries nodes in id order) and has room for all.
    trap = await add_node(db, "trap", owner=mallory, cpus=64, memory_mb=640000)
    await _share(db, trap, mallory, victim, accept=False)
    online = {trap}

    # Only mallory's node is there: the victim's instance goes nowhere, and never to it.
    assert await refused(db, victim, req("secret", env={"TOKEN": "s3cr3t"}), online) == (
        409, "no_capacity", "there is no node you may use; ask an administrator to share one")
    assert await refused(db, victim, req("secret", node_id=trap), online) == (
        422, "invalid", f"node_id: no node {trap} that you may use")

    # The admin's node provided for everyone takes it; still never the trap.
    site = await add_node(db, "site", owner=admin)
    async with db.begin() as conn:
        await conn.execute(nodes.update().where(nodes.c.id == site).values(public=True))
    online.add(site)
    for i in range(3):
        placed = await create(db, victim, req(f"secret-{i}", env={"TOKEN": "s3cr3t"}), online)
        assert placed.node_id == site
    # An admin node not provided for everyone is not the victim's either.
    async with db.begin() as conn:
        await conn.execute(nodes.update().where(nodes.c.id == site).values(public=False))
    assert (await refused(db, victim, req("more"), online))[:2] == (409, "no_capacity")

    # Once the victim accepts the share, mallory's node is their choice and may be used.
    async with db.begin() as conn:
        await node_svc.accept(conn, victim, trap)
    assert (await create(db, victim, req("chosen"), online)).node_id == trap


async def test_admins_automatic_placement_skips_plain_users_nodes(db: Database) -> None:
    mallory = await user(db, "mallory@example.org")
    admin = await user(db, "admin@example.org", role="admin")
    trap = await add_node(db, "trap", owner=mallory)
    own = await add_node(db, "own", owner=admin)
    online = {trap, own}
    assert (await create(db, admin, req("a"), online)).node_id == own
    # Named, any node is the admin's to use.
    assert (await create(db, admin, req("b", node_id=trap), online)).node_id == trap
    async with db.read() as conn:
        assert [n.name for n in await svc.usable_nodes(conn, admin, automatic=True)] == ["own"]
        assert [n.name for n in await svc.usable_nodes(conn, admin)] == ["trap", "own"]
