"""Storage: one SQLAlchemy Core code path over SQLite, PostgreSQL and MySQL/MariaDB."""

from dmd.db.engine import Database, async_url

__all__ = ["Database", "async_url"]
