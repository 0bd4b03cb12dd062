"""DM's image catalogue: per node, what the agent reports, with an owner and a public flag."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from agent.protocol import ImageInfo
from dmd.db.schema import images, instances, nodes
from dmd.db.types import utcnow
from dmd.errors import NotFound
from dmd.models import User


def refs_of(image: ImageInfo) -> list[str]:
    return [t for t in image.repo_tags if t and "<none>" not in t]


async def sync_inventory(conn: AsyncConnection, node_id: int, reported: list[ImageInfo]) -> None:
    """Make the catalogue of a node match what its agent reports (owners and flags are kept).

    Two syncs of one node may run at once (two imports each refresh it): the node's row is
    locked first, so the second reads what the first wrote instead of inserting it again."""
    await conn.execute(sa.select(nodes.c.id).where(nodes.c.id == node_id).with_for_update())
    now = utcnow()
    seen: dict[str, ImageInfo] = {}
    for img in reported:
        for ref in refs_of(img):
            seen[ref[:255]] = img
    rows = {r.ref: r for r in (await conn.execute(sa.select(images).where(images.c.node_id == node_id))).all()}
    for ref, img in seen.items():
        size, image_id = img.size, img.id[:128]
        if ref in rows:
            if rows[ref].image_id != image_id or rows[ref].size != size:
                await conn.execute(images.update().where(images.c.id == rows[ref].id).values(
                    image_id=image_id, size=size, updated_at=now))
        else:
            await conn.execute(images.insert().values(node_id=node_id, ref=ref, image_id=image_id, size=size,
                                                      owner_id=None, public=False, created_at=now, updated_at=now))
    gone = [r.id for ref, r in rows.items() if ref not in seen]
    if gone:
        await conn.execute(images.delete().where(images.c.id.in_(gone)))


def _visible(q: sa.Select[Any], user: User) -> sa.Select[Any]:
    if user.is_admin:
        return q
    return q.where(sa.or_(images.c.public.is_(True), images.c.owner_id == user.id))


async def list_on_node(conn: AsyncConnection, user: User, node_id: int) -> list[dict[str, Any]]:
    q = _visible(sa.select(images).where(images.c.node_id == node_id).order_by(images.c.ref), user)
    return [dict(r._mapping) for r in (await conn.execute(q)).all()]


async def get_visible(conn: AsyncConnection, user: User, image_id: int) -> dict[str, Any]:
    row = (await conn.execute(_visible(sa.select(images).where(images.c.id == image_id), user))).first()
    if row is None:
        raise NotFound(f"no such image: {image_id}")
    return dict(row._mapping)


async def find(conn: AsyncConnection, node_id: int, ref: str) -> dict[str, Any] | None:
    row = (await conn.execute(sa.select(images).where(images.c.node_id == node_id, images.c.ref == ref))).first()
    return None if row is None else dict(row._mapping)


async def claim(conn: AsyncConnection, node_id: int, ref: str, image: ImageInfo, owner: User) -> dict[str, Any]:
    """Record an image the user brought to the node (pull, import, commit, copy) as theirs."""
    now = utcnow()
    existing = await find(conn, node_id, ref)
    if existing is None:
        await conn.execute(images.insert().values(node_id=node_id, ref=ref, image_id=image.id[:128],
                                                  size=image.size, owner_id=owner.id, public=False, created_at=now,
                                                  updated_at=now))
    else:
        values: dict[str, Any] = {"image_id": image.id[:128], "size": image.size, "updated_at": now}
        if existing["owner_id"] is None:
            values["owner_id"] = owner.id
        await conn.execute(images.update().where(images.c.id == existing["id"]).values(**values))
    found = await find(conn, node_id, ref)
    assert found is not None
    return found


async def set_public(conn: AsyncConnection, image_id: int, public: bool) -> None:
    await conn.execute(images.update().where(images.c.id == image_id).values(public=public, updated_at=utcnow()))


async def remove(conn: AsyncConnection, image_id: int) -> None:
    await conn.execute(images.delete().where(images.c.id == image_id))


async def users_of(conn: AsyncConnection, node_id: int, ref: str) -> list[str]:
    """Names of the live instances on the node that use this image."""
    q = sa.select(instances.c.name).where(instances.c.node_id == node_id, instances.c.image == ref,
                                          instances.c.desired != "deleted")
    return list((await conn.execute(q)).scalars())
