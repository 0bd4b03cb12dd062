"""Table definitions (SQLAlchemy Core). Alembic migrations create them; keep both in step."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from dmd.db.types import UtcDateTime

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("email", sa.String(254), nullable=False, unique=True),
    sa.Column("username", sa.String(64), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False, default=False),
    # Quotas: NULL means no limit. Enforced by the instance/node/GPU code.
    sa.Column("instance_limit", sa.Integer, nullable=True),
    sa.Column("node_limit", sa.Integer, nullable=True),
    sa.Column("gpu_limit", sa.Integer, nullable=True),
    # Ceilings on what the user holds at once (NULL: no limit): port maps, log follows, and
    # pulls/imports in flight. New users get dmd.queries.users.DEFAULT_CEILINGS.
    sa.Column("port_map_limit", sa.Integer, nullable=True),
    sa.Column("log_follow_limit", sa.Integer, nullable=True),
    sa.Column("transfer_limit", sa.Integer, nullable=True),
    # Bumped whenever every existing session of the user must end (password change, disable).
    sa.Column("auth_version", sa.Integer, nullable=False, default=1),
    # Random, made at creation and never reused: every session and API token carries it and
    # is checked against it, so a deleted user's cookie never names whoever gets the row next.
    # A new value ends every session and token of the user at once.
    sa.Column("session_key", sa.String(32), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("last_login_at", UtcDateTime, nullable=True),
    # SQLite: AUTOINCREMENT, so ids of deleted users are never handed out again.
    sqlite_autoincrement=True,
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=True),
    sa.Column("last_used_at", UtcDateTime, nullable=True),
    # The owner's session_key when the token was made: a token answers only while they match.
    sa.Column("user_key", sa.String(32), nullable=False),
    sqlite_autoincrement=True,
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UtcDateTime, nullable=False, index=True),
    # No foreign key: the trail outlives the users it names.
    sa.Column("actor_id", sa.Integer, nullable=True),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("action", sa.String(64), nullable=False, index=True),
    sa.Column("target_type", sa.String(32), nullable=True),
    sa.Column("target_id", sa.String(64), nullable=True),
    sa.Column("ip", sa.String(64), nullable=True),
    sa.Column("detail", sa.Text, nullable=True),  # JSON
)

# Small key/value settings: the pending setup token's hash and similar.
settings = sa.Table(
    "settings",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

nodes = sa.Table(
    "nodes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    # NULL owner: a node of the installation itself (the local node, or its owner was deleted).
    sa.Column("owner_id", sa.Integer, sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True, index=True),
    sa.Column("status", sa.String(16), nullable=False),  # pending | online | offline
    sa.Column("cordoned", sa.Boolean, nullable=False, default=False),
    sa.Column("local", sa.Boolean, nullable=False, default=False),
    # Provided by an administrator for everyone: every user may place on it, and automatic
    # placement may choose it (only while its owner is an admin or none).
    sa.Column("public", sa.Boolean, nullable=False, default=False, server_default=sa.false()),
    sa.Column("credential_hash", sa.String(64), nullable=True, unique=True),
    sa.Column("join_token_hash", sa.String(64), nullable=True, unique=True),
    sa.Column("join_expires_at", UtcDateTime, nullable=True),
    sa.Column("facts", sa.Text, nullable=True),  # JSON, as the agent last reported
    # JSON {"tcp": [...], "udp": [...]}: pool ports host programs listen on (never handed out).
    sa.Column("busy_ports", sa.Text, nullable=True),
    # The size of instances created here without one (NULL: dmd's defaults); admins set it.
    sa.Column("default_cpus", sa.Float, nullable=True),
    sa.Column("default_memory_mb", sa.Integer, nullable=True),
    sa.Column("agent_version", sa.String(64), nullable=True),
    sa.Column("protocol_version", sa.Integer, nullable=True),
    sa.Column("connected_at", UtcDateTime, nullable=True),
    sa.Column("last_seen", UtcDateTime, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

# Users other than the owner who may place instances on a node, once they accepted the share
# (accepted_at NULL: pending; the node is neither theirs to see nor to place on).
node_shares = sa.Table(
    "node_shares",
    metadata,
    sa.Column("node_id", sa.Integer, sa.ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("accepted_at", UtcDateTime, nullable=True),
)

instances = sa.Table(
    "instances",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("owner_id", sa.Integer, sa.ForeignKey("users.id", ondelete="RESTRICT"), nullable=False, index=True),
    sa.Column("node_id", sa.Integer, sa.ForeignKey("nodes.id", ondelete="RESTRICT"), nullable=False, index=True),
    sa.Column("image", sa.String(255), nullable=False),
    sa.Column("cpus", sa.Float, nullable=True),
    sa.Column("memory_mb", sa.Integer, nullable=True),
    sa.Column("env", sa.Text, nullable=False),  # JSON object
    sa.Column("command", sa.Text, nullable=True),  # JSON list
    sa.Column("privileged", sa.Boolean, nullable=False),
    sa.Column("host_network", sa.Boolean, nullable=False),
    # What the user asked for: running | stopped | deleted.
    sa.Column("desired", sa.String(16), nullable=False),
    # What DM last learnt from the node: pending | creating | running | stopped | error | deleting.
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("status_message", sa.Text, nullable=True),
    sa.Column("container_id", sa.String(128), nullable=True),
    # SSH: enabled, and either all of the owner's keys (following additions) or those listed
    # in instance_ssh_keys; ssh_status is the agent's last report (JSON).
    sa.Column("ssh_enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("ssh_keys_all", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("ssh_status", sa.Text, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("owner_id", "name"),
)

# The GPU ledger: a row holds one device of a node for one instance, exclusively.
gpu_allocations = sa.Table(
    "gpu_allocations",
    metadata,
    sa.Column("node_id", sa.Integer, sa.ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("gpu_key", sa.String(128), primary_key=True),  # the uuid, or "index:N" when uuids repeat
    sa.Column("instance_id", sa.Integer, sa.ForeignKey("instances.id", ondelete="CASCADE"), nullable=False,
              index=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
)

# DM's image catalogue: what each node holds (as its agent reports) and who may use it.
images = sa.Table(
    "images",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("node_id", sa.Integer, sa.ForeignKey("nodes.id", ondelete="CASCADE"), nullable=False),
    sa.Column("ref", sa.String(255), nullable=False),  # repository:tag
    sa.Column("image_id", sa.String(128), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=True),
    sa.Column("owner_id", sa.Integer, sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    sa.Column("public", sa.Boolean, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("node_id", "ref"),
)

# SSH public keys. One user's key; two users may register the same key. public_key is the
# canonical authorized_keys line (type, base64, comment; never options).
# The fingerprint is compared byte for byte (base64 is case-sensitive; MariaDB's default is not).
_FINGERPRINT = sa.String(64).with_variant(
    mysql.VARCHAR(64, charset="ascii", collation="ascii_bin"), "mysql", "mariadb"
)

ssh_keys = sa.Table(
    "ssh_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("key_type", sa.String(64), nullable=False),
    sa.Column("public_key", sa.Text, nullable=False),
    sa.Column("fingerprint", _FINGERPRINT, nullable=False),
    sa.Column("bits", sa.Integer, nullable=False),
    sa.Column("comment", sa.String(200), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("user_id", "fingerprint"),
)

# The keys chosen for an instance (when ssh_keys_all is false).
instance_ssh_keys = sa.Table(
    "instance_ssh_keys",
    metadata,
    sa.Column("instance_id", sa.Integer, sa.ForeignKey("instances.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("ssh_key_id", sa.Integer, sa.ForeignKey("ssh_keys.id", ondelete="CASCADE"), primary_key=True,
              index=True),
)

# The port ledger: a row holds one host port of a node for one instance port. The unique
# constraint on (node, protocol, host port) is what makes double allocation impossible.
port_maps = sa.Table(
    "port_maps",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("node_id", sa.Integer, sa.ForeignKey("nodes.id", ondelete="CASCADE"), nullable=False),
    sa.Column("instance_id", sa.Integer, sa.ForeignKey("instances.id", ondelete="CASCADE"), nullable=False),
    sa.Column("protocol", sa.String(3), nullable=False),  # tcp | udp
    sa.Column("host_port", sa.Integer, nullable=False),
    sa.Column("instance_port", sa.Integer, nullable=False),
    # What the agent last said: pending | active | waiting (instance not running) | failed.
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("message", sa.Text, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("node_id", "protocol", "host_port"),
    sa.UniqueConstraint("instance_id", "protocol", "instance_port"),
)
