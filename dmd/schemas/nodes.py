"""Compute nodes: create, join, share, their facts, metrics and round trips."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

__all__ = [
    "GpuOut",
    "JoinIn",
    "JoinOut",
    "JoinTokenOut",
    "MetricsOut",
    "NodeCreateIn",
    "NodeCreatedOut",
    "NodeName",
    "NodeOut",
    "NodePatchIn",
    "NodePublicIn",
    "PingOut",
    "RotateOut",
    "ShareIn",
    "ShareOut",
    "SharedWithMeOut",
]

from dmd.schemas.base import MAX_ID, In, Username

# --- nodes --------------------------------------------------------------------------

NodeName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


class NodeCreateIn(In):
    name: NodeName


class NodePatchIn(In):
    name: NodeName


class NodeOut(BaseModel):
    id: int
    name: str
    owner_id: int | None
    access: Literal["owner", "shared", "public", "admin"] = Field(description="How the caller may use this node")
    public: bool = Field(description="Provided by an administrator for everyone")
    status: Literal["pending", "online", "offline"]
    cordoned: bool
    local: bool
    last_seen: dt.datetime | None
    connected_at: dt.datetime | None
    agent_version: str | None
    protocol_version: int | None
    facts: dict[str, Any] | None = Field(description="What the agent reported: OS, CPU, memory, disk, addresses")
    gpus: list[dict[str, Any]]
    join_expires_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime


class NodeCreatedOut(NodeOut):
    join_token: str = Field(description="One-time token; shown only in this reply")
    join_command: str = Field(description="Run this on the new node")


class JoinTokenOut(BaseModel):
    join_token: str
    join_command: str
    join_expires_at: dt.datetime


class JoinIn(In):
    token: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    hostname: Annotated[str, StringConstraints(max_length=255)] | None = None


class JoinOut(BaseModel):
    node_id: int
    name: str
    credential: str = Field(description="The node's long-lived credential; dmd keeps only its hash")
    heartbeat_s: float


class RotateOut(BaseModel):
    delivered: bool = Field(description="True when the online agent received and saved the new credential")
    join_token: str | None = Field(None, description="When the node was offline: re-join it with this")
    join_command: str | None = None


class ShareIn(In):
    username: Username | None = Field(None, description="The recipient's exact username")
    user_id: Annotated[int, Field(ge=1, le=MAX_ID)] | None = Field(None, description="Administrators only")


class ShareOut(BaseModel):
    user_id: int
    username: str
    email: str | None = Field(description="Shown to administrators only")
    state: Literal["pending", "accepted"] = Field(
        description="pending: the user has not accepted it yet, and may not use the node")
    created_at: dt.datetime
    accepted_at: dt.datetime | None


class SharedWithMeOut(BaseModel):
    node_id: int
    node_name: str
    owner: str | None = Field(description="The node owner's username; null: the installation's own node")
    state: Literal["pending", "accepted"] = Field(
        description="pending: accept it to place instances there; accepted: you may leave it at any time")
    created_at: dt.datetime
    accepted_at: dt.datetime | None


class NodePublicIn(In):
    public: bool = Field(description="Provide the node for everyone: every user may place on it, and automatic "
                         "placement may choose it")


class MetricsOut(BaseModel):
    items: list[dict[str, Any]]


class PingOut(BaseModel):
    rtt_ms: float
    agent_time: float


class GpuOut(BaseModel):
    """One GPU of the administrators' overview (GET /gpus)."""

    node_id: int
    node_name: str
    node_online: bool
    key: str = Field(description="The GPU's ledger key: its uuid, or index:N / slot:N where uuids repeat")
    index: int | None
    name: str | None
    uuid: str | None
    instance_id: int | None = Field(description="The instance that holds the GPU; null when it is free")
    instance_name: str | None
    username: str | None = Field(description="The holding instance's owner")
    utilization_pct: float | None = Field(description="From the node's newest metrics sample; null when none")
    memory_used_mb: float | None
    memory_total_mb: float | None
    idle: Literal["busy", "idle", "idle_at_least", "unknown"] = Field(
        description="From the metrics kept in memory (about 15 minutes): busy (used at the newest sample), idle "
                    "(idle_s since it was last used), idle_at_least (not used in any kept sample: idle_s since the "
                    "oldest), unknown (no sample)")
    idle_s: float | None
