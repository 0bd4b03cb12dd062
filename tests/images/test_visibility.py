"""Who sees which images of a node's catalogue (storage level, on the three databases): an
image is its owner's, or everyone's once public; administrators see all."""

from __future__ import annotations

import pytest

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
