"""The JSON API's tests run on SQLite, PostgreSQL and MariaDB."""

from tests.databases import every_database  # noqa: F401 (fixture: each test on all three databases)
