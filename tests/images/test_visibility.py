"""Who sees which images of a node's catalogue (storage level, on the three databases): an
image is its owner's, or everyone's once public; administrators see all."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from dmd.db import Database
from dmd.db.schema import images, nodes
from dmd.db.types import utcnow
from dmd.errors import NotFound
from dmd.queries import images as svc
from dmd.queries import users as user_svc


async def test_owners_see_theirs_everyone_sees_public_admins_see_all(db: Database) -> None:
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
        n1, n2 = node_ids
        ids = {}
        for ref, node_id, owner, public in (("a-private:1", n1, alice, False), ("a-public:1", n1, alice, True),
                                            ("b-private:1", n1, bob, False), ("nobodys:1", n1, None, False),
                                            ("elsewhere:1", n2, alice, False)):
            r = await conn.execute(images.insert().values(
                node_id=node_id, ref=ref, image_id="sha256:x", size=1, owner_id=owner.id if owner else None,
                public=public, created_at=now, updated_at=now))
            ids[ref] = int(r.inserted_primary_key[0])
    seen = {
        alice: ["a-private:1", "a-public:1"],
        bob: ["a-public:1", "b-private:1"],
        boss: ["a-private:1", "a-public:1", "b-private:1", "nobodys:1"],
    }
    async with db.read() as conn:
        for user, refs in seen.items():
            listed = await svc.list_on_node(conn, user, n1)
            assert [i["ref"] for i in listed] == refs, user.email  # sorted by reference
            for ref, image_id in ids.items():
                if ref in refs or (ref == "elsewhere:1" and user in (alice, boss)):
                    assert (await svc.get_visible(conn, user, image_id))["ref"] == ref
                else:
                    with pytest.raises(NotFound):
                        await svc.get_visible(conn, user, image_id)
        assert [i["ref"] for i in await svc.list_on_node(conn, bob, n2)] == []
        assert [i["ref"] for i in await svc.list_on_node(conn, alice, n2)] == ["elsewhere:1"]


async def test_two_syncs_of_one_node_at_once(db: Database) -> None:
    """Two imports on one node each refresh its catalogue: the second sync waits for the first
    and updates what it wrote instead of inserting the same reference again (a unique violation)."""
    import asyncio

    from agent.protocol import ImageInfo
    from tests.waiting import wait_for

    now = utcnow()
    async with db.begin() as conn:
        r = await conn.execute(nodes.insert().values(name="n", owner_id=None, status="online", cordoned=False,
                                                     local=False, facts="{}", created_at=now, updated_at=now))
        node_id = int(r.inserted_primary_key[0])
    first = [ImageInfo(id="sha256:a", repo_tags=["new:1"], size=1)]
    second = [ImageInfo(id="sha256:a", repo_tags=["new:1", "other:1"], size=1)]

    async def sync(reported: list[ImageInfo]) -> None:
        async with db.begin() as conn:
            await svc.sync_inventory(conn, node_id, reported)

    if db.dialect == "sqlite":  # BEGIN IMMEDIATE runs writers one after the other anyway
        await sync(first)
        await sync(second)
    else:
        # The hook: the first sync commits only once the second has sent the statement that would
        # write the same row (without the lock) or that waits for the node's row (with it).
        sent: list[str] = []

        def before(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if "FOR UPDATE" in statement or statement.lstrip().upper().startswith("INSERT INTO IMAGES"):
                sent.append(statement)

        later: asyncio.Future[None] | None = None
        try:
            async with db.begin() as conn:
                await svc.sync_inventory(conn, node_id, first)
                sa.event.listen(db.engine.sync_engine, "before_cursor_execute", before)
                try:
                    later = asyncio.ensure_future(sync(second))
                    await wait_for(lambda: later.done() or sent, "the second sync's write or lock", 10)
                finally:
                    sa.event.remove(db.engine.sync_engine, "before_cursor_execute", before)
        finally:
            if later is not None:  # never left running past the test, whatever happened
                await asyncio.wait([later], timeout=30)
        assert later is not None
        await later
    async with db.read() as conn:
        rows = await conn.execute(sa.select(images.c.ref).where(images.c.node_id == node_id).order_by(images.c.ref))
        assert list(rows.scalars()) == ["new:1", "other:1"]
