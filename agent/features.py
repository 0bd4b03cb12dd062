"""What the agent keeps for DM's instances besides their containers: one small interface.

Port forwarding (:mod:`agent.ports`), SSH (:mod:`agent.access`) and the streams into instances
(:mod:`agent.access.channels`) are features. The agent's composition
(:func:`agent.workloads.make_link`) builds them and the link runs them; nothing else names them:

* ``register(registry)`` — the requests the feature answers; ``register_streams(streams)`` —
  the stream kinds it serves;
* ``facts()`` / ``report()`` — its part of the node's facts and of the hello's state;
* ``container_changed(instance_id, action)`` — a managed container started, stopped, went
  (a plain call: the feature schedules its own work and keeps track of it);
* ``forget(instance_id)`` — dmd removed the instance;
* ``run()`` — its background work while the agent runs (supervision, checks), until cancelled;
* ``close(node_deleted=...)`` — the agent stops (or its node was deleted: leave nothing behind).
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any

from agent.handlers import HandlerRegistry

if TYPE_CHECKING:
    from agent.streams import StreamHandlers

__all__ = ["Feature"]


class Feature(abc.ABC):
    name: str = "feature"

    @abc.abstractmethod
    def register(self, registry: HandlerRegistry) -> None:
        """Add the feature's request handlers."""

    def register_streams(self, streams: StreamHandlers) -> None:  # noqa: B027 - optional hook
        """Add the stream kinds the feature serves (see :mod:`agent.streams`)."""

    def facts(self) -> dict[str, Any]:
        """Keys the feature adds to the node's facts."""
        return {}

    async def report(self) -> dict[str, Any]:
        """Keys the feature adds to the state snapshot of each hello."""
        return {}

    def container_changed(self, instance_id: int | None, action: str) -> None:  # noqa: B027 - optional hook
        """A managed container of this node changed state (start, restart, die, stop, destroy)."""

    def forget(self, instance_id: int) -> None:  # noqa: B027 - optional hook
        """dmd removed the instance: drop what is kept for it."""

    async def run(self) -> None:  # noqa: B027 - optional hook
        """Background work while the agent runs; cancelled when it stops."""

    async def close(self, *, node_deleted: bool) -> None:  # noqa: B027 - optional hook
        """The agent stops; ``node_deleted``: dmd deleted the node, so undo what outlives the agent."""
