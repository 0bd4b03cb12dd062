"""instances, the GPU ledger and the image catalogue

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from dmd.db.types import UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "instances",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("owner_id", sa.Integer, nullable=False),
        sa.Column("node_id", sa.Integer, nullable=False),
        sa.Column("image", sa.String(255), nullable=False),
        sa.Column("cpus", sa.Float, nullable=True),
        sa.Column("memory_mb", sa.Integer, nullable=True),
        sa.Column("env", sa.Text, nullable=False),
        sa.Column("command", sa.Text, nullable=True),
        sa.Column("privileged", sa.Boolean, nullable=False),
        sa.Column("host_network", sa.Boolean, nullable=False),
        sa.Column("desired", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_message", sa.Text, nullable=True),
        sa.Column("container_id", sa.String(128), nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_instances"),
        sa.UniqueConstraint("owner_id", "name", name="uq_instances_owner_id_name"),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name="fk_instances_owner_id_users", ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], name="fk_instances_node_id_nodes", ondelete="RESTRICT"),
    )
    op.create_index("ix_instances_owner_id", "instances", ["owner_id"])
    op.create_index("ix_instances_node_id", "instances", ["node_id"])
    op.create_table(
        "gpu_allocations",
        sa.Column("node_id", sa.Integer, nullable=False),
        sa.Column("gpu_key", sa.String(128), nullable=False),
        sa.Column("instance_id", sa.Integer, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("node_id", "gpu_key", name="pk_gpu_allocations"),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], name="fk_gpu_allocations_node_id_nodes",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["instance_id"], ["instances.id"], name="fk_gpu_allocations_instance_id_instances",
                                ondelete="CASCADE"),
    )
    op.create_index("ix_gpu_allocations_instance_id", "gpu_allocations", ["instance_id"])
    op.create_table(
        "images",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("node_id", sa.Integer, nullable=False),
        sa.Column("ref", sa.String(255), nullable=False),
        sa.Column("image_id", sa.String(128), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=True),
        sa.Column("owner_id", sa.Integer, nullable=True),
        sa.Column("public", sa.Boolean, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_images"),
        sa.UniqueConstraint("node_id", "ref", name="uq_images_node_id_ref"),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], name="fk_images_node_id_nodes", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name="fk_images_owner_id_users", ondelete="SET NULL"),
    )


def downgrade() -> None:
    op.drop_table("images")
    op.drop_table("gpu_allocations")
    op.drop_table("instances")
