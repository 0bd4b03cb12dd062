"""Revision 0007 on a database of the revision before: users who exist keep their node quota
and get the ceilings; shares of admins' (and the installation's) nodes stay usable, shares of
plain users' nodes wait for their recipient; no node is provided for everyone."""

from __future__ import annotations

import sqlalchemy as sa

from dmd.db import Database
from dmd.db.migrate import upgrade
from dmd.db.types import UtcDateTime, utcnow
from dmd.queries import users as user_svc


async def test_existing_users_and_shares(db_url: str) -> None:
    db = Database(db_url)
    try:
        await upgrade(db, "0005")
        now = utcnow()
        users = sa.table("users", *(sa.column(c) for c in (
            "id", "email", "username", "password_hash", "role", "disabled", "node_limit", "auth_version")),
            sa.column("created_at", UtcDateTime), sa.column("updated_at", UtcDateTime))
        nodes = sa.table("nodes", *(sa.column(c) for c in ("id", "name", "owner_id", "status", "cordoned", "local")),
                         sa.column("created_at", UtcDateTime), sa.column("updated_at", UtcDateTime))
        shares = sa.table("node_shares", sa.column("node_id"), sa.column("user_id"),
                          sa.column("created_at", UtcDateTime))
        async with db.begin() as conn:
            for uid, role, limit in ((1, "admin", None), (2, "user", None), (3, "user", 3), (4, "user", None)):
                await conn.execute(users.insert().values(
                    id=uid, email=f"u{uid}@example.org", username=f"u{uid}", password_hash="x", role=role,
                    disabled=False, node_limit=limit, auth_version=1, created_at=now, updated_at=now))
            for nid, owner in ((1, 1), (2, None), (3, 2)):
                await conn.execute(nodes.insert().values(id=nid, name=f"n{nid}", owner_id=owner, status="offline",
                                                         cordoned=False, local=False, created_at=now, updated_at=now))
            for nid in (1, 2, 3):
                await conn.execute(shares.insert().values(node_id=nid, user_id=4, created_at=now))
        await upgrade(db)
        async with db.read() as conn:
            limits = {uid: await user_svc.limits(conn, uid) for uid in (1, 2, 3)}
            accepted = dict((await conn.execute(sa.text(
                "SELECT node_id, accepted_at IS NOT NULL FROM node_shares WHERE user_id = 4"))).all())
            public = (await conn.execute(sa.text("SELECT COUNT(*) FROM nodes WHERE public"))).scalar_one()
        assert [(x.nodes, x.port_maps, x.log_follows, x.transfers) for x in limits.values()] == [
            (None, 20, 4, 2), (None, 20, 4, 2), (3, 20, 4, 2)]
        assert {k: bool(v) for k, v in accepted.items()} == {1: True, 2: True, 3: False}
        assert public == 0
    finally:
        await db.close()


async def test_limits_as_the_transfer_gate_reads_them(db: Database) -> None:
    """queries.users.limits: what each user may hold at once (None: no limit); an admin owns nodes
    freely whatever is stored; a user that is gone may hold nothing."""
    async with db.begin() as conn:
        plain = await user_svc.create(conn, email="p@example.org", password_hash="x",
                                      **user_svc.new_user_limits("user"))
        boss = await user_svc.create(conn, email="b@example.org", password_hash="x", role="admin", node_limit=0,
                                     transfer_limit=5)
    async with db.read() as conn:
        got = await user_svc.limits(conn, plain.id)
        assert (got.nodes, got.port_maps, got.log_follows, got.transfers) == (0, 20, 4, 2)
        got = await user_svc.limits(conn, boss.id)
        assert (got.nodes, got.port_maps, got.log_follows, got.transfers) == (None, None, None, 5)
        got = await user_svc.limits(conn, 987654)
        assert (got.nodes, got.port_maps, got.log_follows, got.transfers) == (0, 0, 0, 0)
