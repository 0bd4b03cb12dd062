"""Each node's default size of instances created without one; existing ones get dmd's

Revision ID: 0008
Revises: 0007

Instances created without cpus/memory_mb ran without cgroup limits and counted as zero in
placement (issue 10, hole 11). Each node may now set the size such instances get (NULL: dmd's
own, 1 CPU and 1024 MiB), and existing instances without a size are counted at dmd's defaults
from now on (their containers get the limits when next created).
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

DEFAULT_CPUS = 1.0  # as dmd.queries.instances.DEFAULT_CPUS, fixed here as at this revision
DEFAULT_MEMORY_MB = 1024


def upgrade() -> None:
    op.add_column("nodes", sa.Column("default_cpus", sa.Float, nullable=True))
    op.add_column("nodes", sa.Column("default_memory_mb", sa.Integer, nullable=True))
    instances = sa.table("instances", sa.column("cpus", sa.Float), sa.column("memory_mb", sa.Integer))
    op.execute(instances.update().where(instances.c.cpus.is_(None)).values(cpus=DEFAULT_CPUS))
    op.execute(instances.update().where(instances.c.memory_mb.is_(None)).values(memory_mb=DEFAULT_MEMORY_MB))


def downgrade() -> None:
    # The filled sizes stay: they are what the instances are counted at.
    op.drop_column("nodes", "default_memory_mb")
    op.drop_column("nodes", "default_cpus")
