"""What a round keeps in step besides containers, behind one small interface: port maps, SSH
(and, later, streams). The round builds a :class:`RoundView` (the node, its instances, which of
them run once the container steps are done) and asks each feature, in order, for its steps
before the containers change (``before``) and after (``after``); planning is pure, ``run`` does
the I/O of one of its steps. Ports come before SSH, so an instance says "ready" only once its
port 22 is forwarded.
"""

from __future__ import annotations

import abc
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
        """Steps before the container steps (pure; ``view.loaded`` is empty: state is read after)."""
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
    """Give the agent an instance's SSH keys: it writes them, starts sshd (again, if it died)
    and supervises it, and says how it stands."""

    instance_id: int
    enabled: bool
    keys: tuple[str, ...]


class Ssh(Feature):
    """Every round tells each running instance's agent its keys (idempotent: sshd is started
    again if it died) and records what the agent says of it, so a kick also refreshes what the
    page shows. An instance whose SSH is off and already said so is left alone: there is
    nothing to revoke and nothing new to learn."""

    name = "ssh"

    def __init__(self, db: Database, hub: Hub) -> None:
        self.db = db
        self.hub = hub

    async def load(self, conn: AsyncConnection, node: NodeView, instances: Sequence[InstanceView]) -> Any:
        return await access.access_of_node(conn, node.id)

    def after(self, view: RoundView) -> list[Any]:
        wanted: Mapping[int, access.Access] = view.loaded.get(self.name) or {}
        steps: list[Any] = []
        for inst in view.instances:
            want = wanted.get(inst.id)
            if inst.id not in view.running or want is None:
                continue
            if not want.enabled and want.reported in (None, "disabled"):
                continue  # off, and never on (no key was ever written) or said so already
            steps.append(PushAccess(inst.id, want.enabled, tuple(want.keys)))
        return steps

    async def run(self, node_id: int, step: Any) -> None:
        assert isinstance(step, PushAccess)
        try:
            reply = await self.hub.ask(node_id, p.InstanceAccess(
                step.instance_id, p.SshRequest(step.enabled, list(step.keys))), timeout=ACCESS_TIMEOUT_S)
            status: dict[str, Any] = p.to_data(reply.ssh)
        except AgentFailed as e:
            unknown = e.extra.get("agent_code") == p.UNKNOWN_TYPE
            why = "this node's agent cannot set up SSH; update dmc" if unknown else e.message
            status = {"state": "error", "message": why}
        async with self.db.begin() as conn:
            await access.set_status(conn, step.instance_id, status)
