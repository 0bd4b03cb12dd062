"""Converge each node to the desired state in the database: plan, then apply.

One worker per node at a time: a kick while it runs marks the node dirty and the worker goes
round again, so requests never race on one node. Triggers: a user action, an agent
(re)connecting (its hello carries a full snapshot), and container events.

Each round is planned without I/O (:mod:`dmd.reconciler.plan`) from the node, its instances,
the GPU ledger and the containers the agent last reported, and run by :mod:`.round`; port maps
and SSH are features of a round (:mod:`.features`). Every request is idempotent and keyed by
the instance id (a container label), so a lost reply, an agent restart in the middle of a
create or a dmd restart end in exactly one container.

A container that exits by itself while its agent is connected is recorded as stopped, and its
desired state becomes stopped too, so no later round restarts it behind the user's back. A
container found stopped when its node (re)connects while it should run (the node rebooted,
say) is started again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from agent import protocol as p
from dmd.agents.handshake import Handshake
from dmd.agents.hub import AgentFailed, AgentTimeout, Hub, NodeOffline
from dmd.db import Database
from dmd.errors import NotFound
from dmd.models import Instance
from dmd.port_applier import PortApplier
from dmd.queries import images as image_svc
from dmd.queries import instances as inst_svc
from dmd.queries import port_maps as port_svc
from dmd.reconciler.features import Feature, Ports, Ssh
from dmd.reconciler.plan import status_of
from dmd.reconciler.round import DbStore, Executor, KnownContainers

__all__ = ["Reconciler"]

log = logging.getLogger("dmd.reconciler")

RESTART_TIMEOUT_S = 120.0


class Reconciler:
    def __init__(self, db: Database, hub: Hub, ports: PortApplier) -> None:
        self.db = db
        self.hub = hub
        self.installation_id = hub.installation_id
        self._dirty: set[int] = set()
        self._workers: dict[int, asyncio.Task[None]] = {}
        self.locks: dict[int, asyncio.Lock] = {}
        self.ports = ports
        self.features: list[Feature] = [Ports(self.ports), Ssh(db, hub)]  # in this order: see features.py
        self.known = KnownContainers()
        self.executor = Executor(hub, DbStore(db), self.features, self.known, self.installation_id,
                                 on_forget=self._forgotten, on_applied=self._applied)
        # When each instance's desired state last changed (monotonic): an event older than
        # that says nothing about what the user wants now.
        self._desired_at: dict[int, float] = {}
        # When the desired state each instance's last round applied was read (monotonic): a
        # change after that waits for a round still to come.
        self._applied_at: dict[int, float] = {}
        hub.connect_listeners.append(self._on_connect)
        hub.event_listeners.append(self._on_event)

    def desired_changed(self, instance_id: int) -> None:
        """Someone just changed the instance's desired state (call before kicking its node)."""
        self._desired_at[instance_id] = time.monotonic()

    def lock(self, node_id: int) -> asyncio.Lock:
        return self.locks.setdefault(node_id, asyncio.Lock())

    def kick(self, node_id: int) -> None:
        self._dirty.add(node_id)
        if node_id not in self._workers:
            task = asyncio.get_running_loop().create_task(self._work(node_id))
            self._workers[node_id] = task

    async def idle(self) -> None:
        """Wait until no node has work queued (for tests and shutdown)."""
        while self._workers:
            await asyncio.gather(*list(self._workers.values()), return_exceptions=True)

    async def stop(self) -> None:
        for t in self._workers.values():
            t.cancel()
        await asyncio.gather(*self._workers.values(), return_exceptions=True)

    async def _work(self, node_id: int) -> None:
        try:
            while node_id in self._dirty:
                self._dirty.discard(node_id)
                try:
                    async with self.lock(node_id):
                        await self.reconcile(node_id)
                except Exception:
                    log.exception("reconciling node %s failed", node_id)
        finally:
            self._workers.pop(node_id, None)

    async def reconcile(self, node_id: int) -> None:
        """One round for the node (the caller holds its lock)."""
        await self.executor.round(node_id)

    def _forgotten(self, node_id: int, instance_id: int) -> None:
        self._desired_at.pop(instance_id, None)
        self._applied_at.pop(instance_id, None)

    def _applied(self, instance_ids: Sequence[int], read_at: float) -> None:
        for i in instance_ids:
            self._applied_at[i] = read_at

    async def restart(self, inst: Instance) -> None:
        async with self.lock(inst.node_id):
            reply = await self.hub.ask(inst.node_id, p.InstanceRestart(inst.id), timeout=RESTART_TIMEOUT_S)
            self.known.put(inst.node_id, inst.id, reply.container)
            status, message = status_of(reply.container)
            async with self.db.begin() as conn:
                await inst_svc.set_status(conn, inst.id, status, message)

    # --- hub listeners -----------------------------------------------------------------
    def _on_connect(self, node_id: int, shake: Handshake) -> None:
        state = shake.state
        self.known.reset(node_id, self.installation_id, state.containers)
        for f in self.features:
            f.connected(node_id, shake)
        if state.images is not None:
            self.hub.spawn(self._sync_images(node_id, state.images))
        if state.listening is not None:
            self.hub.spawn(self._busy_ports(node_id, state.listening))
        self.kick(node_id)

    async def _busy_ports(self, node_id: int, listening: p.Listening) -> None:
        async with self.db.begin() as conn:
            await port_svc.set_busy_ports(conn, node_id, listening)

    async def _sync_images(self, node_id: int, reported: list[p.ImageInfo]) -> None:
        async with self.db.begin() as conn:
            await image_svc.sync_inventory(conn, node_id, reported)

    async def refresh_images(self, node_id: int) -> None:
        reply = await self.hub.ask(node_id, p.ImagesList(), timeout=60)
        await self._sync_images(node_id, reply.images)

    def _on_event(self, node_id: int, event: p.EventBody) -> None:
        if isinstance(event, p.ContainerEvent):
            self.hub.spawn(self._container_event(node_id, event, time.monotonic()))
        elif isinstance(event, p.ImagesChanged):
            self.hub.spawn(self._refresh_quietly(node_id))

    async def _refresh_quietly(self, node_id: int) -> None:
        try:
            await self.refresh_images(node_id)
        except Exception as e:
            log.info("node %s: image inventory refresh failed: %s", node_id, e)

    async def _container_event(self, node_id: int, event: p.ContainerEvent, received: float) -> None:
        """Re-read the container under the node's lock rather than trusting the event: events
        race with the worker's own commands (a restart emits die, then start)."""
        instance_id = event.instance_id
        if instance_id is None or event.action not in ("start", "die", "oom", "stop"):
            return
        async with self.lock(node_id):
            known = self.known.of(node_id).get(instance_id)
            if (event.action == "start" and known is not None and known.id == event.container_id
                    and known.state == "running"):
                return  # the start of a request's own (its reply said so, and the round recorded it)
            async with self.db.read() as conn:
                try:
                    inst = await inst_svc.get(conn, instance_id)
                except NotFound:
                    return
            if inst.node_id != node_id or inst.desired == "deleted":
                return
            if self._desired_at.get(inst.id, 0.0) > min(received, self._applied_at.get(inst.id, 0.0)):
                # The user acted after this event arrived (a stop's "die" handled after the next
                # start, say), or after the last round that converged the instance (the event
                # arrived late, before the round the start asked for): that round converges; the
                # event must not undo the action.
                return
            try:
                reply = await self.hub.ask(node_id, p.InstanceInspect(inst.id), timeout=30)
            except (NodeOffline, AgentTimeout, AgentFailed):
                return
            self.known.put(node_id, inst.id, reply.container)
            if reply.container is None:
                return
            status, message = status_of(reply.container)
            async with self.db.begin() as conn:
                if status != "running" and inst.desired == "running":
                    # It stopped by itself: DM leaves it stopped until someone starts it (or
                    # its node comes back from a restart, see the module docstring).
                    await inst_svc.set_desired(conn, inst.id, "stopped")
                await inst_svc.set_status(conn, inst.id, status, message)
            if status != inst.status:
                # Its maps' states follow (the agent re-applied them on the same event).
                await self.ports.apply(node_id)

