"""dmd's parts, built once by dmd.app (the one composition root) and held under one app key.

API handlers get this object as `ctx.dm`, page handlers through `dmd.pages.render.dm_of`,
middleware from the application; the use cases (dmd.usecases) take it as their first
argument. Nothing else reads the application's keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from dmd.follows import FollowCounter
from dmd.gateway_links import GatewayLinks
from dmd.live import LiveSessions

if TYPE_CHECKING:
    from dmd.agents.hub import Hub
    from dmd.auth.cache import TokenCache
    from dmd.auth.throttle import LoginThrottle
    from dmd.blobs import BlobStore
    from dmd.config import Config
    from dmd.db import Database
    from dmd.local_node import LocalNode
    from dmd.port_applier import PortApplier
    from dmd.reconciler import Reconciler
    from dmd.usecases.transfers import RefLocks, TransferGate


@dataclass(eq=False)
class Dm:
    config: Config
    db: Database
    session_secret: bytes
    token_cache: TokenCache
    throttle: LoginThrottle
    hub: Hub
    ports: PortApplier  # pushes each node's port maps to its agent
    reconciler: Reconciler
    blobs: BlobStore
    local_node: LocalNode  # filled by its start() when dmd runs the single-box node
    transfers: TransferGate  # each user's image transfers at once (uploads, pulls, imports, copies, commits)
    ref_locks: RefLocks  # one image reference's ownership check and change, together
    setup_link: str | None = None  # the one-time first-run link while no user exists
    openapi: dict[str, Any] = field(default_factory=dict)  # the API's OpenAPI document
    follows: FollowCounter = field(default_factory=FollowCounter)  # log streams each user follows now
    gateway: GatewayLinks = field(default_factory=GatewayLinks)  # the SSH gateway's address and connections
    live: LiveSessions = field(default_factory=LiveSessions)  # terminals, SSH sessions, tunnels open now


DM: web.AppKey[Dm] = web.AppKey("dm", Dm)
