"""compute nodes and node sharing

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from dmd.db.types import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("owner_id", sa.Integer, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("cordoned", sa.Boolean, nullable=False),
        sa.Column("local", sa.Boolean, nullable=False),
        sa.Column("credential_hash", sa.String(64), nullable=True),
        sa.Column("join_token_hash", sa.String(64), nullable=True),
        sa.Column("join_expires_at", UtcDateTime, nullable=True),
        sa.Column("facts", sa.Text, nullable=True),
        sa.Column("agent_version", sa.String(64), nullable=True),
        sa.Column("protocol_version", sa.Integer, nullable=True),
        sa.Column("connected_at", UtcDateTime, nullable=True),
        sa.Column("last_seen", UtcDateTime, nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_nodes"),
        sa.UniqueConstraint("name", name="uq_nodes_name"),
        sa.UniqueConstraint("credential_hash", name="uq_nodes_credential_hash"),
        sa.UniqueConstraint("join_token_hash", name="uq_nodes_join_token_hash"),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name="fk_nodes_owner_id_users", ondelete="SET NULL"),
    )
    op.create_index("ix_nodes_owner_id", "nodes", ["owner_id"])
    op.create_table(
        "node_shares",
        sa.Column("node_id", sa.Integer, nullable=False),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("node_id", "user_id", name="pk_node_shares"),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], name="fk_node_shares_node_id_nodes", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_node_shares_user_id_users", ondelete="CASCADE"),
    )
    op.create_index("ix_node_shares_user_id", "node_shares", ["user_id"])


def downgrade() -> None:
    op.drop_table("node_shares")
    op.drop_table("nodes")
