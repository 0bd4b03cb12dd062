"""Port maps: record in the ledger, audit, and have the agent apply (through dm.ports, the
PortApplier); list and read them."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from dmd.core import Dm
from dmd.errors import Conflict, NotFound
from dmd.models import Actor, Instance, Node, PortMap, User
from dmd.queries import audit
from dmd.queries import instances as inst_svc
from dmd.queries import nodes as node_svc
from dmd.queries import port_maps as svc
from dmd.queries import users as user_svc

_BUSY_RETRIES = 3

# What the forms and pages say about pools and limits (the ledger's own rules).
PROTOCOLS = svc.PROTOCOLS
MAX_MAPS_PER_INSTANCE = svc.MAX_MAPS_PER_INSTANCE
pools_of = svc.pools_of
describe_pool = svc.describe_pool


async def add(dm: Dm, actor: Actor, user: User, instance_id: int, protocol: str, instance_port: int,
              host_port: int | None = None) -> tuple[PortMap, Node]:
    """Map a host port of the instance's node to `instance_port`; forwarding by the time this
    returns when the node is online and the instance runs (state "active"). The map and its node."""
    db, applier = dm.db, dm.ports

    async def record(conn: AsyncConnection) -> tuple[Instance, Node, PortMap]:
        inst = await inst_svc.get_visible(conn, user, instance_id)
        node = await node_svc.get(conn, inst.node_id)
        m = await svc.allocate(conn, inst, node, protocol, instance_port, host_port)
        await audit.record(conn, actor, "port_map.create", "port_map", m.id, instance_id=inst.id,
                           node_id=node.id, protocol=protocol, host_port=m.host_port, instance_port=instance_port)
        return inst, node, m

    for _ in range(_BUSY_RETRIES):
        inst, node, m = await db.run(record)  # again if MariaDB picks it as a deadlock victim
        await applier.apply(inst.node_id)
        async with db.read() as conn:  # the common case reads only (no write lock on SQLite)
            m = await svc.get(conn, m.id)
        if not (m.state == "failed" and (m.message or "").startswith("port_busy")):
            return m, node
        async with db.begin() as conn:
            # A host program took the port after the agent last reported: nothing is kept,
            # and an automatic pick tries again (the agent's reply updated the busy ports).
            await svc.delete(conn, m.id)
            await audit.record(conn, actor, "port_map.delete", "port_map", m.id, reason="port_busy")
        await applier.apply(inst.node_id)
        if host_port is not None:
            raise Conflict(f"host port {host_port}/{protocol} is in use by a program on node {node.name}",
                           code="port_busy")
    raise Conflict(f"node {node.name}'s free {protocol} ports keep turning out busy; try again", code="port_busy")


async def remove(dm: Dm, actor: Actor, user: User, map_id: int) -> PortMap:
    """Delete a map: its host port stops taking new connections and is free again."""
    async with dm.db.begin() as conn:
        m = await svc.get_visible(conn, user, map_id)
        await svc.delete(conn, m.id)
        await audit.record(conn, actor, "port_map.delete", "port_map", m.id, instance_id=m.instance_id,
                           node_id=m.node_id, protocol=m.protocol, host_port=m.host_port)
    await dm.ports.apply(m.node_id)
    return m


async def list_visible(dm: Dm, user: User, *, limit: int, after_id: int | None = None,
                       instance_id: int | None = None, node_id: int | None = None) -> list[PortMap]:
    async with dm.db.read() as conn:
        return await svc.list_visible(conn, user, limit=limit, after_id=after_id, instance_id=instance_id,
                                      node_id=node_id)


async def get_visible(dm: Dm, user: User, map_id: int) -> PortMap:
    async with dm.db.read() as conn:
        return await svc.get_visible(conn, user, map_id)


async def node_of_instance(dm: Dm, user: User, instance_id: int) -> Node:
    """The node of one of the user's instances (for the pool a refused map's message names)."""
    async with dm.db.read() as conn:
        return await node_svc.get(conn, (await inst_svc.get_visible(conn, user, instance_id)).node_id)


@dataclass(frozen=True, slots=True)
class Overview:
    """The port maps page: a page of maps, the instances a map may be added to, and their names."""

    maps: list[PortMap]
    choices: list[Instance]  # the user's live instances not on the host's network
    nodes: dict[int, Node]
    owners: dict[int, str]  # usernames, for administrators


async def overview(dm: Dm, user: User, *, limit: int, after_id: int | None, max_choices: int) -> Overview:
    async with dm.db.read() as conn:
        maps = await svc.list_visible(conn, user, limit=limit, after_id=after_id)
        choices = [i for i in await inst_svc.list_visible(conn, user, limit=max_choices, after_id=None)
                   if i.desired != "deleted" and not i.host_network]
        nodes: dict[int, Node] = {}
        for nid in {m.node_id for m in maps} | {i.node_id for i in choices}:
            with contextlib.suppress(NotFound):
                nodes[nid] = await node_svc.get(conn, nid)
        owners: dict[int, str] = {}
        if user.is_admin:
            for uid in {m.owner_id for m in maps if m.owner_id is not None} | {i.owner_id for i in choices}:
                u = await user_svc.find(conn, uid)
                if u is not None:
                    owners[uid] = u.username
    return Overview(maps, choices, nodes, owners)
