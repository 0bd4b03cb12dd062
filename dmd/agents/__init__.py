"""The agents' WebSocket endpoint and the hub of live agent connections."""

from dmd.agents.hub import Hub

__all__ = ["Hub"]
