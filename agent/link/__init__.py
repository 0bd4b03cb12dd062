"""The agent's link to dmd: one outgoing WebSocket, kept up for as long as the agent runs.

* :mod:`agent.link.session` — :class:`AgentLink`: connect, handshake, reconnect with backoff,
  requests from dmd answered through the handler registry;
* :mod:`agent.link.reporting` — what an established link sends on its own: heartbeats, metrics,
  changed facts;
* :mod:`agent.link.snapshot` — the hello's state cut into parts;
* :mod:`agent.link.backoff` — the backoff and every timing of the link.
"""

from agent.link.backoff import Backoff, LinkTimings
from agent.link.reporting import FactsProvider, stable_facts
from agent.link.session import AgentLink, StateProvider

__all__ = ["AgentLink", "Backoff", "FactsProvider", "LinkTimings", "StateProvider", "stable_facts"]
