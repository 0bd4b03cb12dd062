"""Instances: desired state in the database, placement, quotas and the GPU ledger.

Creation is one transaction that locks the owner's row (quotas) and the chosen node's row
(capacity, GPUs), so parallel requests cannot exceed a quota or take the same device.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from dmd import capabilities
from dmd.db.schema import gpu_allocations, images, instance_ssh_keys, instances, nodes, port_maps, users
from dmd.db.types import utcnow
from dmd.errors import ApiError, Conflict, Invalid, NotFound
from dmd.models import Instance, Node, User, mib_text
from dmd.queries.nodes import NAME_RE, trusted_clause, usable_clause

LIVE = sa.and_(instances.c.desired != "deleted")


class QuotaExceeded(ApiError):
    status, code = 403, "quota_exceeded"


class NoCapacity(ApiError):
    status, code = 409, "no_capacity"


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise Invalid("name: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
                      field="name")
    return name


def gpu_keys(node: Node) -> list[tuple[str, dict[str, Any]]]:
    """(ledger key, GPU facts) for each GPU of the node; the keys are always distinct, so that
    each key is exactly one device. The uuid is the key when every GPU reports its own one;
    otherwise (uuids repeated, as on machines with masked ids, or missing) ``index:N`` where the
    indexes are distinct, else ``slot:N``, the GPU's place in the facts' list."""
    gpus = node.gpus
    uuids = [g.get("uuid") for g in gpus]
    if all(isinstance(u, str) and u.strip() and uuids.count(u) == 1 for u in uuids):
        return [(str(g["uuid"]), g) for g in gpus]
    indexes = [g.get("index") for g in gpus]
    if all(isinstance(x, int) and not isinstance(x, bool) and indexes.count(x) == 1 for x in indexes):
        return [(f"index:{g['index']}", g) for g in gpus]
    return [(f"slot:{i}", g) for i, g in enumerate(gpus)]


@dataclass(frozen=True, slots=True)
class GpuRefusal:
    message: str
    unknown: bool  # an id that names no GPU of the node at all (else: ambiguous, or one device twice)


def resolve_gpus(node: Node, wanted: list[str]) -> list[tuple[str, dict[str, Any]]] | GpuRefusal:
    """The (ledger key, facts) of the one device each asked-for id names on the node: its key,
    or a uuid that exactly one of its GPUs reports. A string says why not (unknown, ambiguous, or
    two ids naming one device): no id may ever select several devices or one device twice."""
    keys = gpu_keys(node)
    by_key = dict(keys)
    out: list[tuple[str, dict[str, Any]]] = []
    for want in wanted:
        if want in by_key:
            out.append((want, by_key[want]))
            continue
        same = [(k, g) for k, g in keys if g.get("uuid") == want]
        if len(same) > 1:
            return GpuRefusal(f"{want} is reported by {len(same)} GPUs of node {node.name}; ask for one of them "
                              f"by key: {', '.join(k for k, _ in same)}", unknown=False)
        if not same:
            return GpuRefusal(f"{want} is not a GPU of node {node.name}; its GPUs are: "
                              f"{', '.join(k for k, _ in keys) or 'none'}", unknown=True)
        out.append(same[0])
    seen: dict[str, str] = {}
    for want, (key, _) in zip(wanted, out, strict=True):
        if key in seen:
            return GpuRefusal(f"{seen[key]} and {want} are the same GPU of node {node.name} ({key})", unknown=False)
        seen[key] = want
    return out


def check_gpu_ids(wanted: list[str]) -> None:
    """Each id once and none empty: a request names distinct devices (422 naming the field)."""
    for want in wanted:
        if not want.strip():
            raise Invalid("gpus: a GPU id is empty; use the keys GET /capacity lists", field="gpus")
    repeated = sorted({w for w in wanted if wanted.count(w) > 1})
    if repeated:
        raise Invalid(f"gpus: {', '.join(repeated)} is asked for more than once; list each GPU once", field="gpus")


# The size of an instance created without one, where its node sets none (issue 10, hole 11):
# every instance has cgroup limits and counts in placement.
DEFAULT_CPUS = 1.0
DEFAULT_MEMORY_MB = 1024


def default_size(node: Node) -> tuple[float, int]:
    """(cpus, memory_mb) an instance created on the node without them gets: the node's defaults
    (an administrator's choice), else dmd's; never more than the node has."""
    cpus = node.default_cpus if node.default_cpus is not None else DEFAULT_CPUS
    memory_mb = node.default_memory_mb if node.default_memory_mb is not None else DEFAULT_MEMORY_MB
    facts = node.facts or {}
    cpu_total, mem_total = facts.get("cpu_count"), facts.get("memory_total_mb")
    if isinstance(cpu_total, int | float) and not isinstance(cpu_total, bool) and cpu_total > 0:
        cpus = min(cpus, float(cpu_total))
    if isinstance(mem_total, int | float) and not isinstance(mem_total, bool) and mem_total >= 6:
        memory_mb = min(memory_mb, int(mem_total))
    return cpus, memory_mb


@dataclass
class Usage:
    cpus: float
    memory_mb: int
    gpus_taken: set[str]


async def node_usage(conn: AsyncConnection, node_id: int) -> Usage:
    row = (
        await conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(instances.c.cpus), 0.0),
                      sa.func.coalesce(sa.func.sum(instances.c.memory_mb), 0))
            .where(instances.c.node_id == node_id, LIVE)
        )
    ).one()
    taken = set((await conn.execute(
        sa.select(gpu_allocations.c.gpu_key).where(gpu_allocations.c.node_id == node_id))).scalars())
    return Usage(float(row[0]), int(row[1]), taken)


@dataclass
class Free:
    node: Node
    cpus: float | None
    memory_mb: int | None
    gpus: list[tuple[str, dict[str, Any]]]  # free (key, facts)
    gpus_total: int


async def free_on(conn: AsyncConnection, node: Node) -> Free:
    usage = await node_usage(conn, node.id)
    facts = node.facts or {}
    cpu_total = facts.get("cpu_count")
    mem_total = facts.get("memory_total_mb")
    keys = gpu_keys(node)
    return Free(
        node=node,
        cpus=float(cpu_total) - usage.cpus if isinstance(cpu_total, int | float) else None,
        memory_mb=int(mem_total) - usage.memory_mb if isinstance(mem_total, int | float) else None,
        gpus=capabilities.passable(node, [(k, g) for k, g in keys if k not in usage.gpus_taken]),
        gpus_total=len(keys),
    )


def describe_free(f: Free) -> str:
    cpu = "?" if f.cpus is None else f"{max(f.cpus, 0):g}"
    mem = "?" if f.memory_mb is None else mib_text(max(f.memory_mb, 0))
    return f"{f.node.name}: {cpu} CPUs, {mem} memory, {len(f.gpus)} of {f.gpus_total} GPUs free"


def describe_asked(cpus: float | None, memory_mb: int | None, gpu_count: int, gpu_ids: list[str] | None) -> str:
    """What the request asked for, in the words and units of describe_free."""
    cpu = "the node's default CPUs" if cpus is None else f"{cpus:g} CPUs"
    mem = "the node's default memory" if memory_mb is None else f"{mib_text(memory_mb)} memory"
    gpus = f"GPUs {', '.join(gpu_ids)}" if gpu_ids else f"{gpu_count} GPUs"
    return f"{cpu}, {mem}, {gpus}"


def _fits(f: Free, cpus: float | None, memory_mb: int | None, gpu_count: int,
          gpus: list[tuple[str, dict[str, Any]]] | None, asked: list[str] | None = None) -> str | None:
    """None when the request fits on the node, else why not. ``gpus``: the devices asked for
    by id, resolved on this node (``asked``: the ids, as the user wrote them)."""
    if cpus is not None and f.cpus is not None and cpus > f.cpus + 1e-9:
        return "too few CPUs"
    if memory_mb is not None and f.memory_mb is not None and memory_mb > f.memory_mb:
        return "too little memory"
    if gpus is not None:
        free_keys = {k for k, _ in f.gpus}
        names = asked or [k for k, _ in gpus]
        missing = [name for name, (k, _) in zip(names, gpus, strict=True) if k not in free_keys]
        if missing:
            return f"GPU {', '.join(missing)} is not free here"
    elif gpu_count > len(f.gpus):
        return "too few GPUs"
    return None


async def usable_nodes(conn: AsyncConnection, user: User, *, automatic: bool = False) -> list[Node]:
    """The nodes the user may place on: their own, accepted shares and those an administrator
    provides for everyone (never a share they did not accept). Administrators may name any node;
    DM chooses for them (`automatic`) only among those plus the nodes administrators or the
    installation own, never a plain user's node they did not choose."""
    q = sa.select(nodes).order_by(nodes.c.id)
    if user.is_admin and automatic:
        q = q.where(sa.or_(usable_clause(user), trusted_clause()))
    elif not user.is_admin:
        q = q.where(usable_clause(user))
    return [Node.from_row(r) for r in (await conn.execute(q)).all()]


async def image_usable(conn: AsyncConnection, user: User, node_id: int, ref: str) -> bool:
    q = sa.select(images.c.id).where(images.c.node_id == node_id, images.c.ref == ref)
    if not user.is_admin:
        q = q.where(sa.or_(images.c.public.is_(True), images.c.owner_id == user.id))
    return (await conn.execute(q.limit(1))).first() is not None


@dataclass
class CreateRequest:
    name: str
    image: str
    node_id: int | None
    cpus: float | None
    memory_mb: int | None
    gpu_count: int
    gpu_uuids: list[str] | None
    env: dict[str, str]
    command: list[str] | None
    privileged: bool
    host_network: bool
    ssh: bool = True
    ssh_key_ids: list[int] | None = None  # None: all of the owner's keys, following changes
    port_maps: list[tuple[str, int, int | None]] = field(default_factory=list)  # (protocol, instance, host)


async def _check_quotas(conn: AsyncConnection, owner: User, gpus_wanted: int) -> None:
    # The row lock makes parallel creations of one user queue here.
    row = (await conn.execute(
        sa.select(users.c.instance_limit, users.c.gpu_limit).where(users.c.id == owner.id).with_for_update()
    )).one()
    inst_limit, gpu_limit = row
    if inst_limit is not None:
        have = (await conn.execute(sa.select(sa.func.count()).select_from(instances)
                                   .where(instances.c.owner_id == owner.id, LIVE))).scalar_one()
        if have >= inst_limit:
            raise QuotaExceeded(f"you may have at most {inst_limit} instance(s); delete one or ask an administrator")
    if gpu_limit is not None and gpus_wanted:
        held = (await conn.execute(
            sa.select(sa.func.count()).select_from(gpu_allocations)
            .join(instances, instances.c.id == gpu_allocations.c.instance_id)
            .where(instances.c.owner_id == owner.id)
        )).scalar_one()
        if held + gpus_wanted > gpu_limit:
            raise QuotaExceeded(f"you may hold at most {gpu_limit} GPU(s); you hold {held} and asked for {gpus_wanted}")


async def create(conn: AsyncConnection, owner: User, req: CreateRequest, online: set[int]) -> Instance:
    """Validate, place, reserve and record a new instance (desired: running)."""
    check_name(req.name)
    if req.gpu_uuids is not None:
        check_gpu_ids(req.gpu_uuids)
    gpus_wanted = len(req.gpu_uuids) if req.gpu_uuids is not None else req.gpu_count
    await _check_quotas(conn, owner, gpus_wanted)
    exists = (await conn.execute(sa.select(instances.c.id).where(
        instances.c.owner_id == owner.id, instances.c.name == req.name))).first()
    if exists:
        raise Conflict(f"you already have an instance named {req.name!r}", code="name_taken")

    candidates = await usable_nodes(conn, owner, automatic=req.node_id is None)
    if req.node_id is not None:
        candidates = [n for n in candidates if n.id == req.node_id]
        if not candidates:
            raise Invalid(f"node_id: no node {req.node_id} that you may use", field="node_id")
    # GPUs asked for by id: the one device each names, per node (a node where they name none,
    # or several, is no candidate).
    resolved: dict[int, list[tuple[str, dict[str, Any]]]] = {}
    if req.gpu_uuids:
        refusals: list[GpuRefusal] = []
        for n in candidates:
            r = resolve_gpus(n, req.gpu_uuids)
            if isinstance(r, GpuRefusal):
                refusals.append(r)
            else:
                resolved[n.id] = r
        if req.node_id is not None and refusals:
            raise Invalid(f"gpus: {refusals[0].message}", field="gpus")
        candidates = [n for n in candidates if n.id in resolved]
        if not candidates:
            first = next((r.message for r in refusals if not r.unknown), "these GPUs are not on any node you may use")
            raise Invalid(f"gpus: {first}", field="gpus")

    reasons: list[str] = []
    # The same, for the pages to say in the user's language: (node, kind, the English words).
    refused: list[dict[str, Any]] = []
    unsupported: list[str] = []  # nodes whose runtime cannot do it at all
    chosen: Free | None = None
    size: tuple[float, int] = (0.0, 0)  # what the chosen node gives it
    for node in candidates:
        if node.id not in online:
            reasons.append(f"{node.name}: offline")
            refused.append({"node": node.name, "reason": "offline", "message": reasons[-1]})
            continue
        if node.cordoned:
            reasons.append(f"{node.name}: cordoned")
            refused.append({"node": node.name, "reason": "cordoned", "message": reasons[-1]})
            continue
        asked = resolved.get(node.id, []) if req.gpu_uuids is not None else None
        if why := capabilities.instance_refusal(node, privileged=req.privileged, host_network=req.host_network,
                                                gpus=[g for _, g in asked] if asked is not None else None,
                                                gpu_count=req.gpu_count):
            reasons.append(why)
            refused.append({"node": node.name, "reason": "unsupported", "message": why})
            unsupported.append(why)
            continue
        if not await image_usable(conn, owner, node.id, req.image):
            reasons.append(f"{node.name}: no image {req.image} you may use")
            refused.append({"node": node.name, "reason": "no_image", "image": req.image, "message": reasons[-1]})
            continue
        # Lock the node row: placements on one node queue here, so capacity stays true.
        await conn.execute(sa.select(nodes.c.id).where(nodes.c.id == node.id).with_for_update())
        free = await free_on(conn, node)
        cpus_default, memory_default = default_size(node)
        size = (req.cpus if req.cpus is not None else cpus_default,
                req.memory_mb if req.memory_mb is not None else memory_default)
        why = _fits(free, size[0], size[1], req.gpu_count, asked, req.gpu_uuids)
        if why is None:
            chosen = free
            break
        reasons.append(f"{describe_free(free)} ({why})")
        refused.append({"node": node.name, "reason": "full", "message": reasons[-1], "short": why,
                        "free": {"cpus": free.cpus, "memory_mb": free.memory_mb, "gpus": len(free.gpus),
                                 "gpus_total": free.gpus_total}})
    if chosen is None:
        if not candidates:
            raise NoCapacity("there is no node you may use; ask an administrator to share one")
        wanted = describe_asked(req.cpus, req.memory_mb, req.gpu_count, req.gpu_uuids)
        message = f"no node can take this instance (asked: {wanted}): " + "; ".join(reasons)
        if unsupported and len(unsupported) == len(reasons):  # waiting for capacity would not help
            raise capabilities.Unsupported(message)
        raise NoCapacity(message, extra={"asked": {"cpus": req.cpus, "memory_mb": req.memory_mb,
                                                   "gpus": req.gpu_uuids if req.gpu_uuids else req.gpu_count},
                                         "nodes": refused})

    now = utcnow()
    try:
        async with conn.begin_nested():
            res = await conn.execute(instances.insert().values(
                name=req.name, owner_id=owner.id, node_id=chosen.node.id, image=req.image, cpus=size[0],
                memory_mb=size[1], env=json.dumps(req.env), command=json.dumps(req.command) if req.command
                is not None else None, privileged=req.privileged, host_network=req.host_network,
                ssh_enabled=req.ssh and not req.host_network, ssh_keys_all=True, desired="running",
                status="pending", created_at=now, updated_at=now,
            ))
    except IntegrityError:
        raise Conflict(f"you already have an instance named {req.name!r}", code="name_taken") from None
    pk = res.inserted_primary_key
    assert pk is not None
    instance_id = int(pk[0])
    if req.gpu_uuids is not None:
        keys = [k for k, _ in resolved.get(chosen.node.id, [])]
    else:
        keys = [k for k, _ in chosen.gpus[:req.gpu_count]]
    # What the quota was checked against is what is held: one device per id, each once.
    assert len(set(keys)) == len(keys) == gpus_wanted, (keys, gpus_wanted)
    for key in keys:
        await conn.execute(gpu_allocations.insert().values(
            node_id=chosen.node.id, gpu_key=key, instance_id=instance_id, created_at=now))
    return await get(conn, instance_id)


async def get(conn: AsyncConnection, instance_id: int) -> Instance:
    row = (await conn.execute(sa.select(instances).where(instances.c.id == instance_id))).first()
    if row is None:
        raise NotFound(f"no such instance: {instance_id}")
    return Instance.from_row(row)


async def get_visible(conn: AsyncConnection, user: User, instance_id: int) -> Instance:
    q = sa.select(instances).where(instances.c.id == instance_id)
    if not user.is_admin:
        q = q.where(instances.c.owner_id == user.id)
    row = (await conn.execute(q)).first()
    if row is None:
        raise NotFound(f"no such instance: {instance_id}")
    return Instance.from_row(row)


async def list_visible(conn: AsyncConnection, user: User, *, limit: int, after_id: int | None,
                       node_id: int | None = None) -> list[Instance]:
    q = sa.select(instances).order_by(instances.c.id).limit(limit)
    if not user.is_admin:
        q = q.where(instances.c.owner_id == user.id)
    if after_id is not None:
        q = q.where(instances.c.id > after_id)
    if node_id is not None:
        q = q.where(instances.c.node_id == node_id)
    return [Instance.from_row(r) for r in (await conn.execute(q)).all()]


async def named_visible(conn: AsyncConnection, user: User, name: str, *, limit: int) -> list[Instance]:
    """The instances called `name` that `user` may use (theirs; administrators: everyone's), not
    being deleted; at most `limit` (enough to name the candidates of an ambiguous name)."""
    q = sa.select(instances).where(instances.c.name == name, LIVE).order_by(instances.c.id).limit(limit)
    if not user.is_admin:
        q = q.where(instances.c.owner_id == user.id)
    return [Instance.from_row(r) for r in (await conn.execute(q)).all()]


async def on_node(conn: AsyncConnection, node_id: int) -> list[Instance]:
    rows = (await conn.execute(sa.select(instances).where(instances.c.node_id == node_id)
                               .order_by(instances.c.id))).all()
    return [Instance.from_row(r) for r in rows]


async def gpus_of(conn: AsyncConnection, instance: Instance) -> list[str]:
    return list((await conn.execute(sa.select(gpu_allocations.c.gpu_key)
                                    .where(gpu_allocations.c.instance_id == instance.id)
                                    .order_by(gpu_allocations.c.gpu_key))).scalars())


async def gpus_on_node(conn: AsyncConnection, node_id: int) -> dict[int, list[str]]:
    """The ledger keys each instance on the node holds (one query)."""
    out: dict[int, list[str]] = {}
    q = (sa.select(gpu_allocations.c.instance_id, gpu_allocations.c.gpu_key)
         .where(gpu_allocations.c.node_id == node_id).order_by(gpu_allocations.c.gpu_key))
    for iid, key in (await conn.execute(q)).all():
        out.setdefault(iid, []).append(key)
    return out


@dataclass(frozen=True, slots=True)
class GpuHolder:
    """Who holds one GPU of the ledger: the instance and its owner (None when the user is gone)."""

    node_id: int
    gpu_key: str
    instance_id: int
    instance_name: str
    owner_id: int
    username: str | None


async def gpu_holders(conn: AsyncConnection, node_ids: Collection[int] | None = None) -> list[GpuHolder]:
    """The ledger's entries on these nodes (every node: None) with their instance and owner, in one query."""
    q = (sa.select(gpu_allocations.c.node_id, gpu_allocations.c.gpu_key, instances.c.id, instances.c.name,
                   instances.c.owner_id, users.c.username)
         .join(instances, instances.c.id == gpu_allocations.c.instance_id)
         .outerjoin(users, users.c.id == instances.c.owner_id)
         .order_by(gpu_allocations.c.node_id, gpu_allocations.c.gpu_key))
    if node_ids is not None:
        if not node_ids:
            return []
        q = q.where(gpu_allocations.c.node_id.in_(list(node_ids)))
    return [GpuHolder(*r) for r in (await conn.execute(q)).all()]


async def set_desired(conn: AsyncConnection, instance_id: int, desired: str) -> Instance:
    values: dict[str, Any] = {"desired": desired, "updated_at": utcnow()}
    if desired == "deleted":
        values["status"] = "deleting"
    await conn.execute(instances.update().where(instances.c.id == instance_id).values(**values))
    return await get(conn, instance_id)


async def set_status(conn: AsyncConnection, instance_id: int, status: str, message: str | None = None,
                     container_id: str | None = None) -> None:
    values: dict[str, Any] = {"status": status, "status_message": message, "updated_at": utcnow()}
    if container_id is not None:
        values["container_id"] = container_id
    q = instances.update().where(instances.c.id == instance_id)
    if status != "deleting":
        # A delete requested meanwhile wins: a late "running" must not hide "deleting".
        q = q.where(instances.c.desired != "deleted")
    await conn.execute(q.values(**values))


async def forget(conn: AsyncConnection, instance_id: int) -> None:
    """The container is gone: drop the row (its GPU allocations and port maps go with it)."""
    await conn.execute(gpu_allocations.delete().where(gpu_allocations.c.instance_id == instance_id))
    await conn.execute(port_maps.delete().where(port_maps.c.instance_id == instance_id))
    await conn.execute(instance_ssh_keys.delete().where(instance_ssh_keys.c.instance_id == instance_id))
    await conn.execute(instances.delete().where(instances.c.id == instance_id))


async def count_on_node(conn: AsyncConnection, node_id: int) -> int:
    return int((await conn.execute(sa.select(sa.func.count()).select_from(instances)
                                   .where(instances.c.node_id == node_id))).scalar_one())


async def count_of_user(conn: AsyncConnection, user_id: int) -> int:
    return int((await conn.execute(sa.select(sa.func.count()).select_from(instances)
                                   .where(instances.c.owner_id == user_id))).scalar_one())
