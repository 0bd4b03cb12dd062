"""Real databases for tests: a fresh one per test on PostgreSQL and MariaDB, dropped afterwards.

`client` and `make_client` keep their data on the server the `database` fixture names: SQLite
unless a folder's conftest imports `every_database`, which runs each of its tests that uses
them on SQLite, PostgreSQL and MariaDB. SQLite's BEGIN IMMEDIATE queues every writer, so a
missing row lock only shows on the two servers.

Each test gets a database of its own (as each gets its own SQLite file), already migrated:
- PostgreSQL: a copy (`CREATE DATABASE … TEMPLATE`) of one database migrated once per test
  session, which costs ~0.03 s instead of ~0.2 s for a migration;
- MariaDB has no templates (and `CREATE TABLE … LIKE` drops foreign keys), so a fresh database
  is created and `create_app` migrates it (~0.2 s).
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import pytest
import sqlalchemy as sa

from dmd.db import Database

PG_ADMIN_URL = os.environ.get("DM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_ADMIN_URL = os.environ.get("DM_TEST_MYSQL", "mysql://root@127.0.0.1:3306/test")
BACKENDS = ("sqlite", "postgresql", "mysql")
_AUTOCOMMIT = {"isolation_level": "AUTOCOMMIT"}


def _admin_url(backend: str) -> str:
    return {"postgresql": PG_ADMIN_URL, "mysql": MYSQL_ADMIN_URL}[backend]


def _plain(url: sa.URL) -> str:
    return url.set(drivername=url.drivername.split("+")[0]).render_as_string(hide_password=False)


async def _execute(admin: Database, statement: str) -> None:
    async with admin.engine.connect() as conn:
        conn = await conn.execution_options(**_AUTOCOMMIT)
        await conn.execute(sa.text(statement))


async def _drop(admin: Database, name: str) -> None:
    if admin.dialect == "postgresql":
        await _execute(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    else:
        await _execute(admin, f"DROP DATABASE IF EXISTS {name}")


async def create_database(admin_url: str, *, template: str | None = None
                          ) -> tuple[str, Callable[[], Awaitable[None]]]:
    """A fresh, uniquely named database on a real server (a copy of `template`, on PostgreSQL);
    returns its URL and a coroutine function that drops it."""
    name = f"dm_test_{uuid.uuid4().hex[:12]}"
    admin = Database(admin_url)
    try:
        await _execute(admin, f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
    except BaseException:
        await admin.close()
        raise

    async def drop() -> None:
        try:
            await _drop(admin, name)
        finally:
            await admin.close()

    return _plain(admin.url.set(database=name)), drop


@dataclass
class Templates:
    """The migrated template database of this test session, per server that has templates."""

    names: dict[str, str] = field(default_factory=dict)

    async def get(self, backend: str) -> str | None:
        if backend != "postgresql":
            return None
        if backend not in self.names:
            from dmd.db.migrate import upgrade

            url, _ = await create_database(_admin_url(backend))
            db = Database(url)
            try:
                await upgrade(db)
            finally:
                await db.close()  # a template must have no connections when it is copied
            self.names[backend] = url.rsplit("/", 1)[1]
        return self.names[backend]

    def drop_all(self) -> None:
        async def drop() -> None:
            for backend, name in self.names.items():
                admin = Database(_admin_url(backend))
                try:
                    await _drop(admin, name)
                finally:
                    await admin.close()

        # On a thread of its own: no test's event loop is running any more, nor may one be reused.
        t = threading.Thread(target=asyncio.run, args=(drop(),))
        t.start()
        t.join()


@pytest.fixture(scope="session")
def database_templates() -> Iterator[Templates]:
    templates = Templates()
    yield templates
    templates.drop_all()


async def fresh_database(backend: str, templates: Templates) -> tuple[str, Callable[[], Awaitable[None]]]:
    """A migrated (PostgreSQL) or empty (MariaDB) database of the test's own on `backend`."""
    return await create_database(_admin_url(backend), template=await templates.get(backend))


@pytest.fixture(name="database", params=BACKENDS)
def every_database(request: pytest.FixtureRequest) -> str:
    """Import into a folder's conftest: its tests that use `client`/`make_client` run on all three."""
    return str(request.param)
