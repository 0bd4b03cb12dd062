"""Shared fixtures: a dmd application on each real database, logged-in clients, users."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncssh  # noqa: F401 (imported here, not on a test's loop: its import runs ldconfig -p)
import pytest
from aiohttp.test_utils import TestClient

from dmd.app import create_app
from dmd.auth import passwords
from dmd.config import Config
from dmd.core import DM
from dmd.db import Database
from dmd.queries import users
from tests.databases import MYSQL_ADMIN_URL, PG_ADMIN_URL, Templates, create_database, fresh_database
from tests.databases import database_templates as database_templates
from tests.repo_guard import install_open_guard

# Leaked tasks, timers and threads, blocking calls on the loop, asyncio debug mode: tests/guards.py.
pytest_plugins = ("tests.guards", "pytester")

REPO = Path(__file__).resolve().parents[1]
# Opening a file beside the repository (a sibling checkout's fixtures, say) fails the test.
install_open_guard(REPO)
REDIS_URL = os.environ.get("DM_TEST_REDIS", "redis://127.0.0.1:6379/0")
MEMCACHED_URL = os.environ.get("DM_TEST_MEMCACHED", "memcached://127.0.0.1:11211")
PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True, scope="session")
def _no_leftover_forwarding() -> Iterator[None]:
    """Agents killed on purpose (kill -9, a stopped fixture) leave their kernel port-forwarding
    chains behind, as a real agent must; the chains this session's installations made go when it
    ends (those of another test run on the same host stay)."""
    from tests.leftovers import chain_tags, remove_chains, session_chains

    before = chain_tags()
    yield
    remove_chains(session_chains(chain_tags() - before))


@pytest.fixture(autouse=True)
def _fast_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests hash many passwords: use cheap argon2id parameters (same algorithm and code path)."""
    from argon2 import PasswordHasher

    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    monkeypatch.setattr(passwords, "_hasher", cheap)
    monkeypatch.setattr(passwords, "_DUMMY_HASH", cheap.hash("dm-timing-equaliser"))


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A URL of an empty database on each of the three real servers."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/dmd.sqlite3"
        return
    url, drop = await create_database(PG_ADMIN_URL if request.param == "postgresql" else MYSQL_ADMIN_URL)
    try:
        yield url
    finally:
        await drop()


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    from dmd.db.migrate import upgrade

    database = Database(db_url)
    await upgrade(database)
    yield database
    await database.close()


def make_config(tmp_path: Path, **overrides: Any) -> Config:
    # No SSH gateway unless a test asks for one (ssh_listen="127.0.0.1:0"): tests run side by side.
    values: dict[str, Any] = {"data_dir": str(tmp_path / "data"), "listen": "127.0.0.1:3150", "ssh_listen": "off"}
    values.update(overrides)
    return Config(**values).validate()


AppFactory = Callable[..., Awaitable[TestClient]]  # type: ignore[type-arg]


@pytest.fixture
def database() -> str:
    """The server `client`/`make_client` keep dmd's data on: SQLite here; a folder whose conftest
    imports tests.databases.every_database runs its tests on SQLite, PostgreSQL and MariaDB."""
    return "sqlite"


@pytest.fixture
async def make_client(aiohttp_client: Any, tmp_path: Path, database: str,
                      database_templates: Templates) -> AsyncIterator[AppFactory]:
    """make_client(host="127.0.0.1", **config overrides) -> a test client on a fresh dmd listening on
    `host`, on the `database` server.

    Every dmd one test makes shares one database (as they share the data dir's SQLite file)."""
    made: list[TestClient] = []  # type: ignore[type-arg]
    server: list[tuple[str, Callable[[], Awaitable[None]]]] = []

    async def factory(*, host: str = "127.0.0.1", **overrides: Any) -> TestClient:  # type: ignore[type-arg]
        if database != "sqlite" and "database" not in overrides:
            if not server:
                server.append(await fresh_database(database, database_templates))
            overrides["database"] = server[0][0]
        app = await create_app(make_config(tmp_path, **overrides))
        from tests.leftovers import SEEN

        SEEN.add(app[DM].hub.installation_id)
        made.append(await aiohttp_client(app, server_kwargs={"host": host}))
        return made[-1]

    yield factory
    # The database goes after every dmd on it has stopped.
    for c in made:
        await c.close()
    for _, drop in server:
        await drop()


@pytest.fixture
async def client(make_client: AppFactory) -> TestClient:  # type: ignore[type-arg]
    return await make_client()


async def add_user(client: TestClient, email: str, *, role: str = "user", password: str = PASSWORD,  # type: ignore[type-arg]
                   **kw: Any) -> int:
    db: Database = client.app[DM].db
    pw = await passwords.hash_password(password)
    async with db.begin() as conn:
        u = await users.create(conn, email=email, password_hash=pw, role=role, **kw)
    return u.id


async def login(client: TestClient, email: str, password: str = PASSWORD) -> dict[str, str]:  # type: ignore[type-arg]
    """Log in through the API; returns the headers a cookie-authenticated write needs."""
    r = await client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert r.status == 200, await r.text()
    return {"X-CSRF-Token": (await r.json())["csrf_token"]}


async def make_token(client: TestClient, email: str, password: str = PASSWORD) -> dict[str, str]:  # type: ignore[type-arg]
    """A bearer token for the user, through a separate cookie-less login."""
    from aiohttp import ClientSession, CookieJar

    async with ClientSession(base_url=str(client.make_url("")), cookie_jar=CookieJar(unsafe=True)) as s:
        r = await s.post("/api/v1/auth/login", json={"email": email, "password": password})
        assert r.status == 200, await r.text()
        csrf = (await r.json())["csrf_token"]
        r = await s.post("/api/v1/tokens", json={"name": f"t-{secrets.token_hex(3)}"},
                         headers={"X-CSRF-Token": csrf})
        assert r.status == 201, await r.text()
        return {"Authorization": f"Bearer {(await r.json())['token']}"}


@pytest.fixture
async def admin(client: TestClient) -> dict[str, str]:  # type: ignore[type-arg]
    """An admin exists; returns bearer headers for them."""
    await add_user(client, "admin@example.org", role="admin")
    return await make_token(client, "admin@example.org")


def setup_link(client: TestClient) -> str | None:  # type: ignore[type-arg]
    return client.app[DM].setup_link


async def share_node(client: TestClient, node_id: int, username: str, headers: dict[str, str], *,  # type: ignore[type-arg]
                     accept: bool = True) -> None:
    """Share a node with `username` through the API (as `headers`), and have the recipient accept
    it (a share they did not accept lets them use nothing)."""
    r = await client.post(f"/api/v1/nodes/{node_id}/shares", json={"username": username}, headers=headers)
    assert r.status == 201, await r.text()
    if accept:
        import sqlalchemy as sa

        from dmd.db.schema import node_shares
        from dmd.db.schema import users as user_table
        from dmd.db.types import utcnow

        db: Database = client.app[DM].db
        async with db.begin() as conn:
            uid = (await conn.execute(sa.select(user_table.c.id).where(user_table.c.username == username))).scalar_one()
            await conn.execute(node_shares.update().where(node_shares.c.node_id == node_id,
                                                          node_shares.c.user_id == uid).values(accepted_at=utcnow()))
