"""Have each node's agent apply the port maps in the ledger (one of dmd's parts, built in dmd.app).

The agent gets the node's *full* set of maps each time (``ports.apply``), so a lost reply, a
restart of either side or a reordering can never leave a stale rule behind: the latest set
wins. :class:`PortApplier` serialises the pushes per node and coalesces requests that queue
behind a push, so a hundred parallel additions cost a handful of pushes, not a hundred.
"""

from __future__ import annotations

import asyncio
import logging

from agent import protocol as p
from dmd.agents.hub import AgentFailed, AgentTimeout, Hub, NodeOffline
from dmd.db import Database
from dmd.queries import port_maps as svc

log = logging.getLogger("dmd.ports")

APPLY_TIMEOUT_S = 30.0


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
