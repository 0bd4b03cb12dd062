"""Alembic environment: always driven from dmd.db.migrate with a live connection."""

from alembic import context

from dmd.db.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
