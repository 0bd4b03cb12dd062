"""Rows as the rest of dmd sees them (plain dataclasses, not ORM objects), and who acts."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from agent.protocol import PortMap as WirePortMap
from dmd.sshkeys import label_of

SSH_PORT = 22  # where an instance's sshd listens (DM maps a host port to it)


def mib_text(value: Any) -> str:
    """A size given in MiB, in the largest unit that keeps it readable: the one way pages and
    messages (capacity refusals) write memory."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "—"
    for unit, size in (("TiB", 1024 * 1024), ("GiB", 1024)):
        if abs(value) >= size:
            n = value / size
            return f"{n:.0f} {unit}" if n >= 100 else f"{n:.1f} {unit}"
    return f"{value:.0f} MiB"


@dataclass(frozen=True, slots=True)
class User:
    id: int
    email: str
    username: str
    role: str
    disabled: bool
    instance_limit: int | None
    node_limit: int | None
    gpu_limit: int | None
    auth_version: int
    created_at: dt.datetime
    updated_at: dt.datetime
    last_login_at: dt.datetime | None
    # Random, never reused (see dmd.db.schema.users): sessions and tokens must carry it.
    session_key: str
    port_map_limit: int | None = None
    log_follow_limit: int | None = None
    transfer_limit: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @classmethod
    def from_row(cls, row: Any) -> User:
        m = row._mapping
        return cls(**{k: m[k] for k in cls.__slots__})  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class UserLimits:
    """What one user may hold at once; None: no limit."""

    nodes: int | None
    port_maps: int | None
    log_follows: int | None
    transfers: int | None  # pulls and imports in flight


@dataclass(frozen=True, slots=True)
class ApiToken:
    id: int
    user_id: int
    name: str
    prefix: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None

    @classmethod
    def from_row(cls, row: Any) -> ApiToken:
        m = row._mapping
        return cls(**{k: m[k] for k in cls.__slots__})  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Node:
    id: int
    name: str
    owner_id: int | None
    status: str
    cordoned: bool
    local: bool
    join_expires_at: dt.datetime | None
    facts: dict[str, Any] | None
    agent_version: str | None
    protocol_version: int | None
    connected_at: dt.datetime | None
    last_seen: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    # The size of instances created on the node without one (None: dmd's defaults).
    default_cpus: float | None = None
    default_memory_mb: int | None = None
    public: bool = False  # provided by an administrator for everyone

    @property
    def joined(self) -> bool:
        return self.status != "pending"

    @property
    def gpus(self) -> list[dict[str, Any]]:
        gpus = (self.facts or {}).get("gpus") or []
        return [g for g in gpus if isinstance(g, dict)]

    @classmethod
    def from_row(cls, row: Any) -> Node:
        import json

        m = row._mapping
        values = {k: m[k] for k in cls.__slots__ if k != "facts"}  # type: ignore[attr-defined]
        facts = m["facts"]
        return cls(facts=json.loads(facts) if facts else None, **values)


@dataclass(frozen=True, slots=True)
class Instance:
    id: int
    name: str
    owner_id: int
    node_id: int
    image: str
    cpus: float | None
    memory_mb: int | None
    env: dict[str, str]
    command: list[str] | None
    privileged: bool
    host_network: bool
    desired: str
    status: str
    status_message: str | None
    container_id: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    ssh_enabled: bool = True
    ssh_keys_all: bool = True  # all of the owner's keys, following additions; else instance_ssh_keys
    ssh_status: dict[str, Any] | None = None  # the agent's last SshStatus

    @classmethod
    def from_row(cls, row: Any) -> Instance:
        import json

        m = row._mapping
        values = {k: m[k] for k in cls.__slots__  # type: ignore[attr-defined]
                  if k not in ("env", "command", "ssh_status")}
        ssh_status = m["ssh_status"]
        return cls(env=json.loads(m["env"] or "{}"), command=json.loads(m["command"]) if m["command"] else None,
                   ssh_status=json.loads(ssh_status) if ssh_status else None, **values)


@dataclass(frozen=True, slots=True)
class PortMap:
    id: int
    node_id: int
    instance_id: int
    protocol: str
    host_port: int
    instance_port: int
    state: str  # pending | active | waiting | failed
    message: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    # Joined for display (None where the query did not join them).
    instance_name: str | None = None
    owner_id: int | None = None
    node_name: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> PortMap:
        m = row._mapping
        return cls(**{k: m[k] for k in cls.__slots__ if k in m})  # type: ignore[attr-defined]

    def to_wire(self) -> WirePortMap:
        """The map as the agent is given it (``ports.apply``)."""
        return WirePortMap(id=self.id, instance_id=self.instance_id, protocol=self.protocol,  # type: ignore[arg-type]
                           host_port=self.host_port, instance_port=self.instance_port)


@dataclass(frozen=True, slots=True)
class SshKey:
    id: int
    user_id: int
    name: str
    key_type: str
    public_key: str
    fingerprint: str
    bits: int
    comment: str
    created_at: dt.datetime
    updated_at: dt.datetime

    @property
    def label(self) -> str:
        """ED25519, ECDSA, RSA, ... as `ssh-keygen -l` names the type."""
        return label_of(self.key_type)

    @classmethod
    def from_row(cls, row: Any) -> SshKey:
        m = row._mapping
        return cls(**{k: m[k] for k in cls.__slots__})  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class InstanceDetail:
    """An instance with what its single-instance views show, read in one transaction."""

    instance: Instance
    gpus: list[str]  # ledger keys of the GPUs it holds
    node: Node
    maps: list[PortMap]
    key_ids: list[int]  # the SSH keys that go in


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: a user, or the system itself (CLI, start-up) when user is None."""

    user: User | None
    ip: str | None = None
    label: str | None = None

    @property
    def name(self) -> str:
        if self.user is not None:
            return self.user.username
        return self.label or "system"


SYSTEM = Actor(None, None, "system")
