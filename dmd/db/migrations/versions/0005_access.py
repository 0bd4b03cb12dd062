"""SSH keys of instances and the port ledger

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from dmd.db.types import UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("nodes", sa.Column("busy_ports", sa.Text, nullable=True))
    op.add_column("instances", sa.Column("ssh_enabled", sa.Boolean, nullable=False, server_default=sa.true()))
    op.add_column("instances", sa.Column("ssh_keys_all", sa.Boolean, nullable=False, server_default=sa.true()))
    op.add_column("instances", sa.Column("ssh_status", sa.Text, nullable=True))
    op.create_table(
        "instance_ssh_keys",
        sa.Column("instance_id", sa.Integer, nullable=False),
        sa.Column("ssh_key_id", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("instance_id", "ssh_key_id", name="pk_instance_ssh_keys"),
        sa.ForeignKeyConstraint(["instance_id"], ["instances.id"], name="fk_instance_ssh_keys_instance_id_instances",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["ssh_key_id"], ["ssh_keys.id"], name="fk_instance_ssh_keys_ssh_key_id_ssh_keys",
                                ondelete="CASCADE"),
    )
    op.create_index("ix_instance_ssh_keys_ssh_key_id", "instance_ssh_keys", ["ssh_key_id"])
    op.create_table(
        "port_maps",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("node_id", sa.Integer, nullable=False),
        sa.Column("instance_id", sa.Integer, nullable=False),
        sa.Column("protocol", sa.String(3), nullable=False),
        sa.Column("host_port", sa.Integer, nullable=False),
        sa.Column("instance_port", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("message", sa.Text, nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_port_maps"),
        sa.UniqueConstraint("node_id", "protocol", "host_port", name="uq_port_maps_node_id_protocol_host_port"),
        sa.UniqueConstraint("instance_id", "protocol", "instance_port",
                            name="uq_port_maps_instance_id_protocol_instance_port"),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], name="fk_port_maps_node_id_nodes", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["instance_id"], ["instances.id"], name="fk_port_maps_instance_id_instances",
                                ondelete="CASCADE"),
    )


def downgrade() -> None:
    op.drop_table("port_maps")
    op.drop_table("instance_ssh_keys")
    op.drop_column("instances", "ssh_status")
    op.drop_column("instances", "ssh_keys_all")
    op.drop_column("instances", "ssh_enabled")
    op.drop_column("nodes", "busy_ports")
