"""The I/O half of a reconcile round: load what the node should run, run the planned steps
against its agent, record what came back. The agent and the database are reached through two
small interfaces (:class:`AgentPort`, :class:`Store`), so that property tests run the same
executor against a model of an agent that loses replies and reconnects (tests/reconciler/).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from agent import protocol as p
from dmd.agents.hub import AgentFailed, AgentTimeout, NodeOffline
from dmd.db import Database
from dmd.errors import NotFound
from dmd.models import Instance, Node
from dmd.queries import instances as inst_svc
from dmd.queries import nodes as node_svc
from dmd.reconciler.features import Feature, RoundView
from dmd.reconciler.plan import (
    Ensure,
    InstanceView,
    NodeView,
    Remove,
    SetStatus,
    Sweep,
    plan_containers,
    status_of,
    sweep,
)

log = logging.getLogger("dmd.reconciler")
R = TypeVar("R")

ENSURE_TIMEOUT_S = 300.0
REMOVE_TIMEOUT_S = 120.0
SWEEP_TIMEOUT_S = 60.0


class AgentPort(Protocol):
    """What a round asks of a node's agent (the hub, or a model of one in tests)."""

    def is_online(self, node_id: int) -> bool: ...

    async def ask(self, node_id: int, req: p.Request[R], timeout: float | None = None) -> R: ...


@dataclass(frozen=True, slots=True)
class Loaded:
    node: NodeView
    instances: list[InstanceView]


class Store(Protocol):
    """What a round reads and writes in dmd's database (or a model of it in tests)."""

    async def load(self, node_id: int, installation_id: str) -> Loaded | None: ...

    async def load_features(self, loaded: Loaded, features: Sequence[Feature]) -> dict[str, Any]: ...

    async def set_status(self, step: SetStatus) -> None: ...

    async def forget(self, instance_id: int) -> None: ...


class KnownContainers:
    """Each node's containers by instance id, as its agent last reported them on its current
    link: the hello's state, then every reply that carries a container. The planner trusts
    them to skip requests for containers that already are what they should be."""

    def __init__(self) -> None:
        self._by_node: dict[int, dict[int, p.ContainerInfo]] = {}
        self._complete: set[int] = set()  # nodes whose hello listed every container

    def reset(self, node_id: int, installation_id: str, containers: Sequence[p.ContainerInfo] | None) -> None:
        mine = {}
        for c in containers or ():
            if (c.managed and c.node_id == node_id and c.instance_id is not None
                    and c.labels.get(p.LABEL_INSTALLATION) == installation_id
                    and (c.instance_id not in mine or c.state == "running")):
                mine[c.instance_id] = c
        self._by_node[node_id] = mine
        if containers is not None:
            self._complete.add(node_id)
        else:
            self._complete.discard(node_id)  # the runtime could not be read: nothing is known

    def of(self, node_id: int) -> dict[int, p.ContainerInfo]:
        return self._by_node.setdefault(node_id, {})

    def complete(self, node_id: int) -> bool:
        return node_id in self._complete

    def put(self, node_id: int, instance_id: int, container: p.ContainerInfo | None) -> None:
        if container is None:
            self.of(node_id).pop(instance_id, None)
        else:
            self.of(node_id)[instance_id] = container

    def forget_node(self, node_id: int) -> None:
        self._by_node.pop(node_id, None)
        self._complete.discard(node_id)


def instance_view(inst: Instance, gpu_keys: Sequence[str]) -> InstanceView:
    return InstanceView(
        id=inst.id, name=inst.name, owner_id=inst.owner_id, image=inst.image,
        desired=inst.desired,  # type: ignore[arg-type]
        status=inst.status, status_message=inst.status_message, container_id=inst.container_id,
        command=inst.command, env=inst.env, cpus=inst.cpus, memory_mb=inst.memory_mb,
        privileged=inst.privileged, host_network=inst.host_network, gpu_keys=tuple(gpu_keys))


def node_view(node: Node, installation_id: str) -> NodeView:
    return NodeView(node.id, node.name, installation_id, dict(inst_svc.gpu_keys(node)))


class DbStore:
    """The round's reads and writes on dmd's database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def load(self, node_id: int, installation_id: str) -> Loaded | None:
        async with self.db.read() as conn:
            try:
                node = node_view(await node_svc.get(conn, node_id), installation_id)
            except NotFound:
                return None  # deleted meanwhile
            gpus = await inst_svc.gpus_on_node(conn, node_id)
            instances = [instance_view(i, gpus.get(i.id, ())) for i in await inst_svc.on_node(conn, node_id)]
            return Loaded(node, instances)

    async def load_features(self, loaded: Loaded, features: Sequence[Feature]) -> dict[str, Any]:
        async with self.db.read() as conn:
            return {f.name: await f.load(conn, loaded.node, loaded.instances) for f in features}

    async def set_status(self, step: SetStatus) -> None:
        async with self.db.begin() as conn:
            await inst_svc.set_status(conn, step.instance_id, step.status, step.message, step.container_id)

    async def forget(self, instance_id: int) -> None:
        async with self.db.begin() as conn:
            await inst_svc.forget(conn, instance_id)


class Executor:
    """Runs one round for a node: the features' steps before, the container steps, the
    features' steps after, the sweep. The node going offline (or not answering) ends the round;
    the next connect plans again from what the agent then reports."""

    def __init__(self, agent: AgentPort, store: Store, features: Sequence[Feature], known: KnownContainers,
                 installation_id: str, on_forget: Callable[[int, int], None] = lambda node_id, instance_id: None,
                 on_applied: Callable[[Sequence[int], float], None] = lambda instance_ids, read_at: None) -> None:
        self.agent = agent
        self.store = store
        self.features = list(features)
        self.known = known
        self.installation_id = installation_id
        self._on_forget = on_forget
        self._on_applied = on_applied  # instances converged to the desired state read at that time

    async def round(self, node_id: int) -> None:
        if not self.agent.is_online(node_id):
            return
        read_at = time.monotonic()
        loaded = await self.store.load(node_id, self.installation_id)
        if loaded is None:
            return
        node, instances = loaded.node, loaded.instances
        try:
            before = RoundView(node, instances)
            for f in self.features:
                for step in f.before(before):
                    await self._isolated(node_id, step, f.run(node_id, step))
            now = {i.id: i for i in instances}
            for step in plan_containers(node, instances, self.known.of(node_id), self.known.complete(node_id)):
                await self._isolated(node_id, step, self._container_step(node_id, step, now))
            live = [now[i.id] for i in instances if i.id in now]
            self._on_applied([i.id for i in live], read_at)
            # The features' state is read once the containers are as they should be: nothing of it
            # stands between a user's action and its container, and it is as fresh as can be.
            states = await self.store.load_features(loaded, self.features)
            after = RoundView(node, live, frozenset(i.id for i in live if i.status == "running"), states)
            for f in self.features:
                for step in f.after(after):
                    await self._isolated(node_id, step, f.run(node_id, step))
            await self._sweep(node_id, sweep(live))
        except (NodeOffline, AgentTimeout) as e:
            log.info("node %s: %s; the rest of the round waits for the node", node_id, e.message)

    async def _isolated(self, node_id: int, step: Any, run: Awaitable[None]) -> None:
        """Run one step; a failure of its own (not the node's: offline, no answer) is logged and
        the round goes on, so that one instance never holds back the others' starts, deletes and
        freed GPUs (issue 10, hole 5). An instance whose container step failed says so."""
        try:
            await run
        except (NodeOffline, AgentTimeout):
            raise
        except Exception as e:
            instance_id = getattr(step, "instance_id", None)
            # Named, not shown: a step's repr carries the spec, environment (secrets) included.
            log.exception("node %s: %s of instance %s failed; the round goes on with the next",
                          node_id, type(step).__name__, instance_id)
            if isinstance(step, Ensure):
                try:
                    await self.store.set_status(SetStatus(step.instance_id, "error",
                                                          f"dmd could not apply this instance: {type(e).__name__}"))
                except Exception:
                    log.exception("node %s: instance %s: its error could not be recorded", node_id, instance_id)

    async def _container_step(self, node_id: int, step: Any, now: dict[int, InstanceView]) -> None:
        if isinstance(step, SetStatus):
            await self.store.set_status(step)
            now[step.instance_id] = _with_status(now[step.instance_id], step)
        elif isinstance(step, Ensure):
            # "creating" is written while the agent works, so that the start waits for nothing of dmd's.
            marking = (asyncio.ensure_future(self.store.set_status(SetStatus(step.instance_id, "creating")))
                       if step.creating else None)
            try:
                reply = await self.agent.ask(node_id, p.InstanceEnsure(step.spec, step.desired, step.fresh),
                                             ENSURE_TIMEOUT_S)
            except AgentFailed as e:
                done = SetStatus(step.instance_id, "error", e.message)
            except p.ProtocolError as e:
                # The request itself cannot travel (too large for one message, say): this
                # instance's fault alone, said on it; the link and the other instances carry on.
                done = SetStatus(step.instance_id, "error", f"dmd cannot send this instance to its node: {e}")
            else:
                self.known.put(node_id, step.instance_id, reply.container)
                status, message = status_of(reply.container)
                done = SetStatus(step.instance_id, status, message, reply.container.id)
            finally:
                if marking is not None:
                    await marking  # before what came of it, never after
            await self.store.set_status(done)
            now[step.instance_id] = _with_status(now[step.instance_id], done)
        elif isinstance(step, Remove):
            try:
                await self.agent.ask(node_id, p.InstanceRemove(step.instance_id), REMOVE_TIMEOUT_S)
            except AgentFailed as e:
                log.warning("node %s: instance %s could not be removed: %s", node_id, step.instance_id, e.message)
                return  # kept (deleting): the next round tries again
            self.known.put(node_id, step.instance_id, None)
            await self.store.forget(step.instance_id)
            del now[step.instance_id]
            self._on_forget(node_id, step.instance_id)
            log.info("instance %s deleted from node %s", step.instance_id, node_id)
        else:
            raise TypeError(f"not a container step: {step!r}")

    async def _sweep(self, node_id: int, step: Sweep) -> None:
        try:
            reply = await self.agent.ask(node_id, p.InstanceSync(list(step.keep)), SWEEP_TIMEOUT_S)
        except AgentFailed as e:
            log.info("node %s: orphan sweep skipped: %s", node_id, e.message)
            return
        for instance_id in reply.removed:
            self.known.put(node_id, instance_id, None)
        if reply.removed:
            log.warning("node %s: removed containers of instances dmd no longer has: %s", node_id, reply.removed)


def _with_status(view: InstanceView, step: SetStatus) -> InstanceView:
    return dataclasses.replace(view, status=step.status, status_message=step.message,
                               container_id=step.container_id or view.container_id)
