"""The port ledger: which host port of which node forwards to which instance port.

A row holds one (node, protocol, host port) exclusively; the database's unique constraint on
those three columns, not a check in Python, is what makes double allocation impossible under
any concurrency. A free port is picked at random from the node's pool (as its agent reported
it), minus the ports in the ledger and the ports host programs already listen on; a collision
with a parallel request is caught at insert time and another port is tried.

The forwarding itself is the agent's (see dmd.port_applier and agent/ports/).
"""

from __future__ import annotations

import json
import random
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from agent.protocol import Listening, PortsReply
from dmd.db.schema import instances, nodes, port_maps, users
from dmd.db.types import utcnow
from dmd.errors import ApiError, Conflict, Invalid, NotFound
from dmd.models import Instance, Node, PortMap, User

PROTOCOLS = ("tcp", "udp")
DEFAULT_RANGE = (20000, 29999)
DEFAULT_POOLS: dict[str, list[tuple[int, int]]] = {p: [DEFAULT_RANGE] for p in PROTOCOLS}
MAX_MAPS_PER_INSTANCE = 100
_PICK_TRIES = 20


class PoolExhausted(ApiError):
    status, code = 409, "pool_exhausted"


class PortMapLimit(ApiError):
    status, code = 403, "quota_exceeded"


# --- pools ----------------------------------------------------------------------------

def pools_of(node: Node) -> dict[str, list[tuple[int, int]]]:
    """The node's pools as its agent reported them (facts.ports.pools); the default pools
    (20000-29999 for each protocol) for an agent that reports none."""
    reported = ((node.facts or {}).get("ports") or {}).get("pools")
    if not isinstance(reported, dict):
        return dict(DEFAULT_POOLS)
    out: dict[str, list[tuple[int, int]]] = {}
    for proto in PROTOCOLS:
        ranges = []
        for r in reported.get(proto) or []:
            if (isinstance(r, list | tuple) and len(r) == 2 and all(isinstance(x, int) for x in r)
                    and 1 <= r[0] <= r[1] <= 65535):
                ranges.append((int(r[0]), int(r[1])))
        out[proto] = ranges
    return out


def describe_pool(ranges: list[tuple[int, int]]) -> str:
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in ranges) or "none"


def in_pool(ranges: list[tuple[int, int]], port: int) -> bool:
    return any(a <= port <= b for a, b in ranges)


async def busy_ports(conn: AsyncConnection, node_id: int) -> dict[str, set[int]]:
    """Pool ports host programs listen on, as the agent last said (never handed out)."""
    raw = (await conn.execute(sa.select(nodes.c.busy_ports).where(nodes.c.id == node_id))).scalar()
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        data = {}
    return {p: {int(x) for x in data.get(p) or [] if isinstance(x, int)} for p in PROTOCOLS}


async def set_busy_ports(conn: AsyncConnection, node_id: int, listening: Listening) -> None:
    clean = {"tcp": sorted(set(listening.tcp)), "udp": sorted(set(listening.udp))}
    await conn.execute(nodes.update().where(nodes.c.id == node_id).values(busy_ports=json.dumps(clean)))


# --- queries --------------------------------------------------------------------------

def _joined() -> sa.Select[Any]:
    return (sa.select(port_maps, instances.c.name.label("instance_name"), instances.c.owner_id,
                      nodes.c.name.label("node_name"))
            .join(instances, instances.c.id == port_maps.c.instance_id)
            .join(nodes, nodes.c.id == port_maps.c.node_id))


async def get(conn: AsyncConnection, map_id: int) -> PortMap:
    row = (await conn.execute(_joined().where(port_maps.c.id == map_id))).first()
    if row is None:
        raise NotFound(f"no such port map: {map_id}")
    return PortMap.from_row(row)


async def get_visible(conn: AsyncConnection, user: User, map_id: int) -> PortMap:
    """A map of one of the user's instances (any, for administrators); others are NotFound."""
    q = _joined().where(port_maps.c.id == map_id)
    if not user.is_admin:
        q = q.where(instances.c.owner_id == user.id)
    row = (await conn.execute(q)).first()
    if row is None:
        raise NotFound(f"no such port map: {map_id}")
    return PortMap.from_row(row)


async def list_visible(conn: AsyncConnection, user: User, *, limit: int, after_id: int | None = None,
                       instance_id: int | None = None, node_id: int | None = None) -> list[PortMap]:
    q = _joined().order_by(port_maps.c.id).limit(limit)
    if not user.is_admin:
        q = q.where(instances.c.owner_id == user.id)
    if after_id is not None:
        q = q.where(port_maps.c.id > after_id)
    if instance_id is not None:
        q = q.where(port_maps.c.instance_id == instance_id)
    if node_id is not None:
        q = q.where(port_maps.c.node_id == node_id)
    return [PortMap.from_row(r) for r in (await conn.execute(q)).all()]


async def of_instance(conn: AsyncConnection, instance_id: int) -> list[PortMap]:
    q = _joined().where(port_maps.c.instance_id == instance_id).order_by(port_maps.c.id)
    return [PortMap.from_row(r) for r in (await conn.execute(q)).all()]


async def for_node(conn: AsyncConnection, node_id: int) -> list[PortMap]:
    """The maps the node's agent should forward: those of instances not being deleted."""
    q = (sa.select(port_maps).join(instances, instances.c.id == port_maps.c.instance_id)
         .where(port_maps.c.node_id == node_id, instances.c.desired != "deleted").order_by(port_maps.c.id))
    return [PortMap.from_row(r) for r in (await conn.execute(q)).all()]


# --- changes --------------------------------------------------------------------------

async def allocate(conn: AsyncConnection, inst: Instance, node: Node, protocol: str, instance_port: int,
                   host_port: int | None = None) -> PortMap:
    """Record a new map for a live instance; the host port is the one asked for (it must be in
    the pool and free) or a free one of the pool."""
    if protocol not in PROTOCOLS:
        raise Invalid(f"protocol: use tcp or udp, not {protocol!r}", field="protocol")
    if not 1 <= instance_port <= 65535:
        raise Invalid("instance_port: use 1-65535", field="instance_port")
    if inst.desired == "deleted":
        raise Conflict("this instance is being deleted", code="deleting")
    if inst.host_network:
        raise Conflict("this instance uses the host's network: its ports are the node's own and need no map",
                       code="host_network")
    # Parallel requests of one owner queue on the owner's row (then on the instance's), so that
    # the owner's count of maps, the instance's and the ports it has mapped stay true.
    await _check_owner_ceiling(conn, inst.owner_id)
    await conn.execute(sa.select(instances.c.id).where(instances.c.id == inst.id).with_for_update())
    count = (await conn.execute(sa.select(sa.func.count()).select_from(port_maps)
                                .where(port_maps.c.instance_id == inst.id))).scalar_one()
    if count >= MAX_MAPS_PER_INSTANCE:
        raise Conflict(f"an instance may have at most {MAX_MAPS_PER_INSTANCE} port maps", code="too_many_maps")
    same = (await conn.execute(sa.select(port_maps.c.host_port).where(
        port_maps.c.instance_id == inst.id, port_maps.c.protocol == protocol,
        port_maps.c.instance_port == instance_port))).scalar()
    if same is not None:
        raise Conflict(f"port {instance_port}/{protocol} of this instance is already mapped to host port {same}",
                       code="already_mapped")
    ranges = pools_of(node).get(protocol) or []
    busy = (await busy_ports(conn, node.id))[protocol]
    if host_port is not None:
        if not in_pool(ranges, host_port):
            raise Invalid(f"host_port: {host_port} is not in node {node.name}'s {protocol} pool "
                          f"({describe_pool(ranges)})", field="host_port", code="out_of_pool")
        if host_port in busy:
            raise Conflict(f"host port {host_port}/{protocol} is in use by a program on node {node.name}",
                           code="port_busy")
        try:
            return await _insert(conn, inst, protocol, host_port, instance_port)
        except IntegrityError:
            raise Conflict(f"host port {host_port}/{protocol} of node {node.name} is already taken",
                           code="port_taken") from None
    for _ in range(_PICK_TRIES):
        taken = set((await conn.execute(sa.select(port_maps.c.host_port).where(
            port_maps.c.node_id == node.id, port_maps.c.protocol == protocol))).scalars())
        port = _pick(ranges, taken | busy)
        if port is None:
            raise PoolExhausted(f"node {node.name} has no free {protocol} port left in its pool "
                                f"({describe_pool(ranges)})")
        try:
            return await _insert(conn, inst, protocol, port, instance_port)
        except IntegrityError:
            continue  # a parallel request took it first: pick again
    raise Conflict("too many parallel port requests on this node; try again", code="busy")


async def _check_owner_ceiling(conn: AsyncConnection, owner_id: int) -> None:
    """The owner's port_map_limit (None: no limit), counted under the owner's row lock: on
    PostgreSQL and MariaDB parallel creations wait here for each other's commit and count it;
    on SQLite the write transaction (BEGIN IMMEDIATE) already runs alone."""
    limit = (await conn.execute(
        sa.select(users.c.port_map_limit).where(users.c.id == owner_id).with_for_update()
    )).scalar()
    if limit is None:
        return
    held = (await conn.execute(
        sa.select(sa.func.count()).select_from(port_maps)
        .join(instances, instances.c.id == port_maps.c.instance_id)
        .where(instances.c.owner_id == owner_id)
    )).scalar_one()
    if held >= limit:
        raise PortMapLimit(f"you may hold at most {limit} port map(s) at once; delete one or ask an administrator "
                           "to raise your port map limit")


def _pick(ranges: list[tuple[int, int]], excluded: set[int]) -> int | None:
    """A random free port of the pool, without building the whole pool unless it is nearly full."""
    total = sum(b - a + 1 for a, b in ranges)
    if total == 0:
        return None
    for _ in range(32):
        n = random.randrange(total)
        for a, b in ranges:
            if n <= b - a:
                if a + n not in excluded:
                    return a + n
                break
            n -= b - a + 1
    free = [p for a, b in ranges for p in range(a, b + 1) if p not in excluded]
    return random.choice(free) if free else None


async def _insert(conn: AsyncConnection, inst: Instance, protocol: str, host_port: int,
                  instance_port: int) -> PortMap:
    now = utcnow()
    async with conn.begin_nested():
        res = await conn.execute(port_maps.insert().values(
            node_id=inst.node_id, instance_id=inst.id, protocol=protocol, host_port=host_port,
            instance_port=instance_port, state="pending", message=None, created_at=now, updated_at=now))
    pk = res.inserted_primary_key
    assert pk is not None
    return await get(conn, int(pk[0]))


async def delete(conn: AsyncConnection, map_id: int) -> None:
    await conn.execute(port_maps.delete().where(port_maps.c.id == map_id))


async def record_apply(conn: AsyncConnection, node_id: int, sent: list[PortMap], reply: PortsReply) -> None:
    """Store what the agent said of each map it was sent, and the ports host programs hold."""
    active, waiting = set(reply.active), set(reply.waiting)
    failed = {f.id: f for f in reply.failed}
    now = utcnow()
    for m in sent:
        if m.id in failed:
            f = failed[m.id]
            state, message = "failed", f"{f.code}: {f.message}"[:1000]
        elif m.id in active:
            state, message = "active", None
        elif m.id in waiting:
            state, message = "waiting", None
        else:
            state, message = "pending", None
        if (state, message) != (m.state, m.message):
            await conn.execute(port_maps.update().where(port_maps.c.id == m.id)
                               .values(state=state, message=message, updated_at=now))
    await set_busy_ports(conn, node_id, reply.listening)


async def mark_all(conn: AsyncConnection, node_id: int, state: str, message: str | None) -> None:
    await conn.execute(port_maps.update().where(port_maps.c.node_id == node_id)
                       .values(state=state, message=message, updated_at=utcnow()))
