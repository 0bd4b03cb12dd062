"""One instance's failure stays its own (issue 10, hole 5): a spec too large to send, or one the
agent refuses, puts that instance in `error` with the reason, and the rest of the round carries
on: the others start, deletes finish and free their GPUs. The real planner and executor against
the model agent and store of the property tests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, TypeVar

from agent import protocol as p
from dmd.agents.hub import AgentFailed
from dmd.reconciler.features import Feature, Ports
from dmd.reconciler.plan import InstanceView
from dmd.reconciler.round import Executor, KnownContainers
from tests.reconciler.test_properties import INSTALLATION, NODE_ID, ModelAgent, ModelApplier, ModelStore, Row

R = TypeVar("R")


@dataclass
class WireAgent(ModelAgent):
    """The model agent behind the real envelope: a request that cannot be encoded fails as it
    does in the hub (before anything is sent); ``refuse``: instances whose ensure it answers
    with an error."""

    refuse: set[int] = field(default_factory=set)

    async def ask(self, node_id: int, req: p.Request[R], timeout: float | None = None) -> R:
        p.message(req.TYPE, p.to_data(req), "r1").to_json()  # ProtocolError when too large
        if isinstance(req, p.InstanceEnsure) and req.spec.instance_id in self.refuse:
            raise AgentFailed("the agent on node n1 failed: bad spec: no such image")
        return await super().ask(node_id, req, timeout)


def view(i: int, **kw: Any) -> InstanceView:
    return InstanceView(i, f"i{i}", 5, "img", kw.pop("desired", "running"), kw.pop("status", "pending"), **kw)


async def one_round() -> tuple[WireAgent, ModelStore]:
    agent, store, known = WireAgent(refuse={2}), ModelStore(), KnownContainers()
    huge = {f"K{n}": "x" * 8000 for n in range(200)}  # 1.6 MB: more than one message may carry
    store.rows = {
        1: Row(view(1, env=huge, gpu_keys=("GPU-0",))),  # first in the round, and too large to send
        2: Row(view(2)),  # the agent refuses it
        3: Row(view(3, desired="deleted", status="deleting", gpu_keys=("GPU-1",))),  # another user's delete
        4: Row(view(4, gpu_keys=("GPU-2",))),  # another user's instance
    }
    known.reset(NODE_ID, INSTALLATION, [])
    features: list[Feature] = [Ports(ModelApplier(agent, store))]  # type: ignore[arg-type]
    await Executor(agent, store, features, known, INSTALLATION).round(NODE_ID)
    return agent, store


def test_a_spec_too_large_or_refused_fails_alone_and_the_round_carries_on() -> None:
    agent, store = asyncio.run(one_round())
    too_large = store.rows[1].view
    assert too_large.status == "error"
    assert too_large.status_message is not None
    assert too_large.status_message.startswith("dmd cannot send this instance to its node: instance.ensure message of ")
    assert too_large.status_message.endswith("bytes exceeds the limit")
    assert (store.rows[2].view.status, store.rows[2].view.status_message) == (
        "error", "the agent on node n1 failed: bad spec: no such image")
    assert 3 not in store.rows  # deleted: forgotten, its GPU free again
    assert store.rows[4].view.status == "running"
    assert sorted(b.instance_id for b in agent.boxes.values()) == [4]
    assert agent.violations == []


def test_an_unexpected_failure_of_one_step_is_said_on_its_instance_and_logged_without_its_spec(caplog) -> None:
    class Flaky(WireAgent):
        async def ask(self, node_id: int, req: p.Request[R], timeout: float | None = None) -> R:
            if isinstance(req, p.InstanceEnsure) and req.spec.instance_id == 1:
                raise RuntimeError("a bug")
            return await super().ask(node_id, req, timeout)

    async def go() -> tuple[WireAgent, ModelStore]:
        agent, store, known = Flaky(), ModelStore(), KnownContainers()
        store.rows = {1: Row(view(1, env={"TOKEN": "s3cret"})), 2: Row(view(2))}
        known.reset(NODE_ID, INSTALLATION, [])
        await Executor(agent, store, [], known, INSTALLATION).round(NODE_ID)
        return agent, store

    _agent, store = asyncio.run(go())
    assert (store.rows[1].view.status, store.rows[1].view.status_message) == (
        "error", "dmd could not apply this instance: RuntimeError")
    assert store.rows[2].view.status == "running"
    assert "Ensure of instance 1 failed" in caplog.text
    assert "s3cret" not in caplog.text
