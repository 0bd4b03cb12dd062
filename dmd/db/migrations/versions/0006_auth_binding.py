"""Sessions and API tokens bound to a per-user key that is never reused; user and token ids
never reused on SQLite (AUTOINCREMENT)

Revision ID: 0006
Revises: 0005
"""

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_KEY = sa.String(32)


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    # Added nullable, filled, then made NOT NULL (a plain ADD COLUMN on every dialect).
    with op.batch_alter_table("users", recreate="never") as b:
        b.add_column(sa.Column("session_key", _KEY, nullable=True))
    with op.batch_alter_table("api_tokens", recreate="never") as b:
        b.add_column(sa.Column("user_key", _KEY, nullable=True))
    users = sa.table("users", sa.column("id", sa.Integer), sa.column("session_key", _KEY))
    for (uid,) in bind.execute(sa.select(users.c.id)).all():
        bind.execute(users.update().where(users.c.id == uid).values(session_key=secrets.token_hex(16)))
    bind.execute(sa.text(
        "UPDATE api_tokens SET user_key = (SELECT session_key FROM users WHERE users.id = api_tokens.user_id)"
    ))
    # On SQLite the tables are rebuilt with AUTOINCREMENT, so a deleted row's id is never handed
    # out again (PostgreSQL sequences and MariaDB's AUTO_INCREMENT never reuse one). The rebuild
    # runs with foreign keys off (dmd.db.migrate), or dropping the old users table would cascade.
    kw = {"recreate": "always", "table_kwargs": {"sqlite_autoincrement": True}} if sqlite else {}
    with op.batch_alter_table("users", **kw) as b:  # type: ignore[arg-type]
        b.alter_column("session_key", existing_type=_KEY, nullable=False)
    with op.batch_alter_table("api_tokens", **kw) as b:  # type: ignore[arg-type]
        b.alter_column("user_key", existing_type=_KEY, nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("api_tokens") as b:
        b.drop_column("user_key")
    with op.batch_alter_table("users") as b:
        b.drop_column("session_key")
