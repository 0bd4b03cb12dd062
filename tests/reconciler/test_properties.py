"""Random interleavings of user actions, container events, agent reconnects and lost replies,
run through the real planner and executor against a model of a node's agent and of dmd's
database. After every step: never two containers for one instance, never one GPU in two
containers, never one host port forwarded twice. Once the faults stop: every instance is what
its owner asked for, and nothing else is left on the node.

The model agent is sequential, as the real one is per instance (its requests for one instance
hold one lock): a request that reaches it runs whole; a "lost" reply ran but dmd hears a time
out; an "undelivered" request never ran (the link was down).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import protocol as p
from dmd.agents.hub import AgentTimeout, NodeOffline
from dmd.reconciler.features import Feature, Ports
from dmd.reconciler.plan import InstanceView, NodeView, SetStatus
from dmd.reconciler.round import Executor, KnownContainers, Loaded

R = TypeVar("R")
NODE_ID = 1
INSTALLATION = "prop0123456789ab"
GPUS = {f"GPU-{i}": {"vendor": "nvidia", "uuid": f"GPU-{i}", "index": i} for i in range(3)}
POOL = range(20000, 20004)


@dataclass
class Box:
    """A container on the model node."""

    id: str
    instance_id: int
    gpus: frozenset[str]
    state: str = "created"

    def info(self) -> p.ContainerInfo:
        return p.ContainerInfo(id=self.id, name=f"dm-{self.instance_id}", image="img", state=self.state,  # type: ignore[arg-type]
                               instance_id=self.instance_id, node_id=NODE_ID, managed=True,
                               labels={p.LABEL_INSTALLATION: INSTALLATION}, ip_address="10.0.0.2")


class Broken(Exception):
    pass


@dataclass
class ModelAgent:
    """The node's agent and runtime; ``faults`` decides the fate of each coming request."""

    online: bool = True
    boxes: dict[str, Box] = field(default_factory=dict)
    forwards: list[tuple[str, int, int]] = field(default_factory=list)  # (protocol, host port, instance)
    faults: list[str] = field(default_factory=list)
    ids: itertools.count[int] = field(default_factory=itertools.count)
    violations: list[str] = field(default_factory=list)

    def is_online(self, node_id: int) -> bool:
        return self.online

    async def ask(self, node_id: int, req: p.Request[R], timeout: float | None = None) -> R:
        await asyncio.sleep(0)
        if not self.online:
            raise NodeOffline("node 1 is offline")
        fate = self.faults.pop(0) if self.faults else "ok"
        if fate == "undelivered":
            self.online = False  # the link dropped: nothing reached the agent
            raise NodeOffline("the agent reconnected")
        reply = self._run(req)
        self.check()
        if fate == "lost":
            raise AgentTimeout(f"node 1 did not answer {req.TYPE}")
        return p.parse(req.REPLY, p.to_data(reply))  # through the wire format, as the hub does

    def of(self, instance_id: int) -> list[Box]:
        return [b for b in self.boxes.values() if b.instance_id == instance_id]

    def _run(self, req: Any) -> Any:
        if isinstance(req, p.InstanceEnsure):
            found = self.of(req.spec.instance_id)
            if found:
                box = found[0]
            else:
                box = Box(f"c{next(self.ids)}", req.spec.instance_id, frozenset(g.uuid or "" for g in req.spec.gpus))
                self.boxes[box.id] = box
            box.state = "running" if req.desired == "running" else ("exited" if box.state == "running" else box.state)
            return p.ContainerReply(box.info())
        if isinstance(req, p.InstanceRemove):
            found = self.of(req.instance_id)
            for b in found:
                del self.boxes[b.id]
            return p.Removed(bool(found))
        if isinstance(req, p.InstanceSync):
            gone = [b for b in self.boxes.values() if b.instance_id not in req.keep]
            for b in gone:
                del self.boxes[b.id]
            return p.SyncReply([b.instance_id for b in gone])
        if isinstance(req, p.PortsApply):
            running = {b.instance_id for b in self.boxes.values() if b.state == "running"}
            self.forwards = [(m.protocol, m.host_port, m.instance_id) for m in req.maps if m.instance_id in running]
            return p.PortsReply("kernel", active=[m.id for m in req.maps if m.instance_id in running],
                                waiting=[m.id for m in req.maps if m.instance_id not in running])
        raise AssertionError(f"unexpected request {req!r}")

    def check(self) -> None:
        per_instance: dict[int, int] = {}
        held: dict[str, str] = {}
        for b in self.boxes.values():
            per_instance[b.instance_id] = per_instance.get(b.instance_id, 0) + 1
            for g in b.gpus:
                if g in held:
                    self.violations.append(f"GPU {g} in containers {held[g]} and {b.id}")
                held[g] = b.id
        self.violations += [f"instance {i} has {n} containers" for i, n in per_instance.items() if n > 1]
        ports = [(proto, port) for proto, port, _ in self.forwards]
        if len(ports) != len(set(ports)):
            self.violations.append(f"a host port forwarded twice: {self.forwards}")

    def snapshot(self) -> list[p.ContainerInfo]:
        return [b.info() for b in self.boxes.values()]


@dataclass
class Row:
    view: InstanceView
    maps: list[tuple[int, str, int]] = field(default_factory=list)  # (map id, protocol, host port)


@dataclass
class ModelStore:
    """dmd's database: instances, the GPU ledger (a key held once), the port ledger (a port held once)."""

    rows: dict[int, Row] = field(default_factory=dict)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def load(self, node_id: int, installation_id: str) -> Loaded | None:
        await asyncio.sleep(0)
        return Loaded(NodeView(NODE_ID, "n1", INSTALLATION, GPUS), [r.view for r in self.rows.values()])

    async def load_features(self, loaded: Loaded, features: Sequence[Feature]) -> dict[str, Any]:
        return {}

    async def set_status(self, step: SetStatus) -> None:
        row = self.rows.get(step.instance_id)
        if row is not None and row.view.desired != "deleted":
            row.view = replace(row.view, status=step.status, status_message=step.message,
                               container_id=step.container_id or row.view.container_id)

    async def forget(self, instance_id: int) -> None:
        self.rows.pop(instance_id, None)  # its GPUs and ports are free again

    # --- what users do (each one transaction in dmd) ---
    def create(self, gpus: int, ports: int) -> None:
        held = {k for r in self.rows.values() for k in r.view.gpu_keys}
        free = [k for k in GPUS if k not in held]
        taken = {port for r in self.rows.values() for _, _, port in r.maps}
        free_ports = [x for x in POOL if x not in taken]
        if len(free) < gpus or len(free_ports) < ports:
            return  # refused: no capacity
        i = next(self.ids)
        self.rows[i] = Row(InstanceView(i, f"i{i}", 5, "img", "running", "pending", gpu_keys=tuple(free[:gpus])),
                           [(i * 10 + n, "tcp", free_ports[n]) for n in range(ports)])

    def set_desired(self, pick: int, desired: str) -> None:
        if not self.rows:
            return
        row = list(self.rows.values())[pick % len(self.rows)]
        if row.view.desired != "deleted":
            status = "deleting" if desired == "deleted" else row.view.status
            row.view = replace(row.view, desired=desired, status=status)  # type: ignore[arg-type]

    def maps(self) -> list[p.PortMap]:
        return [p.PortMap(mid, r.view.id, proto, port, 80)  # type: ignore[arg-type]
                for r in self.rows.values() if r.view.desired != "deleted" for mid, proto, port in r.maps]


class ModelApplier:
    def __init__(self, agent: ModelAgent, store: ModelStore) -> None:
        self.agent, self.store = agent, store

    async def apply(self, node_id: int) -> bool:
        try:
            await self.agent.ask(node_id, p.PortsApply(self.store.maps()))
        except (NodeOffline, AgentTimeout):
            return False
        return True


ACTIONS = st.one_of(
    st.tuples(st.just("create"), st.integers(0, 2), st.integers(0, 2)),
    st.tuples(st.just("start"), st.integers(0, 9)),
    st.tuples(st.just("stop"), st.integers(0, 9)),
    st.tuples(st.just("delete"), st.integers(0, 9)),
    st.tuples(st.just("dies"), st.integers(0, 9), st.booleans()),  # the event heard, or lost
    st.tuples(st.just("round"), st.lists(st.sampled_from(["ok", "ok", "lost", "undelivered"]), max_size=4)),
    st.tuples(st.just("reconnect"),),
)


async def scenario(actions: list[tuple[Any, ...]]) -> tuple[ModelAgent, ModelStore]:
    agent, store, known = ModelAgent(), ModelStore(), KnownContainers()
    features: list[Feature] = [Ports(ModelApplier(agent, store))]  # type: ignore[arg-type]
    executor = Executor(agent, store, features, known, INSTALLATION)
    known.reset(NODE_ID, INSTALLATION, [])
    for action in actions:
        kind = action[0]
        if kind == "create":
            store.create(action[1], action[2])
        elif kind in ("start", "stop", "delete"):
            store.set_desired(action[1], {"start": "running", "stop": "stopped", "delete": "deleted"}[kind])
        elif kind == "dies":
            running = [b for b in agent.boxes.values() if b.state == "running"]
            if running:
                box = running[action[1] % len(running)]
                box.state = "exited"
                row = store.rows.get(box.instance_id)
                if action[2] and row is not None and row.view.desired == "running":
                    # What dmd does on the event: the container stopped by itself, so it stays stopped.
                    store.set_desired(list(store.rows).index(box.instance_id), "stopped")
                    known.put(NODE_ID, box.instance_id, box.info())
        elif kind == "round":
            agent.faults = list(action[1])
            await executor.round(NODE_ID)
            agent.faults = []
        elif kind == "reconnect":
            agent.online = True
            known.reset(NODE_ID, INSTALLATION, agent.snapshot())  # the hello's state
        assert agent.violations == [], (action, agent.violations)
    # The faults stop: the link comes back (with its hello) and rounds run until nothing changes.
    agent.online = True
    known.reset(NODE_ID, INSTALLATION, agent.snapshot())
    for _ in range(3):
        await executor.round(NODE_ID)
    assert agent.violations == []
    return agent, store


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ACTIONS, max_size=30))
def test_random_interleavings_converge_and_never_share_a_container_gpu_or_port(actions: list[tuple[Any, ...]]) -> None:
    agent, store = asyncio.run(scenario(actions))
    for row in store.rows.values():
        inst = row.view
        assert inst.desired != "deleted", f"instance {inst.id} was never removed"
        boxes = agent.of(inst.id)
        assert len(boxes) == 1, (inst, boxes)
        want = "running" if inst.desired == "running" else "exited"
        assert (boxes[0].state == "running") == (want == "running"), (inst, boxes)
        assert inst.status == ("running" if want == "running" else "stopped"), inst
        assert boxes[0].gpus == frozenset(inst.gpu_keys)
    assert {b.instance_id for b in agent.boxes.values()} == set(store.rows)  # nothing left behind
    wanted = sorted(("tcp", port, r.view.id) for r in store.rows.values() if r.view.desired == "running"
                    for _, _, port in r.maps)
    assert sorted(agent.forwards) == wanted


def test_a_lost_create_reply_then_a_delete_leaves_nothing_behind() -> None:
    actions = [("create", 1, 1), ("round", ["ok", "lost"]), ("delete", 0), ("round", ["lost"]), ("reconnect",),
               ("create", 1, 0)]
    agent, store = asyncio.run(scenario(actions))
    assert list(store.rows) == [2] and [b.instance_id for b in agent.boxes.values()] == [2]
    assert agent.of(2)[0].gpus == frozenset({"GPU-0"})  # the GPU went to the new instance, once


def test_an_undelivered_remove_keeps_the_gpu_held_until_the_container_is_gone() -> None:
    # The ports go first (delivered), then the remove never reaches the agent: the instance and its
    # GPU stay until a later round removes the container, so the next instance cannot get the GPU.
    actions = [("create", 1, 0), ("round", []), ("delete", 0), ("round", ["ok", "undelivered"]),
               ("create", 1, 0), ("reconnect",), ("round", [])]
    agent, _ = asyncio.run(scenario(actions))
    assert agent.violations == []
    assert [b.gpus for b in agent.boxes.values()] == [frozenset({"GPU-1"})]  # GPU-0 was still held
