"""Schema migrations (Alembic), applied at start and by `dmd migrate`."""

from __future__ import annotations

import logging
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

    async with db.begin() as conn:
        await conn.run_sync(_upgrade)
    after = await current_revision(db)
    assert after is not None
    if before != after:
        log.info("database schema migrated from %s to %s", before or "empty", after)
    return before, after
