"""What a round keeps in step besides containers, behind one small interface: port maps, SSH
(and, later, streams). The round builds a :class:`RoundView` (the node, its instances, which of
them run once the container steps are done) and asks each feature, in order, for its steps
before the containers change (``before``) and after (``after``); planning is pure, ``run`` does
the I/O of one of its steps. Ports come before SSH, so an instance says "ready" only once its
port 22 is forwarded.
"""

from __future__ import annotations

import abc
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncConnection

from agent import protocol as p
from dmd.agents.hub import AgentFailed, Hub
from dmd.db import Database
from dmd.queries import instance_access as access
from dmd.reconciler.plan import InstanceView, NodeView

if TYPE_CHECKING:
    from dmd.agents.handshake import Handshake
    from dmd.port_applier import PortApplier

log = logging.getLogger("dmd.reconciler")

ACCESS_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class RoundView:
    node: NodeView
    instances: Sequence[InstanceView]
    running: frozenset[int] = frozenset()  # instances whose container runs (after the container steps)
    loaded: Mapping[str, Any] = field(default_factory=dict)  # each feature's state, by its name


class Feature(abc.ABC):
    name: str = "feature"

    async def load(self, conn: AsyncConnection, node: NodeView, instances: Sequence[InstanceView]) -> Any:
        """Read what the feature needs for a round, in the round's transaction."""
        return None

    def before(self, view: RoundView) -> list[Any]:
        """Steps before the container steps (pure)."""
        return []

    @abc.abstractmethod
    def after(self, view: RoundView) -> list[Any]:
        """Steps once the containers are as they should be (pure)."""

    @abc.abstractmethod
    async def run(self, node_id: int, step: Any) -> None:
        """Run one of the feature's steps; NodeOffline/AgentTimeout end the round."""

    def connected(self, node_id: int, shake: Handshake) -> None:  # noqa: B027 - optional hook
        """The node's agent (re)connected: whatever it was given before may be gone."""


# --------------------------------------------------------------------------- port maps


@dataclass(frozen=True, slots=True)
class ApplyPorts:
    """Send the node's full set of port maps (instances being deleted left out)."""

    reason: str


class Ports(Feature):
    """The node's port maps: withdrawn before a container goes (its address may be handed to the
    next container that starts), and the full set pushed at the end of every round."""

    name = "ports"

    def __init__(self, applier: PortApplier) -> None:
        self.applier = applier

    def before(self, view: RoundView) -> list[Any]:
        if any(i.desired == "deleted" for i in view.instances):
            return [ApplyPorts("instances are being deleted")]
        return []

    def after(self, view: RoundView) -> list[Any]:
        return [ApplyPorts("end of round")]

    async def run(self, node_id: int, step: Any) -> None:
        assert isinstance(step, ApplyPorts)
        await self.applier.apply(node_id)


# --------------------------------------------------------------------------- SSH


@dataclass(frozen=True, slots=True)
class PushAccess:
    """Give the agent an instance's SSH keys: it writes them, starts and supervises sshd."""

    instance_id: int
    enabled: bool
    keys: tuple[str, ...]
    container_id: str | None  # the container this is for (a new container needs it again)


def _digest(step: PushAccess) -> str:
    return hashlib.sha256("\n".join([str(step.enabled), *step.keys]).encode()).hexdigest()


class Ssh(Feature):
    """Each running instance gets its keys once per container and key list: the agent keeps
    supervising sshd by itself, and a key change kicks the round that sends them again."""

    name = "ssh"

    def __init__(self, db: Database, hub: Hub) -> None:
        self.db = db
        self.hub = hub
        # (node, instance) -> (container id, digest of what it was given), on the current link.
        self._given: dict[tuple[int, int], tuple[str | None, str]] = {}

    async def load(self, conn: AsyncConnection, node: NodeView, instances: Sequence[InstanceView]) -> Any:
        return await access.access_of_node(conn, node.id)

    def after(self, view: RoundView) -> list[Any]:
        wanted: Mapping[int, tuple[bool, list[str]]] = view.loaded.get(self.name) or {}
        steps: list[Any] = []
        for inst in view.instances:
            if inst.id not in view.running or inst.id not in wanted:
                continue
            enabled, keys = wanted[inst.id]
            step = PushAccess(inst.id, enabled, tuple(keys), inst.container_id)
            if self._given.get((view.node.id, inst.id)) != (inst.container_id, _digest(step)):
                steps.append(step)
        return steps

    async def run(self, node_id: int, step: Any) -> None:
        assert isinstance(step, PushAccess)
        try:
            reply = await self.hub.ask(node_id, p.InstanceAccess(
                step.instance_id, p.SshRequest(step.enabled, list(step.keys))), timeout=ACCESS_TIMEOUT_S)
            status: dict[str, Any] = p.to_data(reply.ssh)
            self._given[(node_id, step.instance_id)] = (step.container_id, _digest(step))
        except AgentFailed as e:
            unknown = e.extra.get("agent_code") == p.UNKNOWN_TYPE
            why = "this node's agent cannot set up SSH; update dmc" if unknown else e.message
            status = {"state": "error", "message": why}
        async with self.db.begin() as conn:
            await access.set_status(conn, step.instance_id, status)

    def connected(self, node_id: int, shake: Handshake) -> None:
        for key in [k for k in self._given if k[0] == node_id]:
            del self._given[key]

    def forget(self, node_id: int, instance_id: int) -> None:
        self._given.pop((node_id, instance_id), None)
