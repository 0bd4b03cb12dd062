"""Converge each node to the desired state in the database.

One worker per node at a time: a kick while it runs marks the node dirty and the worker
goes round again, so requests never race on one node. Triggers: a user action, an agent
(re)connecting (its hello carries a full snapshot), and container events.

Every command is idempotent and keyed by the instance id (a container label), so a lost
reply, an agent restart in the middle of a create or a dmd restart end in exactly one
container: the next round's `instance.ensure` finds the container and adopts it.

A container that exits by itself while its agent is connected is recorded as stopped, and
its desired state becomes stopped too, so no later round restarts it behind the user's back.
A container found stopped when its node (re)connects while it should run (the node rebooted,
say) is started again.

Each round ends with the node's full set of port maps (dmd.services.port_ops) and then, for
every running instance, its SSH keys (``instance.access``), so an instance says "ready" only
once its port 22 is forwarded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web

from agent import protocol as p
from dmd.agents.hub import AgentFailed, AgentTimeout, Hub, NodeOffline
from dmd.db import Database
from dmd.errors import NotFound
from dmd.models import Instance, Node
from dmd.services import images as image_svc
from dmd.services import instance_access as access
from dmd.services import instances as inst_svc
from dmd.services import nodes as node_svc
from dmd.services import port_maps as port_svc
from dmd.services.port_ops import PortApplier

log = logging.getLogger("dmd.reconciler")

ENSURE_TIMEOUT_S = 300.0
ACCESS_TIMEOUT_S = 60.0


def status_of(container: dict[str, Any]) -> tuple[str, str | None]:
    state = container.get("state")
    if state in ("running", "paused", "restarting"):
        # Paused only while it is committed to an image (DM never pauses otherwise).
        return "running", None
    code = container.get("exit_code")
    if container.get("oom_killed"):
        return "stopped", "killed: out of memory"
    if container.get("error"):
        return "error", str(container["error"])
    if state in ("exited", "dead") and code not in (None, 0):
        return "stopped", f"exited with code {code}"
    return "stopped", None


def build_spec(node: Node, inst: Instance, gpu_keys: list[str], installation_id: str) -> dict[str, Any]:
    by_key = dict(inst_svc.gpu_keys(node))
    gpus = []
    for key in gpu_keys:
        g = by_key.get(key)
        if g is None:
            continue
        gpus.append({"vendor": g.get("vendor", "nvidia"), "uuid": g.get("uuid"), "index": g.get("index"),
                     "dri_card": g.get("dri_card"), "dri_render": g.get("dri_render")})
    return {
        "instance_id": inst.id, "node_id": node.id,
        "name": inst_svc.container_name(inst.id, inst.name, installation_id),
        "image": inst.image, "command": inst.command, "env": inst.env, "cpus": inst.cpus,
        "memory_mb": inst.memory_mb, "gpus": gpus,
        "labels": {"dm.owner": str(inst.owner_id), "dm.installation": installation_id},
        "privileged": inst.privileged, "host_network": inst.host_network, "hostname": inst.name[:63],
    }


class Reconciler:
    def __init__(self, db: Database, hub: Hub) -> None:
        self.db = db
        self.hub = hub
        self.installation_id = hub.installation_id
        self._dirty: set[int] = set()
        self._workers: dict[int, asyncio.Task[None]] = {}
        self.locks: dict[int, asyncio.Lock] = {}
        self.ports = PortApplier(db, hub)
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
        if not self.hub.is_online(node_id):
            return
        read_at = time.monotonic()
        async with self.db.read() as conn:
            try:
                node = await node_svc.get(conn, node_id)
            except NotFound:
                return  # deleted meanwhile
            rows = await inst_svc.on_node(conn, node_id)
            gpus = {i.id: await inst_svc.gpus_of(conn, i) for i in rows}
        running: list[Instance] = []
        for inst in rows:
            try:
                if await self._converge(node, inst, gpus[inst.id]):
                    running.append(inst)
                self._applied_at[inst.id] = read_at
            except (NodeOffline, AgentTimeout) as e:
                log.info("node %s: %s; instance %s waits for the node", node_id, e.message, inst.id)
                return
        # The full set of port maps, after the containers (a started container has its address),
        # then SSH: by the time an instance says "ready", its port 22 is forwarded.
        await self.ports.apply(node_id)
        for inst in running:
            try:
                await self.push_access(node_id, inst)
            except (NodeOffline, AgentTimeout) as e:
                log.info("node %s: %s; SSH of instance %s waits for the node", node_id, e.message, inst.id)
                return
        try:
            reply = await self.hub.call(node_id, p.INSTANCE_SYNC, {"keep": [i.id for i in rows]}, timeout=60)
        except (NodeOffline, AgentTimeout, AgentFailed) as e:
            log.info("node %s: orphan sweep skipped: %s", node_id, e.message)
            return
        if reply.get("removed"):
            log.warning("node %s: removed containers of instances dmd no longer has: %s", node_id, reply["removed"])

    async def _converge(self, node: Node, inst: Instance, gpu_keys: list[str]) -> bool:
        """One instance to its desired state; True when its container runs."""
        if inst.desired == "deleted":
            # Its maps stop first (the set sent leaves out instances being deleted): by the time
            # the ledger frees the ports, nothing forwards to the old address any more.
            await self.ports.apply(node.id)
            await self.hub.call(node.id, p.INSTANCE_REMOVE, {"instance_id": inst.id}, timeout=120)
            async with self.db.begin() as conn:
                await inst_svc.forget(conn, inst.id)
            self._desired_at.pop(inst.id, None)
            self._applied_at.pop(inst.id, None)
            log.info("instance %s (%s) deleted from node %s", inst.id, inst.name, node.name)
            return False
        if inst.status == "pending":
            async with self.db.begin() as conn:
                await inst_svc.set_status(conn, inst.id, "creating")
        try:
            spec = build_spec(node, inst, gpu_keys, self.installation_id)
            reply = await self.hub.call(node.id, p.INSTANCE_ENSURE, {"spec": spec, "desired": inst.desired},
                                        timeout=ENSURE_TIMEOUT_S)
        except AgentFailed as e:
            async with self.db.begin() as conn:
                await inst_svc.set_status(conn, inst.id, "error", e.message)
            return False
        container = reply.get("container") or {}
        status, message = status_of(container)
        async with self.db.begin() as conn:
            await inst_svc.set_status(conn, inst.id, status, message, str(container.get("id") or "") or None)
        return status == "running"

    async def push_access(self, node_id: int, inst: Instance) -> None:
        """Give the agent the instance's SSH keys (it writes them, and starts and supervises sshd)."""
        async with self.db.read() as conn:
            lines = await access.authorized_lines(conn, inst)
        try:
            reply = await self.hub.call(node_id, p.INSTANCE_ACCESS, {
                "instance_id": inst.id, "ssh": {"enabled": inst.ssh_enabled, "keys": lines}},
                timeout=ACCESS_TIMEOUT_S)
            ssh = reply.get("ssh") if isinstance(reply.get("ssh"), dict) else None
        except AgentFailed as e:
            unknown = e.extra.get("agent_code") == "unknown_type"
            why = "this node's agent cannot set up SSH; update dmc" if unknown else e.message
            ssh = {"state": "error", "message": why}
        async with self.db.begin() as conn:
            await access.set_status(conn, inst.id, ssh)

    async def restart(self, inst: Instance) -> None:
        async with self.lock(inst.node_id):
            reply = await self.hub.call(inst.node_id, p.INSTANCE_RESTART, {"instance_id": inst.id}, timeout=120)
            status, message = status_of(reply.get("container") or {})
            async with self.db.begin() as conn:
                await inst_svc.set_status(conn, inst.id, status, message)

    # --- hub listeners -----------------------------------------------------------------
    def _on_connect(self, node_id: int, hello: p.Hello) -> None:
        state_images = hello.state.get("images")
        if isinstance(state_images, list):
            self.hub.spawn(self._sync_images(node_id, state_images))
        listening = hello.state.get("listening")
        if isinstance(listening, dict):
            self.hub.spawn(self._busy_ports(node_id, listening))
        self.kick(node_id)

    async def _busy_ports(self, node_id: int, listening: dict[str, Any]) -> None:
        async with self.db.begin() as conn:
            await port_svc.set_busy_ports(conn, node_id, listening)

    async def _sync_images(self, node_id: int, reported: list[Any]) -> None:
        async with self.db.begin() as conn:
            await image_svc.sync_inventory(conn, node_id, [i for i in reported if isinstance(i, dict)])

    async def refresh_images(self, node_id: int) -> None:
        reply = await self.hub.call(node_id, p.IMAGES_LIST, timeout=60)
        await self._sync_images(node_id, list(reply.get("images") or []))

    def _on_event(self, node_id: int, env: p.Envelope) -> None:
        kind = env.data.get("kind")
        if kind == "container":
            self.hub.spawn(self._container_event(node_id, env.data, time.monotonic()))
        elif kind == "images.changed":
            self.hub.spawn(self._refresh_quietly(node_id))

    async def _refresh_quietly(self, node_id: int) -> None:
        try:
            await self.refresh_images(node_id)
        except Exception as e:
            log.info("node %s: image inventory refresh failed: %s", node_id, e)

    async def _container_event(self, node_id: int, data: dict[str, Any], received: float) -> None:
        """Re-read the container under the node's lock rather than trusting the event: events
        race with the worker's own commands (a restart emits die, then start)."""
        instance_id = data.get("instance_id")
        if not isinstance(instance_id, int) or data.get("action") not in ("start", "die", "oom", "stop"):
            return
        async with self.lock(node_id):
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
                reply = await self.hub.call(node_id, p.INSTANCE_INSPECT, {"instance_id": inst.id}, timeout=30)
            except (NodeOffline, AgentTimeout, AgentFailed):
                return
            container = reply.get("container")
            if not isinstance(container, dict):
                return
            status, message = status_of(container)
            async with self.db.begin() as conn:
                if status != "running" and inst.desired == "running":
                    # It stopped by itself: DM leaves it stopped until someone starts it (or
                    # its node comes back from a restart, see the module docstring).
                    await inst_svc.set_desired(conn, inst.id, "stopped")
                await inst_svc.set_status(conn, inst.id, status, message)
            if status != inst.status:
                # Its maps' states follow (the agent re-applied them on the same event).
                await self.ports.apply(node_id)


RECONCILER: web.AppKey[Reconciler] = web.AppKey("dm_reconciler", Reconciler)
