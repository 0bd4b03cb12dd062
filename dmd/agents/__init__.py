"""The agents' WebSocket endpoint and the hub of live agent connections."""

from aiohttp import web

from dmd.agents.hub import Hub

HUB: web.AppKey[Hub] = web.AppKey("dm_hub", Hub)

__all__ = ["HUB", "Hub"]
