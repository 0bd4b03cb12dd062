"""The async engine behind every query, with per-dialect care taken in one place."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_ATTEMPTS = 5
# The database rolled the whole transaction back to break a deadlock (or a serialization
# conflict): running it again is the documented answer. MySQL/MariaDB error numbers, then
# PostgreSQL SQLSTATEs.
_MYSQL_RETRY = {1213, 1205}
_PG_RETRY = {"40P01", "40001"}


def is_retryable(exc: BaseException) -> bool:
    """Whether `exc` (or what it was raised from, as when a savepoint's rollback fails after
    the deadlock took the transaction) says "deadlock victim, try again"."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        orig = getattr(seen, "orig", None) if isinstance(seen, DBAPIError) else seen
        args = getattr(orig, "args", ())
        if args and args[0] in _MYSQL_RETRY:
            return True
        if getattr(orig, "sqlstate", None) in _PG_RETRY or getattr(orig, "pgcode", None) in _PG_RETRY:
            return True
        seen = seen.__cause__ or seen.__context__
    return False

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "mysql": "mysql+aiomysql",
    "mariadb": "mysql+aiomysql",
}


def async_url(url: str) -> sa.URL:
    """Map a plain database URL (sqlite:///x, postgresql://..., mysql://...) to its async driver."""
    u = make_url(url)
    backend = u.drivername.split("+", 1)[0]
    if backend not in _DRIVERS:
        raise ValueError(f"unsupported database {backend!r}")
    if "+" not in u.drivername:
        u = u.set(drivername=_DRIVERS[backend])
    if backend in ("mysql", "mariadb"):
        u = u.update_query_dict({"charset": "utf8mb4"})
    return u


class Database:
    """Owns the engine. `begin()` is a write transaction, `read()` a read-only one.

    On SQLite a write transaction starts with BEGIN IMMEDIATE, so two writers queue on
    the busy timeout instead of one failing with "database is locked" on lock upgrade.
    """

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = async_url(url)
        self.dialect = self.url.get_backend_name()
        kwargs: dict[str, Any] = {"echo": echo}
        if self.dialect == "sqlite":
            db_path = self.url.database
            if db_path and db_path != ":memory:":
                Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        else:
            kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True, pool_recycle=3600)
        if self.dialect == "mysql":
            # PostgreSQL's level: a statement sees what was committed before it, so a count
            # after a row lock is true; InnoDB's default (repeatable read) would read the
            # snapshot of the transaction's first read, and lock gaps that deadlock inserts.
            kwargs["isolation_level"] = "READ COMMITTED"
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.dialect == "sqlite":
            self._sqlite_setup(self.engine)

    @staticmethod
    def _sqlite_setup(engine: AsyncEngine) -> None:
        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let us issue BEGIN ourselves (see _on_begin).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(conn: sa.Connection) -> None:
            if conn.get_execution_options().get("dm_readonly"):
                conn.exec_driver_sql("BEGIN")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: committed on success, rolled back on any exception."""
        async with self.engine.begin() as conn:
            yield conn

    async def run(self, fn: Callable[[AsyncConnection], Awaitable[T]], *, attempts: int = RETRY_ATTEMPTS) -> T:
        """``fn`` in a write transaction; run again, after a short random pause, when the
        database chose the transaction as a deadlock victim (parallel inserts into one unique
        index can do that on MariaDB). ``fn`` must do nothing but database work."""
        for attempt in range(attempts):
            try:
                async with self.begin() as conn:
                    return await fn(conn)
            except DBAPIError as e:
                if attempt == attempts - 1 or not is_retryable(e):
                    raise
                log.info("transaction chosen as a deadlock victim; running it again (%d)", attempt + 1)
                await asyncio.sleep(random.uniform(0.005, 0.05) * (attempt + 1))
        raise AssertionError("unreachable")

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(dm_readonly=True)
            async with conn.begin():
                yield conn

    async def close(self) -> None:
        await self.engine.dispose()

    def describe(self) -> str:
        return self.url.render_as_string(hide_password=True)
