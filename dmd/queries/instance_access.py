"""SSH access to instances: which of the owner's keys go in, and what the agent last reported.

An instance either follows all of its owner's keys (``ssh_keys_all``: a key added later goes
in too, a deleted one comes out) or holds the keys listed in ``instance_ssh_keys`` (a deleted
key leaves that list by the foreign key's cascade). The reconciler sends the resulting
authorized_keys lines to the agent (``instance.access``) whenever it converges the node, and
the key and instance operations kick the affected nodes, so a change reaches running
instances within one round.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from dmd.db.schema import instance_ssh_keys, instances, ssh_keys
from dmd.db.types import utcnow
from dmd.errors import Invalid
from dmd.models import Instance


async def key_ids(conn: AsyncConnection, inst: Instance) -> list[int]:
    """The ids of the keys that go into the instance."""
    if inst.ssh_keys_all:
        q = sa.select(ssh_keys.c.id).where(ssh_keys.c.user_id == inst.owner_id)
    else:
        q = sa.select(instance_ssh_keys.c.ssh_key_id).where(instance_ssh_keys.c.instance_id == inst.id)
    return sorted((await conn.execute(q)).scalars())


async def authorized_lines(conn: AsyncConnection, inst: Instance) -> list[str]:
    """The authorized_keys lines DM writes into the instance (none when SSH is off)."""
    if not inst.ssh_enabled:
        return []
    q = sa.select(ssh_keys.c.public_key).where(ssh_keys.c.user_id == inst.owner_id).order_by(ssh_keys.c.id)
    if not inst.ssh_keys_all:
        q = q.where(ssh_keys.c.id.in_(
            sa.select(instance_ssh_keys.c.ssh_key_id).where(instance_ssh_keys.c.instance_id == inst.id)))
    # public_key is the parser's canonical line (type, base64, comment; no options, no newline).
    return list((await conn.execute(q)).scalars())


@dataclass(frozen=True, slots=True)
class Access:
    """What an instance's SSH should be, and what its node last said of it."""

    enabled: bool
    keys: list[str]  # the authorized_keys lines that go in
    reported: str | None  # the state the agent last reported (None: never)


async def access_of_node(conn: AsyncConnection, node_id: int) -> dict[int, Access]:
    """Each live instance's SSH on the node (two or three queries for the whole node, not two per
    instance)."""
    rows = (await conn.execute(
        sa.select(instances.c.id, instances.c.owner_id, instances.c.ssh_enabled, instances.c.ssh_keys_all,
                  instances.c.ssh_status)
        .where(instances.c.node_id == node_id, instances.c.desired != "deleted"))).all()
    if not rows:
        return {}
    owners = {r.owner_id for r in rows}
    keys = (await conn.execute(sa.select(ssh_keys.c.id, ssh_keys.c.user_id, ssh_keys.c.public_key)
                               .where(ssh_keys.c.user_id.in_(owners)).order_by(ssh_keys.c.id))).all()
    chosen: dict[int, set[int]] = {}
    listed = [r.id for r in rows if not r.ssh_keys_all]
    if listed:
        q = (sa.select(instance_ssh_keys.c.instance_id, instance_ssh_keys.c.ssh_key_id)
             .where(instance_ssh_keys.c.instance_id.in_(listed)))
        for iid, kid in (await conn.execute(q)).all():
            chosen.setdefault(iid, set()).add(kid)
    out: dict[int, Access] = {}
    for r in rows:
        reported = json.loads(r.ssh_status).get("state") if r.ssh_status else None
        if not r.ssh_enabled:
            out[r.id] = Access(False, [], reported)
            continue
        picked = None if r.ssh_keys_all else chosen.get(r.id, set())
        out[r.id] = Access(True, [k.public_key for k in keys
                                  if k.user_id == r.owner_id and (picked is None or k.id in picked)], reported)
    return out


async def set_keys(conn: AsyncConnection, inst: Instance, ids: list[int] | None) -> None:
    """Choose the instance's keys: a list of the owner's key ids, or None for all of them."""
    await conn.execute(instance_ssh_keys.delete().where(instance_ssh_keys.c.instance_id == inst.id))
    if ids is not None:
        wanted = sorted(set(ids))
        owned = set((await conn.execute(sa.select(ssh_keys.c.id).where(
            ssh_keys.c.user_id == inst.owner_id, ssh_keys.c.id.in_(wanted)))).scalars()) if wanted else set()
        missing = [i for i in wanted if i not in owned]
        if missing:
            raise Invalid(f"ssh_key_ids: no SSH key {', '.join(map(str, missing))} of the instance's owner",
                          field="ssh_key_ids")
        for key_id in wanted:
            await conn.execute(instance_ssh_keys.insert().values(instance_id=inst.id, ssh_key_id=key_id))
    await conn.execute(instances.update().where(instances.c.id == inst.id)
                       .values(ssh_keys_all=ids is None, updated_at=utcnow()))


async def set_enabled(conn: AsyncConnection, instance_id: int, enabled: bool) -> None:
    await conn.execute(instances.update().where(instances.c.id == instance_id)
                       .values(ssh_enabled=enabled, updated_at=utcnow()))


async def set_status(conn: AsyncConnection, instance_id: int, status: dict[str, Any] | None) -> None:
    await conn.execute(instances.update().where(instances.c.id == instance_id)
                       .values(ssh_status=json.dumps(status) if status is not None else None))


async def nodes_following(conn: AsyncConnection, user_id: int, key_id: int | None = None) -> set[int]:
    """Nodes running the user's instances whose keys a change of that user's keys touches:
    those following all keys, and (for a deleted key) those that listed it."""
    cond: sa.ColumnElement[bool] = instances.c.ssh_keys_all.is_(True)
    if key_id is not None:
        listed = sa.select(instance_ssh_keys.c.instance_id).where(instance_ssh_keys.c.ssh_key_id == key_id)
        cond = sa.or_(cond, instances.c.id.in_(listed))
    q = sa.select(instances.c.node_id).distinct().where(
        instances.c.owner_id == user_id, instances.c.ssh_enabled.is_(True), instances.c.desired == "running", cond)
    return set((await conn.execute(q)).scalars())
