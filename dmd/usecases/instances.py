"""Instances: create, start, stop, restart, delete, SSH settings, logs, capacity; and the reads
the API and the pages show.

Each change checks who may act, changes the desired state, records the audit entry and kicks
the node's reconciler (or, for a restart, waits for the agent).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from agent import protocol as p
from dmd.core import Dm
from dmd.errors import Conflict, Forbidden, NotFound
from dmd.models import SSH_PORT, Actor, Instance, InstanceDetail, Node, PortMap, SshKey, User
from dmd.queries import audit
from dmd.queries import images as image_svc
from dmd.queries import instance_access as access
from dmd.queries import instances as svc
from dmd.queries import nodes as node_svc
from dmd.queries import port_maps as port_svc
from dmd.queries import ssh_keys as key_svc
from dmd.queries import users as user_svc
from dmd.schemas import InstanceCreateIn

DEFAULT_LOG_TAIL = 200
gpu_keys = svc.gpu_keys  # (ledger key, GPU facts) of a node's GPUs, as the pages label them
default_size = svc.default_size  # (cpus, memory_mb) an instance created on a node without them gets


@dataclass(frozen=True, slots=True)
class Held:
    """An instance with the keys of the GPUs it holds, read in one transaction."""

    instance: Instance
    gpus: list[str]


def create_request(b: InstanceCreateIn) -> svc.CreateRequest:
    return svc.CreateRequest(
        name=b.name, image=b.image, node_id=b.node_id, cpus=b.cpus, memory_mb=b.memory_mb,
        gpu_count=b.gpus if isinstance(b.gpus, int) else 0,
        gpu_uuids=list(b.gpus) if isinstance(b.gpus, list) else None,  # repeats refused, not merged
        env=dict(b.env), command=list(b.command) if b.command else None, privileged=b.privileged,
        host_network=b.host_network, ssh=b.ssh, ssh_key_ids=b.ssh_key_ids,
        port_maps=[(m.protocol, m.instance_port, m.host_port) for m in b.port_maps],
    )


# --- changes --------------------------------------------------------------------------------

async def create(dm: Dm, actor: Actor, user: User, body: InstanceCreateIn) -> Held:
    """Place and record a new instance (desired: running), then let the reconciler create it."""
    req = create_request(body)
    if (req.privileged or req.host_network) and not user.is_admin:
        raise Forbidden("privileged and host-network instances are for administrators only", code="admin_only")
    online = set(dm.hub.conns)

    async def record(conn: AsyncConnection) -> Held:
        inst = await svc.create(conn, user, req, online)
        if req.ssh_key_ids is not None:
            await access.set_keys(conn, inst, req.ssh_key_ids)
        maps = list(req.port_maps)
        if inst.ssh_enabled and not any(p_ == "tcp" and i == SSH_PORT for p_, i, _ in maps):
            maps.insert(0, ("tcp", SSH_PORT, None))
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
    held = await dm.db.run(record)
    dm.reconciler.desired_changed(held.instance.id)
    dm.reconciler.kick(held.instance.node_id)
    return held


async def set_desired(dm: Dm, actor: Actor, user: User, instance_id: int, desired: str, action: str) -> Instance:
    """Start ("running") or stop ("stopped"): refused while the instance is being deleted."""
    async with dm.db.begin() as conn:
        inst = await svc.get_visible(conn, user, instance_id)
        if inst.desired == "deleted":
            raise Conflict("this instance is being deleted", code="deleting")
        inst = await svc.set_desired(conn, inst.id, desired)
        await audit.record(conn, actor, action, "instance", inst.id, name=inst.name)
    dm.reconciler.desired_changed(inst.id)
    dm.reconciler.kick(inst.node_id)
    if desired == "stopped":
        await dm.live.end_for_instance(inst.id, f"instance {inst.name} was stopped")
    return inst


async def start(dm: Dm, actor: Actor, user: User, instance_id: int) -> Instance:
    return await set_desired(dm, actor, user, instance_id, "running", "instance.start")


async def stop(dm: Dm, actor: Actor, user: User, instance_id: int) -> Instance:
    return await set_desired(dm, actor, user, instance_id, "stopped", "instance.stop")


async def restart(dm: Dm, actor: Actor, user: User, instance_id: int) -> Instance:
    """Restart now: the node must be online; returns the instance as it is afterwards."""
    async with dm.db.read() as conn:
        seen = await svc.get_visible(conn, user, instance_id)  # 404 before anything else
    if seen.desired != "deleted" and not dm.hub.is_online(seen.node_id):
        # Refused before the desired state changes: a restart that cannot happen now must not
        # turn into a start that waits for the node (start is there for that).
        raise Conflict("the instance's node is offline; restart it when the node is back", code="node_offline")
    inst = await set_desired(dm, actor, user, instance_id, "running", "instance.restart")
    await dm.reconciler.restart(inst)
    async with dm.db.read() as conn:
        return await svc.get(conn, inst.id)


async def delete(dm: Dm, actor: Actor, user: User, instance_id: int) -> Held:
    """Mark for deletion: the reconciler removes the container and frees its GPUs (when the
    node is offline: once it returns)."""
    async with dm.db.begin() as conn:
        inst = await svc.get_visible(conn, user, instance_id)
        inst = await svc.set_desired(conn, inst.id, "deleted")
        await audit.record(conn, actor, "instance.delete", "instance", inst.id, name=inst.name)
        held = Held(inst, await svc.gpus_of(conn, inst))
    dm.reconciler.desired_changed(inst.id)
    dm.reconciler.kick(inst.node_id)
    await dm.live.end_for_instance(inst.id, f"instance {inst.name} was deleted")
    return held


async def set_ssh(dm: Dm, actor: Actor, user: User, instance_id: int, *, enabled: bool | None = None,
                  key_ids: list[int] | None = None, set_keys: bool = False) -> Instance:
    """Turn SSH on or off and/or choose its keys (None: all of the owner's keys); a running
    instance follows in the next reconcile round, which this starts. Turning SSH on maps port 22
    when it is not mapped yet; turning it off leaves the map (the user may still want it)."""

    async def change(conn: AsyncConnection) -> Instance:
        inst = await svc.get_visible(conn, user, instance_id)
        if inst.desired == "deleted":
            raise Conflict("this instance is being deleted", code="deleting")
        if enabled and inst.host_network:
            raise Conflict("an instance on the host's network cannot have DM's SSH (sshd would take the node's "
                           "port 22)", code="host_network")
        if enabled is not None:
            await access.set_enabled(conn, inst.id, enabled)
        if enabled and not inst.ssh_enabled and not any(
                m.protocol == "tcp" and m.instance_port == SSH_PORT
                for m in await port_svc.of_instance(conn, inst.id)):
            # SSH turned on: port 22 gets its map, as at creation (a full pool refuses the lot).
            node = await node_svc.get(conn, inst.node_id)
            await port_svc.allocate(conn, inst, node, "tcp", SSH_PORT)
        if set_keys:
            await access.set_keys(conn, inst, key_ids)
        inst = await svc.get(conn, inst.id)
        await audit.record(conn, actor, "instance.ssh", "instance", inst.id, enabled=inst.ssh_enabled,
                           keys="all" if inst.ssh_keys_all else await access.key_ids(conn, inst))
        return inst

    inst = await dm.db.run(change)  # may allocate in the port ledger: again if it was a deadlock victim
    dm.reconciler.kick(inst.node_id)
    return inst


async def set_node_defaults(dm: Dm, actor: Actor, node_id: int, cpus: float | None,
                            memory_mb: int | None) -> Node:
    """The size instances created on the node without one get (None: dmd's); administrators
    only (the route says so). Instances already placed keep theirs."""
    async with dm.db.begin() as conn:
        node = await node_svc.get(conn, node_id)
        node = await node_svc.update(conn, node.id, default_cpus=cpus, default_memory_mb=memory_mb)
        await audit.record(conn, actor, "node.instance_defaults", "node", node.id, cpus=cpus, memory_mb=memory_mb)
    return node


# --- what the container says ------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Logs:
    instance: Instance
    lines: list[str]
    last_ts: float | None  # where a follow-up read resumes (the agent's own marker)


async def logs(dm: Dm, user: User, instance_id: int, tail: int | None = DEFAULT_LOG_TAIL, *,
               timeout: float = 30.0) -> Logs:
    """The container's last `tail` lines, from its node's agent."""
    async with dm.db.read() as conn:
        inst = await svc.get_visible(conn, user, instance_id)
    reply = await dm.hub.ask(inst.node_id, p.InstanceLogs(inst.id, tail, None), timeout=timeout)
    return Logs(inst, reply.lines, reply.last_ts)


@contextlib.asynccontextmanager
async def following(dm: Dm, user: User) -> AsyncIterator[None]:
    """One log follow of `user` while inside; 429 too_many_follows beyond their
    log_follow_limit (counted in this process: a follow is a request held open here)."""
    async with dm.db.read() as conn:
        limit = (await user_svc.limits(conn, user.id)).log_follows
    with dm.follows.hold(user.id, limit):
        yield


async def logs_since(dm: Dm, inst: Instance, since: float | None) -> Logs:
    """The lines after `since` (one step of following the logs)."""
    reply = await dm.hub.ask(inst.node_id, p.InstanceLogs(inst.id, None, since), timeout=15)
    return Logs(inst, reply.lines, reply.last_ts or since)


# --- reads --------------------------------------------------------------------------------------

async def list_held(dm: Dm, user: User, *, limit: int, after_id: int | None,
                    node_id: int | None = None) -> list[Held]:
    """The user's instances (administrators: all) with their GPUs."""
    async with dm.db.read() as conn:
        rows = await svc.list_visible(conn, user, limit=limit, after_id=after_id, node_id=node_id)
        return [Held(i, await svc.gpus_of(conn, i)) for i in rows]


async def get_held(dm: Dm, user: User, instance_id: int) -> Held:
    async with dm.db.read() as conn:
        inst = await svc.get_visible(conn, user, instance_id)
        return Held(inst, await svc.gpus_of(conn, inst))


async def _detail(conn: AsyncConnection, inst: Instance) -> InstanceDetail:
    return InstanceDetail(inst, await svc.gpus_of(conn, inst), await node_svc.get(conn, inst.node_id),
                          await port_svc.of_instance(conn, inst.id), await access.key_ids(conn, inst))


async def detail(dm: Dm, instance_id: int, user: User | None = None) -> InstanceDetail:
    """The instance as it is now, with its SSH keys and port maps (single-instance replies); with
    `user`, only one that user may see."""
    async with dm.db.read() as conn:
        inst = await (svc.get(conn, instance_id) if user is None else svc.get_visible(conn, user, instance_id))
        return await _detail(conn, inst)


@dataclass(frozen=True, slots=True)
class Names:
    users: dict[int, str]  # id -> username
    nodes: dict[int, Node]


async def _names(conn: AsyncConnection, user_ids: set[int], node_ids: set[int]) -> Names:
    users: dict[int, str] = {}
    nodes: dict[int, Node] = {}
    for uid in user_ids:
        u = await user_svc.find(conn, uid)
        if u is not None:
            users[uid] = u.username
    for nid in node_ids:
        with contextlib.suppress(NotFound):
            nodes[nid] = await node_svc.get(conn, nid)
    return Names(users, nodes)


async def names(dm: Dm, user_ids: set[int], node_ids: set[int]) -> Names:
    """Usernames and nodes for a page of instances (those gone meanwhile left out)."""
    async with dm.db.read() as conn:
        return await _names(conn, user_ids, node_ids)


@dataclass(frozen=True, slots=True)
class Page:
    """An instance's page: the instance, its GPUs, owner and node, SSH keys and port maps."""

    instance: Instance
    gpus: list[str]
    owner: str | None
    node: Node | None  # None when the node is gone
    maps: list[PortMap]
    key_ids: list[int]
    owner_keys: list[SshKey]


async def page(dm: Dm, user: User, instance_id: int) -> Page:
    async with dm.db.read() as conn:
        inst = await svc.get_visible(conn, user, instance_id)
        gpus = await svc.gpus_of(conn, inst)
        found = await _names(conn, {inst.owner_id}, {inst.node_id})
        return Page(inst, gpus, found.users.get(inst.owner_id), found.nodes.get(inst.node_id),
                    await port_svc.of_instance(conn, inst.id), await access.key_ids(conn, inst),
                    await key_svc.list_for(conn, inst.owner_id, limit=key_svc.MAX_KEYS_PER_USER))


@dataclass(frozen=True, slots=True)
class NodeCapacity:
    node: Node
    status: str  # "online", or the node's recorded status when its agent is not connected
    free: svc.Free
    default: tuple[float, int]  # (cpus, memory_mb) of an instance created here without them


async def _capacity(dm: Dm, conn: AsyncConnection, user: User) -> list[NodeCapacity]:
    out = []
    for node in await svc.usable_nodes(conn, user):
        free = await svc.free_on(conn, node)
        out.append(NodeCapacity(node, "online" if dm.hub.is_online(node.id) else node.status, free,
                                svc.default_size(node)))
    return out


async def capacity(dm: Dm, user: User) -> list[NodeCapacity]:
    """Free CPU, memory and GPUs on each node the user may place instances on."""
    async with dm.db.read() as conn:
        return await _capacity(dm, conn, user)


@dataclass(frozen=True, slots=True)
class CreateForm:
    """What the create form offers: each usable node's free capacity and images, and the user's keys."""

    nodes: list[tuple[NodeCapacity, list[str]]]  # with the refs of the images the user may use there
    keys: list[SshKey]


async def create_form(dm: Dm, user: User) -> CreateForm:
    async with dm.db.read() as conn:
        nodes = [(c, [i["ref"] for i in await image_svc.list_on_node(conn, user, c.node.id)])
                 for c in await _capacity(dm, conn, user)]
        keys = await key_svc.list_for(conn, user.id, limit=key_svc.MAX_KEYS_PER_USER)
    return CreateForm(nodes, keys)
