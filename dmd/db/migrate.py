"""Schema migrations (Alembic), applied at start and by `dmd migrate`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from dmd.db.engine import Database

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).with_name("migrations")


def _alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


async def current_revision(db: Database) -> str | None:
    def _current(conn: sa.Connection) -> str | None:
        return MigrationContext.configure(conn).get_current_revision()

    async with db.engine.connect() as conn:
        return await conn.run_sync(_current)


async def upgrade(db: Database, target: str = "head") -> tuple[str | None, str]:
    """Bring the schema to `target`. Returns (revision before, revision after)."""
    before = await current_revision(db)

    def _upgrade(conn: sa.Connection) -> None:
        cfg = _alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, target)

    if db.dialect == "sqlite":
        async with db.engine.connect() as conn:
            await conn.run_sync(_sqlite_upgrade, _upgrade)
        return before, await _after(db, before)
    async with db.begin() as conn:
        await conn.run_sync(_upgrade)
    return before, await _after(db, before)


def _sqlite_upgrade(conn: sa.Connection, run: Callable[[sa.Connection], None]) -> None:
    """Rebuilding a table on SQLite (Alembic's batch mode: copy, drop, rename) needs foreign keys
    off, or dropping the old table deletes, by cascade, every row that refers to it. The pragma
    only takes effect outside a transaction, so it is set on the raw connection before BEGIN;
    the references are checked before the commit."""
    raw = conn.connection.dbapi_connection
    assert raw is not None

    def pragma(sql: str) -> None:
        cur = raw.cursor()
        cur.execute(sql)
        cur.close()

    pragma("PRAGMA foreign_keys=OFF")
    try:
        with conn.begin():
            run(conn)
            broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
            if broken:
                raise RuntimeError(f"the migration left rows that refer to nothing: {broken[:5]}")
    finally:
        pragma("PRAGMA foreign_keys=ON")


async def _after(db: Database, before: str | None) -> str:
    after = await current_revision(db)
    assert after is not None
    if before != after:
        log.info("database schema migrated from %s to %s", before or "empty", after)
    return after
