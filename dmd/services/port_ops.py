"""Port maps that take several steps: record in the ledger, audit, and have the agent apply.

The agent gets the node's *full* set of maps each time (``ports.apply``), so a lost reply, a
restart of either side or a reordering can never leave a stale rule behind: the latest set
wins. :class:`PortApplier` serialises the pushes per node and coalesces requests that queue
behind a push, so a hundred parallel additions cost a handful of pushes, not a hundred.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncConnection

from agent import protocol as p
from dmd.agents.hub import AgentFailed, AgentTimeout, Hub, NodeOffline
from dmd.db import Database
from dmd.errors import Conflict
from dmd.models import Instance, Node, User
from dmd.services import audit
from dmd.services import instances as inst_svc
from dmd.services import nodes as node_svc
from dmd.services import port_maps as svc
from dmd.services.audit import Actor

log = logging.getLogger("dmd.ports")

APPLY_TIMEOUT_S = 30.0
_BUSY_RETRIES = 3


class PortApplier:
    """Pushes each node's full set of port maps to its agent and records what it answered."""

    def __init__(self, db: Database, hub: Hub) -> None:
        self.db = db
        self.hub = hub
        self._locks: dict[int, asyncio.Lock] = {}
        self._wanted: dict[int, int] = {}
        self._done: dict[int, int] = {}
        self._ok: dict[int, bool] = {}
        # Nodes whose agent took an empty set on its current link: another empty set is a no-op
        # (most reconcile rounds on a node without maps), so it is not sent.
        self._empty: set[int] = set()
        hub.connect_listeners.append(lambda node_id, _hello: self._empty.discard(node_id))

    async def apply(self, node_id: int) -> bool:
        """Bring the agent up to the ledger as it is now; True when the agent took the set.

        A caller whose change committed before this call is covered by any push that starts
        after it: callers queued behind one push share the next one."""
        gen = self._wanted[node_id] = self._wanted.get(node_id, 0) + 1
        async with self._locks.setdefault(node_id, asyncio.Lock()):
            if self._done.get(node_id, 0) >= gen:
                return self._ok.get(node_id, False)
            target = self._wanted[node_id]
            ok = await self._push(node_id)
            self._done[node_id], self._ok[node_id] = target, ok
            return ok

    async def _push(self, node_id: int) -> bool:
        if not self.hub.is_online(node_id):
            return False
        async with self.db.read() as conn:
            maps = await svc.for_node(conn, node_id)
        if not maps and node_id in self._empty:
            return True
        self._empty.discard(node_id)
        try:
            reply = await self.hub.ask(node_id, p.PortsApply([m.to_wire() for m in maps]), timeout=APPLY_TIMEOUT_S)
        except AgentFailed as e:
            unknown = e.extra.get("agent_code") == "unknown_type"
            why = "this node's agent cannot forward ports; update dmc" if unknown else e.message
            log.warning("node %s: port maps not applied: %s", node_id, why)
            async with self.db.begin() as conn:
                await svc.mark_all(conn, node_id, "failed", why)
            return False
        except (NodeOffline, AgentTimeout) as e:
            log.info("node %s: port maps wait for the node: %s", node_id, e.message)
            return False
        async with self.db.begin() as conn:
            await svc.record_apply(conn, node_id, maps, reply)
        if not maps:
            self._empty.add(node_id)
        return True


async def add(db: Database, applier: PortApplier, actor: Actor, user: User, instance_id: int, protocol: str,
              instance_port: int, host_port: int | None = None) -> svc.PortMap:
    """Map a host port of the instance's node to `instance_port`; forwarding by the time this
    returns when the node is online and the instance runs (state "active")."""
    async def record(conn: AsyncConnection) -> tuple[Instance, Node, svc.PortMap]:
        inst = await inst_svc.get_visible(conn, user, instance_id)
        node = await node_svc.get(conn, inst.node_id)
        m = await svc.allocate(conn, inst, node, protocol, instance_port, host_port)
        await audit.record(conn, actor, "port_map.create", "port_map", m.id, instance_id=inst.id,
                           node_id=node.id, protocol=protocol, host_port=m.host_port, instance_port=instance_port)
        return inst, node, m

    for _ in range(_BUSY_RETRIES):
        inst, node, m = await db.run(record)  # again if MariaDB picks it as a deadlock victim
        await applier.apply(inst.node_id)
        async with db.begin() as conn:
            m = await svc.get(conn, m.id)
            if not (m.state == "failed" and (m.message or "").startswith("port_busy")):
                return m
            # A host program took the port after the agent last reported: nothing is kept,
            # and an automatic pick tries again (the agent's reply updated the busy ports).
            await svc.delete(conn, m.id)
            await audit.record(conn, actor, "port_map.delete", "port_map", m.id, reason="port_busy")
        await applier.apply(inst.node_id)
        if host_port is not None:
            raise Conflict(f"host port {host_port}/{protocol} is in use by a program on node {node.name}",
                           code="port_busy")
    raise Conflict(f"node {node.name}'s free {protocol} ports keep turning out busy; try again", code="port_busy")


async def remove(db: Database, applier: PortApplier, actor: Actor, user: User, map_id: int) -> svc.PortMap:
    """Delete a map: its host port stops taking new connections and is free again."""
    async with db.begin() as conn:
        m = await svc.get_visible(conn, user, map_id)
        await svc.delete(conn, m.id)
        await audit.record(conn, actor, "port_map.delete", "port_map", m.id, instance_id=m.instance_id,
                           node_id=m.node_id, protocol=m.protocol, host_port=m.host_port)
    await applier.apply(m.node_id)
    return m
