"""dmd's parts are built once, in dmd.app, and kept under one application key."""

from __future__ import annotations

from aiohttp import web

from dmd.core import DM


async def test_one_app_key_holds_every_part_built_once(client) -> None:
    ours = [k for k in client.app if isinstance(k, web.AppKey) and repr(k).startswith("<AppKey(dmd.")]
    assert ours == [DM]
    dm = client.app[DM]
    # Every part that needs another gets the one instance the root built, not one of its own.
    assert dm.reconciler.hub is dm.hub and dm.reconciler.ports is dm.ports and dm.ports.hub is dm.hub
    assert dm.hub.db is dm.db and dm.reconciler.db is dm.db and dm.ports.db is dm.db
    assert dm.blobs.db is dm.db and dm.local_node.db is dm.db and dm.local_node.config is dm.config
    assert dm.openapi["paths"]["/api/v1/health"]
    assert dm.setup_link is not None and dm.setup_link.startswith(f"{dm.config.base_url}/setup?token=")
