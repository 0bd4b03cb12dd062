"""GPUs at a glance: who holds each GPU of a node (from the ledger), free/total GPUs per node,
and every GPU of every node for administrators.

What a viewer learns of a holder follows the instances' own rule: administrators see every
instance; anyone else sees their own, and of another user's instance only that the GPU is in
use (neither its name nor its owner's).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from dmd import capabilities
from dmd.core import Dm
from dmd.errors import Forbidden
from dmd.models import Instance, Node, User
from dmd.queries import instances as svc
from dmd.queries import nodes as node_svc
from dmd.queries import users as user_svc

# The most instances a node's page lists (and the most nodes the GPU overview reads).
NODE_INSTANCES_SHOWN = 200
NODES_READ = 5000


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a GPU, as far as the viewer may know: ``instance_id`` None means another
    user's instance, shown only as "in use"."""

    instance_id: int | None
    instance_name: str | None
    username: str | None


HIDDEN = Holder(None, None, None)


@dataclass(frozen=True, slots=True)
class Gpu:
    key: str  # the ledger key (uuid, index:N or slot:N)
    facts: dict[str, Any]
    holder: Holder | None  # None: free


@dataclass(frozen=True, slots=True)
class NodeGpus:
    """A node's GPUs with their holders, and the node's instances the viewer may see."""

    gpus: list[Gpu]
    instances: list[tuple[Instance, list[str]]]  # with the GPU keys each holds
    owners: dict[int, str]  # id -> username of those instances' owners (administrators only)
    more: bool  # more instances than shown


def _seen_by(viewer: User, h: svc.GpuHolder) -> Holder:
    if viewer.is_admin or h.owner_id == viewer.id:
        return Holder(h.instance_id, h.instance_name, h.username)
    return HIDDEN


def _gpus(viewer: User, node: Node, held: list[svc.GpuHolder]) -> list[Gpu]:
    by_key = {h.gpu_key: _seen_by(viewer, h) for h in held if h.node_id == node.id}
    return [Gpu(key, g, by_key.get(key)) for key, g in svc.gpu_keys(node)]


async def on_node(dm: Dm, viewer: User, node: Node) -> NodeGpus:
    """The node's GPUs and instances for its page (the caller has checked the viewer may see the node)."""
    async with dm.db.read() as conn:
        held = await svc.gpu_holders(conn, [node.id])
        rows = await svc.list_visible(conn, viewer, limit=NODE_INSTANCES_SHOWN + 1, after_id=None,
                                      node_id=node.id)
        keys = await svc.gpus_on_node(conn, node.id)
        owners: dict[int, str] = {}
        if viewer.is_admin:
            for uid in {i.owner_id for i in rows}:
                u = await user_svc.find(conn, uid)
                if u is not None:
                    owners[uid] = u.username
    shown = rows[:NODE_INSTANCES_SHOWN]
    return NodeGpus(_gpus(viewer, node, held), [(i, keys.get(i.id, [])) for i in shown], owners,
                    len(rows) > NODE_INSTANCES_SHOWN)


async def free_counts(dm: Dm, nodes: list[Node]) -> dict[int, tuple[int, int]]:
    """node id -> (free, total) GPUs; free counts only the GPUs an instance could be given
    (not held, and of a vendor the node's runtime can pass through), as placement does."""
    async with dm.db.read() as conn:
        held = await svc.gpu_holders(conn, [n.id for n in nodes])
    taken: dict[int, set[str]] = defaultdict(set)
    for h in held:
        taken[h.node_id].add(h.gpu_key)
    out = {}
    for n in nodes:
        keys = svc.gpu_keys(n)
        free = capabilities.passable(n, [(k, g) for k, g in keys if k not in taken[n.id]])
        out[n.id] = (len(free), len(keys))
    return out


async def every_gpu(dm: Dm, viewer: User) -> list[tuple[Node, list[Gpu]]]:
    """Administrators: each node that reports GPUs, with its GPUs and their holders."""
    if not viewer.is_admin:
        raise Forbidden("only administrators can list every GPU")
    async with dm.db.read() as conn:
        found = await node_svc.list_visible(conn, viewer, limit=NODES_READ, after_id=None)
        with_gpus = [n for n in found if n.gpus]
        held = await svc.gpu_holders(conn, [n.id for n in with_gpus])
    return [(n, _gpus(viewer, n, held)) for n in with_gpus]
