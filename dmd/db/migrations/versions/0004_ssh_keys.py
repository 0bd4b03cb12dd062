"""SSH public keys

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from dmd.db.types import UtcDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ssh_keys",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("key_type", sa.String(64), nullable=False),
        sa.Column("public_key", sa.Text, nullable=False),
        # Compared byte for byte: base64 is case-sensitive, MariaDB's default collation is not.
        sa.Column("fingerprint", sa.String(64).with_variant(
            mysql.VARCHAR(64, charset="ascii", collation="ascii_bin"), "mysql", "mariadb"), nullable=False),
        sa.Column("bits", sa.Integer, nullable=False),
        sa.Column("comment", sa.String(200), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ssh_keys"),
        sa.UniqueConstraint("user_id", "fingerprint", name="uq_ssh_keys_user_id_fingerprint"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_ssh_keys_user_id_users", ondelete="CASCADE"),
    )
    op.create_index("ix_ssh_keys_user_id", "ssh_keys", ["user_id"])


def downgrade() -> None:
    op.drop_table("ssh_keys")
