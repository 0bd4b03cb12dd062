"""GPUs at a glance: who holds each GPU of a node (from the ledger), free/total GPUs per node,
and every GPU of every node for administrators.

What a viewer learns of a holder follows the instances' own rule: administrators see every
instance; anyone else sees their own, and of another user's instance only that the GPU is in
use (neither its name nor its owner's).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

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


# --- live figures: from the metrics samples the hub keeps in memory -----------------------

def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def reading_of(sample: dict[str, Any], gpu: dict[str, Any]) -> dict[str, Any] | None:
    """A metrics sample's reading of one GPU: the one with its uuid, else with its index."""
    raw = sample.get("gpus")
    live = [g for g in raw if isinstance(g, dict)] if isinstance(raw, list) else []
    if gpu.get("uuid"):
        same = [g for g in live if g.get("uuid") == gpu.get("uuid")]
        if len(same) == 1:
            return same[0]
    same = [g for g in live if gpu.get("index") is not None and g.get("index") == gpu.get("index")]
    return same[0] if len(same) == 1 else None


def latest_reading(samples: Sequence[dict[str, Any]], gpu: dict[str, Any]) -> dict[str, Any]:
    """The newest reading of one GPU ({} when no sample has one)."""
    for s in reversed(samples):
        m = reading_of(s, gpu)
        if m is not None:
            return m
    return {}


IdleState = Literal["busy", "idle", "idle_at_least", "unknown"]


@dataclass(frozen=True, slots=True)
class Idle:
    """How long a GPU has been idle, as far as the kept samples tell: "busy" (used at the newest
    reading), "idle" (``seconds`` since it was last used), "idle_at_least" (no kept sample shows
    it used: idle at least ``seconds``, since the oldest one), "unknown" (no reading at all)."""

    state: IdleState
    seconds: float | None


def idle_of(samples: Sequence[dict[str, Any]], gpu: dict[str, Any], now: float | None = None) -> Idle:
    now = now if now is not None else time.time()
    readings = [(t, u) for t, u in ((_num(s.get("received_at")), _num((reading_of(s, gpu) or {}).get(
        "utilization_pct"))) for s in samples) if t is not None and u is not None]
    if not readings:
        return Idle("unknown", None)
    if readings[-1][1] > 0:
        return Idle("busy", 0.0)
    busy = [t for t, u in readings if u > 0]
    if busy:
        return Idle("idle", max(0.0, now - busy[-1]))
    return Idle("idle_at_least", max(0.0, now - readings[0][0]))


@dataclass(frozen=True, slots=True)
class GpuStatus:
    """One GPU of the overview: its node, holder, newest reading and idle time."""

    node: Node
    online: bool
    gpu: Gpu
    live: dict[str, Any]  # the newest reading ({} none, or the node is offline)
    idle: Idle


async def every_gpu(dm: Dm, viewer: User, now: float | None = None) -> list[GpuStatus]:
    """Administrators: every GPU of every node that reports some, with its holder and live figures."""
    if not viewer.is_admin:
        raise Forbidden("only administrators can list every GPU")
    async with dm.db.read() as conn:
        found = await node_svc.list_visible(conn, viewer, limit=NODES_READ, after_id=None)
        with_gpus = [n for n in found if n.gpus]
        held = await svc.gpu_holders(conn, [n.id for n in with_gpus])
    out = []
    for n in with_gpus:
        online = dm.hub.is_online(n.id)
        # An offline node's last samples say nothing of now.
        samples = dm.hub.recent_metrics(n.id) if online else []
        for g in _gpus(viewer, n, held):
            out.append(GpuStatus(n, online, g, latest_reading(samples, g.facts), idle_of(samples, g.facts, now)))
    return out
