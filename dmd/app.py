"""Build the one aiohttp application that serves pages, the JSON API and (later) WebSockets."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from aiohttp import web

from agent.protocol import AGENT_WS_PATH
from dmd.agents import HUB, Hub
from dmd.agents.endpoint import agent_ws
from dmd.api import build_api
from dmd.api.meta import OPENAPI_KEY
from dmd.api.openapi import build as build_openapi
from dmd.auth.cache import TokenCache
from dmd.auth.throttle import LoginThrottle
from dmd.blobs import BLOB_PATH, BLOBS, BlobStore
from dmd.config import Config
from dmd.db import Database
from dmd.db.migrate import upgrade
from dmd.errors import StartupError
from dmd.local_node import LOCAL_NODE, LocalNode
from dmd.middleware import build_middlewares
from dmd.reconciler import RECONCILER, Reconciler
from dmd.services import settings as settings_svc
from dmd.services import setup as setup_svc
from dmd.sessions import make_storage
from dmd.state import CONFIG, DB, SESSION_SECRET, THROTTLE, TOKEN_CACHE

log = logging.getLogger("dmd")

SETUP_LINK_KEY: web.AppKey[str | None] = web.AppKey("dm_setup_link")


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

    app = web.Application(middlewares=build_middlewares(storage), client_max_size=cfg.max_body_bytes)
    app[CONFIG] = cfg
    app[DB] = db
    app[SESSION_SECRET] = secret
    app[TOKEN_CACHE] = TokenCache()
    app[THROTTLE] = LoginThrottle()

    async with db.begin() as conn:
        installation_id = await settings_svc.get(conn, "installation_id")
        if installation_id is None:
            installation_id = secrets.token_hex(8)
            await settings_svc.put(conn, "installation_id", installation_id)
    hub = Hub(db, cfg.agent_heartbeat_s, installation_id)
    app[HUB] = hub
    app[RECONCILER] = reconciler = Reconciler(db, hub)
    app.router.add_get(AGENT_WS_PATH, agent_ws)
    app[BLOBS] = blobs = BlobStore(Path(cfg.data_dir) / "blobs")
    app.router.add_route("*", BLOB_PATH, blobs.handle)

    api = build_api()
    api.register(app)
    app[OPENAPI_KEY] = build_openapi(api.routes)

    from dmd.pages import setup_pages

    setup_pages(app)

    async with db.begin() as conn:
        token = await setup_svc.issue_if_needed(conn)
    app[SETUP_LINK_KEY] = f"{cfg.base_url}/setup?token={token}" if token else None

    async def _start(_: web.Application) -> None:
        await hub.start()

    app[LOCAL_NODE] = LocalNode()

    async def _stop_agents(_: web.Application) -> None:
        # Before the server waits for open connections to finish: close the agents' links.
        await app[LOCAL_NODE].stop()
        await reconciler.stop()
        await hub.stop()

    async def _close(_: web.Application) -> None:
        await close_storage()
        await db.close()

    app.on_startup.append(_start)
    app.on_shutdown.append(_stop_agents)
    app.on_cleanup.append(_close)
    return app
