"""Changes to instances that take several steps, shared by the JSON API and the pages.

Like dmd.services.node_ops these open their own transactions: each checks who may act,
changes the desired state, records the audit entry and kicks the node's reconciler (or,
for a restart, waits for the agent), so that the API and the pages cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from agent import protocol as p
from dmd.agents.hub import Hub
from dmd.db import Database
from dmd.errors import Conflict, Forbidden
from dmd.models import Instance, Node, User
from dmd.reconciler import Reconciler
from dmd.services import audit
from dmd.services import instance_access as access
from dmd.services import instances as svc
from dmd.services import nodes as node_svc
from dmd.services import port_maps as port_svc
from dmd.services.audit import Actor

DEFAULT_LOG_TAIL = 200


@dataclass(frozen=True, slots=True)
class Held:
    """An instance with the keys of the GPUs it holds, read in one transaction."""

    instance: Instance
    gpus: list[str]


async def create(db: Database, hub: Hub, reconciler: Reconciler, actor: Actor, user: User,
                 req: svc.CreateRequest) -> Held:
    """Place and record a new instance (desired: running), then let the reconciler create it."""
    if (req.privileged or req.host_network) and not user.is_admin:
        raise Forbidden("privileged and host-network instances are for administrators only", code="admin_only")
    online = set(hub.conns)

    async def record(conn: AsyncConnection) -> Held:
        inst = await svc.create(conn, user, req, online)
        if req.ssh_key_ids is not None:
            await access.set_keys(conn, inst, req.ssh_key_ids)
        maps = list(req.port_maps)
        if inst.ssh_enabled and not any(p_ == "tcp" and i == access.SSH_PORT for p_, i, _ in maps):
            maps.insert(0, ("tcp", access.SSH_PORT, None))
        if maps and not inst.host_network:
            node = await node_svc.get(conn, inst.node_id)
            # The host ports asked for first, so that no automatic pick takes one of them.
            for protocol, instance_port, host_port in sorted(maps, key=lambda m: m[2] is None):
                await port_svc.allocate(conn, inst, node, protocol, instance_port, host_port)
        inst = await svc.get(conn, inst.id)
        await audit.record(conn, actor, "instance.create", "instance", inst.id,
                           name=inst.name, node_id=inst.node_id, image=inst.image)
        return Held(inst, await svc.gpus_of(conn, inst))

    # Again when MariaDB picks it as a deadlock victim (parallel creations lock users, nodes
    # and the ledgers' unique indexes).
    held = await db.run(record)
    reconciler.desired_changed(held.instance.id)
    reconciler.kick(held.instance.node_id)
    return held


async def set_desired(db: Database, reconciler: Reconciler, actor: Actor, user: User, instance_id: int,
                      desired: str, action: str) -> Instance:
    """Start ("running") or stop ("stopped"): refused while the instance is being deleted."""
    async with db.begin() as conn:
        inst = await svc.get_visible(conn, user, instance_id)
        if inst.desired == "deleted":
            raise Conflict("this instance is being deleted", code="deleting")
        inst = await svc.set_desired(conn, inst.id, desired)
        await audit.record(conn, actor, action, "instance", inst.id, name=inst.name)
    reconciler.desired_changed(inst.id)
    reconciler.kick(inst.node_id)
    return inst


async def start(db: Database, reconciler: Reconciler, actor: Actor, user: User, instance_id: int) -> Instance:
    return await set_desired(db, reconciler, actor, user, instance_id, "running", "instance.start")


async def stop(db: Database, reconciler: Reconciler, actor: Actor, user: User, instance_id: int) -> Instance:
    return await set_desired(db, reconciler, actor, user, instance_id, "stopped", "instance.stop")


async def restart(db: Database, reconciler: Reconciler, actor: Actor, user: User, instance_id: int) -> Instance:
    """Restart now: the node must be online; returns the instance as it is afterwards."""
    inst = await set_desired(db, reconciler, actor, user, instance_id, "running", "instance.restart")
    await reconciler.restart(inst)
    async with db.read() as conn:
        return await svc.get(conn, inst.id)


async def delete(db: Database, reconciler: Reconciler, actor: Actor, user: User, instance_id: int) -> Held:
    """Mark for deletion: the reconciler removes the container and frees its GPUs (when the
    node is offline: once it returns)."""
    async with db.begin() as conn:
        inst = await svc.get_visible(conn, user, instance_id)
        inst = await svc.set_desired(conn, inst.id, "deleted")
        await audit.record(conn, actor, "instance.delete", "instance", inst.id, name=inst.name)
        held = Held(inst, await svc.gpus_of(conn, inst))
    reconciler.desired_changed(inst.id)
    reconciler.kick(inst.node_id)
    return held


@dataclass(frozen=True, slots=True)
class Logs:
    instance: Instance
    lines: list[str]
    last_ts: float | None  # where a follow-up read resumes (the agent's own marker)


async def logs(db: Database, hub: Hub, user: User, instance_id: int, tail: int | None = DEFAULT_LOG_TAIL, *,
               timeout: float = 30.0) -> Logs:
    """The container's last `tail` lines, from its node's agent."""
    async with db.read() as conn:
        inst = await svc.get_visible(conn, user, instance_id)
    reply = await hub.ask(inst.node_id, p.InstanceLogs(inst.id, tail, None), timeout=timeout)
    return Logs(inst, reply.lines, reply.last_ts)


@dataclass(frozen=True, slots=True)
class NodeCapacity:
    node: Node
    status: str  # "online", or the node's recorded status when its agent is not connected
    free: svc.Free


async def capacity(db: Database, hub: Hub, user: User) -> list[NodeCapacity]:
    """Free CPU, memory and GPUs on each node the user may place instances on."""
    out = []
    async with db.read() as conn:
        for node in await svc.usable_nodes(conn, user):
            free = await svc.free_on(conn, node)
            out.append(NodeCapacity(node, "online" if hub.is_online(node.id) else node.status, free))
    return out
