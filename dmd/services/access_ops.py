"""SSH access changes that touch running instances: an instance's SSH settings, and a user's
keys being added or deleted. Each records its audit entry and kicks the nodes whose instances
must follow, so their authorized keys change within one reconcile round.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from dmd.db import Database
from dmd.errors import Conflict
from dmd.models import Instance, User
from dmd.reconciler import Reconciler
from dmd.services import audit
from dmd.services import instance_access as access
from dmd.services import instances as svc
from dmd.services import nodes as node_svc
from dmd.services import port_maps as port_svc
from dmd.services import ssh_keys as key_svc
from dmd.services.audit import Actor
from dmd.sshkeys import ParsedKey


async def set_ssh(db: Database, reconciler: Reconciler, actor: Actor, user: User, instance_id: int, *,
                  enabled: bool | None = None, key_ids: list[int] | None = None, set_keys: bool = False) -> Instance:
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
                m.protocol == "tcp" and m.instance_port == access.SSH_PORT
                for m in await port_svc.of_instance(conn, inst.id)):
            # SSH turned on: port 22 gets its map, as at creation (a full pool refuses the lot).
            node = await node_svc.get(conn, inst.node_id)
            await port_svc.allocate(conn, inst, node, "tcp", access.SSH_PORT)
        if set_keys:
            await access.set_keys(conn, inst, key_ids)
        inst = await svc.get(conn, inst.id)
        await audit.record(conn, actor, "instance.ssh", "instance", inst.id, enabled=inst.ssh_enabled,
                           keys="all" if inst.ssh_keys_all else await access.key_ids(conn, inst))
        return inst

    inst = await db.run(change)  # may allocate in the port ledger: again if it was a deadlock victim
    reconciler.kick(inst.node_id)
    return inst


async def add_key(db: Database, reconciler: Reconciler, actor: Actor, user: User, name: str | None,
                  text: str | bytes) -> tuple[key_svc.SshKey, ParsedKey]:
    """Add a key; instances that follow all of the user's keys get it."""
    key, parsed = await key_svc.add(db, actor, user, name, text)
    async with db.read() as conn:
        node_ids = await access.nodes_following(conn, user.id)
    for node_id in node_ids:
        reconciler.kick(node_id)
    return key, parsed


async def delete_key(db: Database, reconciler: Reconciler, actor: Actor, user: User, key_id: int) -> key_svc.SshKey:
    """Delete a key; it leaves every instance that had it (read before the delete: the rows
    that listed it go with it)."""
    async with db.read() as conn:
        node_ids = await access.nodes_following(conn, user.id, key_id)
    key = await key_svc.delete(db, actor, user, key_id)
    for node_id in node_ids:
        reconciler.kick(node_id)
    return key
