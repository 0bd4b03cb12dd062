"""The one composition root: build dmd's parts once, then the aiohttp application around them.

Every part (configuration, database, hub, reconciler, port applier, blobs, token cache, login
throttle, session secret, setup link, OpenAPI document, local node, SSH gateway) is built here into one
`dmd.core.Dm`, kept under the application's one key `DM`. Handlers and use cases receive that
object; nothing else constructs a part.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
from pathlib import Path

from aiohttp import web

from agent.protocol import AGENT_WS_PATH
from dmd.agents import Hub
from dmd.agents.endpoint import agent_ws
from dmd.api import build_api
from dmd.api.openapi import build as build_openapi
from dmd.auth.cache import TokenCache
from dmd.auth.throttle import LoginThrottle
from dmd.blobs import BLOB_PATH, BlobStore
from dmd.config import Config
from dmd.core import DM, Dm
from dmd.db import Database
from dmd.db.migrate import upgrade
from dmd.errors import StartupError
from dmd.local_node import LocalNode
from dmd.middleware import build_middlewares
from dmd.port_applier import PortApplier
from dmd.queries import settings as settings_svc
from dmd.queries import setup as setup_svc
from dmd.reconciler import Reconciler
from dmd.sessions import make_storage
from dmd.ssh import SshGateway
from dmd.usecases import accounts
from dmd.usecases.transfers import RefLocks, TransferGate

log = logging.getLogger("dmd")


def ensure_data_dir(cfg: Config) -> Path:
    d = Path(cfg.data_dir)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


def load_session_secret(cfg: Config) -> bytes:
    """The configured secret, else one generated on first start and kept in the data dir."""
    if cfg.session_secret:
        return cfg.session_secret.encode()
    path = ensure_data_dir(cfg) / "session_secret"
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    except ValueError:
        raise RuntimeError(f"{path} is corrupt: delete it to generate a new one (sessions will end)") from None
    secret = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret.hex() + "\n")
    return secret


async def compose(cfg: Config, db: Database, secret: bytes | None = None) -> Dm:
    """dmd's parts, built once on a migrated database (no web application needed: tests use
    this to run use cases on a bare database)."""
    async with db.begin() as conn:
        installation_id = await settings_svc.get(conn, "installation_id")
        if installation_id is None:
            installation_id = secrets.token_hex(8)
            await settings_svc.put(conn, "installation_id", installation_id)
    hub = Hub(db, cfg.agent_heartbeat_s, installation_id)
    ports = PortApplier(db, hub)
    dm = Dm(
        config=cfg, db=db, session_secret=secret if secret is not None else load_session_secret(cfg),
        token_cache=TokenCache(), throttle=LoginThrottle(), hub=hub, ports=ports,
        reconciler=Reconciler(db, hub, ports), blobs=BlobStore(Path(cfg.spool_dir), db),
        local_node=LocalNode(db, cfg), transfers=TransferGate(), ref_locks=RefLocks(),
    )

    async def transfer_limit(user_id: int) -> int:
        """The user's ceiling on image transfers at once, as an admin set it (None: no limit)."""
        limit = (await accounts.limits(dm, user_id)).transfers
        return sys.maxsize if limit is None else limit

    dm.transfers.limit_for = transfer_limit
    async with db.begin() as conn:
        token = await setup_svc.issue_if_needed(conn)
    dm.setup_link = f"{cfg.base_url}/setup?token={token}" if token else None
    return dm


async def create_app(cfg: Config, *, db: Database | None = None, migrate: bool = True) -> web.Application:
    """Everything that can fail at start (database, session store) fails here, before listening."""
    ensure_data_dir(cfg)
    secret = load_session_secret(cfg)
    db = db or Database(cfg.database)
    if migrate:
        try:
            await upgrade(db)
        except Exception as e:
            await db.close()
            raise StartupError(f"database {db.describe()}: {str(e).splitlines()[0]}") from e
    try:
        storage, close_storage = await make_storage(cfg.sessions, secret, cfg.session_max_age)
    except BaseException:
        await db.close()  # an unreachable session store: the database opened above is not left open
        raise

    from dmd.pages import setup_pages
    from dmd.pages.render import html_error

    app = web.Application(middlewares=build_middlewares(storage, html_error), client_max_size=cfg.max_body_bytes)
    app[DM] = dm = await compose(cfg, db, secret)
    app.router.add_get(AGENT_WS_PATH, agent_ws)
    app.router.add_route("*", BLOB_PATH, dm.blobs.handle)
    api = build_api()
    api.register(app)
    dm.openapi = build_openapi(api.routes)
    setup_pages(app)
    gateway = SshGateway(dm)

    async def _start(_: web.Application) -> None:
        await dm.hub.start()
        await gateway.start()

    async def _stop_agents(_: web.Application) -> None:
        # Before the server waits for open connections to finish: close the SSH gateway (its
        # forwards ride on the agents' links) and the agents' links.
        await gateway.stop()
        await dm.local_node.stop()
        await dm.reconciler.stop()
        await dm.hub.stop()

    async def _close(_: web.Application) -> None:
        await close_storage()
        await db.close()

    app.on_startup.append(_start)
    app.on_shutdown.append(_stop_agents)
    app.on_cleanup.append(_close)
    return app
