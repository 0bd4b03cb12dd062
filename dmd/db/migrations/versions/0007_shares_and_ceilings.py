"""Node shares the recipient accepts, nodes an admin provides for everyone, per-user ceilings

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from dmd.db.types import UtcDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# What users who exist before this revision may hold at once (new users get the same through
# dmd.queries.users.DEFAULT_CEILINGS). Their node quota stays what it was.
_CEILINGS = {"port_map_limit": 20, "log_follow_limit": 4, "transfer_limit": 2}


def upgrade() -> None:
    # NULL: pending, the recipient has not accepted the share yet.
    op.add_column("node_shares", sa.Column("accepted_at", UtcDateTime, nullable=True))
    op.add_column("nodes", sa.Column("public", sa.Boolean, nullable=False, server_default=sa.false()))
    for name in _CEILINGS:
        op.add_column("users", sa.Column(name, sa.Integer, nullable=True))
    users = sa.table("users", *(sa.column(n, sa.Integer) for n in _CEILINGS), sa.column("id", sa.Integer),
                     sa.column("role", sa.String))
    op.execute(users.update().values(**_CEILINGS))
    # Shares of nodes an administrator (or the installation) owns were the admins' choice and stay
    # usable; shares of nodes plain users own wait for their recipient to accept them.
    shares = sa.table("node_shares", sa.column("node_id", sa.Integer), sa.column("created_at", UtcDateTime),
                      sa.column("accepted_at", UtcDateTime))
    nodes = sa.table("nodes", sa.column("id", sa.Integer), sa.column("owner_id", sa.Integer))
    admin_nodes = (
        sa.select(nodes.c.id)
        .where(sa.or_(nodes.c.owner_id.is_(None),
                      nodes.c.owner_id.in_(sa.select(users.c.id).where(users.c.role == "admin"))))
    )
    op.execute(shares.update().where(shares.c.node_id.in_(admin_nodes)).values(accepted_at=shares.c.created_at))


def downgrade() -> None:
    for name in _CEILINGS:
        op.drop_column("users", name)
    op.drop_column("nodes", "public")
    op.drop_column("node_shares", "accepted_at")
