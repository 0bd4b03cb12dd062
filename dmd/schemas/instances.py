"""Instances, their SSH and port maps, capacity, images and containers."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, StringConstraints

__all__ = [
    "Arg",
    "CapacityOut",
    "CommitIn",
    "ContainerOut",
    "CopyIn",
    "EnvKey",
    "GpuId",
    "HostKeyOut",
    "ImageOut",
    "ImagePatchIn",
    "ImageRef",
    "InstanceCreateIn",
    "InstanceDefaultsIn",
    "InstanceDefaultsOut",
    "InstanceOut",
    "InstanceQuery",
    "LogsQuery",
    "Port",
    "PortMapIn",
    "PortMapOut",
    "PortMapQuery",
    "Protocol",
    "PullIn",
    "SshOut",
    "SshPatchIn",
]

from dmd.schemas.base import MAX_ID, In, PageQuery, QueryIn
from dmd.schemas.nodes import NodeName

# --- instances ----------------------------------------------------------------------

ImageRef = Annotated[str, StringConstraints(min_length=1, max_length=255,
                                            pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$")]
EnvKey = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
Arg = Annotated[str, StringConstraints(max_length=8192), AfterValidator(lambda v: _no_nul(v))]
# An empty id passes here to be refused by the placement with its own message (naming "gpus").
GpuId = Annotated[str, StringConstraints(max_length=128, pattern=r"^[A-Za-z0-9:_./-]*$")]


def _no_nul(v: str) -> str:
    if "\x00" in v:
        raise ValueError("must not contain NUL characters")
    return v


# What one instance may carry into its container spec, well below the agent link's message
# limit (1 MiB), so that no spec is too large to send and holds back its node's reconcile rounds
# (issue 10, hole 5). Measured as dmd stores it (JSON with non-ASCII escaped, which is never
# shorter than what travels), so that it also fits a MariaDB TEXT column (65535 bytes).
ENV_MAX_ENTRIES = 128
ENV_MAX_BYTES = 60 * 1024
COMMAND_MAX_ARGS = 200
COMMAND_MAX_BYTES = 60 * 1024


def _json_bytes(value: object) -> int:
    return len(json.dumps(value))  # ASCII only: characters are bytes


def _env_size(env: dict[str, str]) -> dict[str, str]:
    size = _json_bytes(env)
    if size > ENV_MAX_BYTES:
        raise ValueError(f"at most {ENV_MAX_BYTES} bytes in all (as JSON); these are {size}: put large "
                         "settings in a file of the image or a volume instead")
    return env


def _command_size(command: list[str] | None) -> list[str] | None:
    if command is not None and (size := _json_bytes(command)) > COMMAND_MAX_BYTES:
        raise ValueError(f"at most {COMMAND_MAX_BYTES} bytes in all (as JSON); these are {size}: use a script "
                         "in the image instead")
    return command


Port = Annotated[int, Field(ge=1, le=65535)]
Protocol = Literal["tcp", "udp"]


class PortMapIn(In):
    instance_port: Port = Field(description="The port inside the instance")
    protocol: Protocol = "tcp"
    host_port: Port | None = Field(None, description="A free port of the node's pool; omit to let DM pick one")


class InstanceCreateIn(In):
    name: NodeName
    image: ImageRef
    node_id: Annotated[int, Field(ge=1, le=MAX_ID)] | None = Field(None, description="Omit to let DM place it")
    cpus: Annotated[float, Field(gt=0, le=1024)] | None = Field(
        None, description="Omit for the node's default (GET /capacity: default_cpus)")
    memory_mb: Annotated[int, Field(ge=6, le=16 * 1024 * 1024)] | None = Field(
        None, description="MiB; omit for the node's default (GET /capacity: default_memory_mb)")
    gpus: Annotated[int, Field(ge=0, le=64)] | Annotated[list[GpuId], Field(max_length=64)] = Field(
        0, description="A number of GPUs, or a list of GPU keys on the node (each once; GET /capacity lists "
        "them: the uuid, or 'index:N'/'slot:N' on a node whose GPUs report no distinct uuids)")
    env: Annotated[dict[EnvKey, Arg], Field(max_length=ENV_MAX_ENTRIES), AfterValidator(_env_size)] = Field(
        default_factory=dict, description=f"At most {ENV_MAX_ENTRIES} variables, {ENV_MAX_BYTES} bytes in all as JSON")
    command: Annotated[list[Arg], Field(min_length=1, max_length=COMMAND_MAX_ARGS),
                       AfterValidator(_command_size)] | None = Field(
        None, description=f"At most {COMMAND_MAX_ARGS} arguments, {COMMAND_MAX_BYTES} bytes in all as JSON")
    privileged: bool = Field(False, description="Administrators only")
    host_network: bool = Field(False, description="Administrators only")
    ssh: bool = Field(True, description="Let the chosen SSH keys in (the image needs an OpenSSH server; DM "
                      "starts and supervises it) and map port 22 from the node's pool")
    ssh_key_ids: Annotated[list[Annotated[int, Field(ge=1, le=MAX_ID)]], Field(max_length=100)] | None = Field(
        None, description="Your keys to put in; omit for all of your keys, including keys you add later")
    port_maps: Annotated[list[PortMapIn], Field(max_length=100)] = Field(
        default_factory=list, description="Host ports to map to the instance's ports (port 22 is mapped "
        "already when ssh is on)")


class InstanceDefaultsIn(In):
    cpus: Annotated[float, Field(gt=0, le=1024)] | None = Field(
        None, description="CPUs of an instance created on this node without any; null: DM's default (1)")
    memory_mb: Annotated[int, Field(ge=6, le=16 * 1024 * 1024)] | None = Field(
        None, description="Memory (MiB) of an instance created on this node without any; null: DM's default (1024)")


class InstanceDefaultsOut(BaseModel):
    node_id: int
    cpus: float | None = Field(description="As set for this node; null: DM's default")
    memory_mb: int | None = Field(description="As set for this node; null: DM's default")
    effective_cpus: float = Field(description="What an instance created without cpus gets here")
    effective_memory_mb: int = Field(description="What an instance created without memory_mb gets here")


class SshPatchIn(In):
    enabled: bool | None = Field(None, description="SSH on or off (off revokes DM's keys in the instance)")
    ssh_key_ids: Annotated[list[Annotated[int, Field(ge=1, le=MAX_ID)]], Field(max_length=100)] | None = Field(
        None, description="The owner's keys to put in; null: all of them, following additions")


class HostKeyOut(BaseModel):
    type: str
    fingerprint: str


class SshOut(BaseModel):
    enabled: bool
    keys_all: bool = Field(description="All of the owner's keys, including keys added later")
    key_ids: list[int]
    state: Literal["unknown", "ready", "no_server", "not_running", "disabled", "error"] = Field(
        description="What the node's agent last reported; no_server: the image has no OpenSSH server")
    user: str = Field(description="The login user")
    message: str | None
    host_keys: list[HostKeyOut] = Field(description="The instance's SSH host keys, to check on first login")
    port: int | None = Field(description="The host port mapped to port 22")
    address: str = Field(description="The node's address as users reach it")
    command: str | None = Field(description="The ssh command line to log in")
    config: str | None = Field(description="An ~/.ssh/config block for this instance")


class PortMapOut(BaseModel):
    id: int
    instance_id: int
    instance_name: str | None
    node_id: int
    node_name: str | None
    protocol: Protocol
    host_port: int
    instance_port: int
    state: Literal["pending", "active", "waiting", "failed"] = Field(
        description="active: forwarding; waiting: the instance is not running; pending: the node has not "
        "applied it yet (offline); failed: see message")
    message: str | None
    address: str = Field(description="Where to connect: the node's address and the host port")
    created_at: dt.datetime


class PortMapQuery(PageQuery):
    instance_id: int | None = Field(None, ge=1, le=MAX_ID)
    node_id: int | None = Field(None, ge=1, le=MAX_ID)


class InstanceOut(BaseModel):
    id: int
    name: str
    owner_id: int
    node_id: int
    image: str
    cpus: float | None
    memory_mb: int | None
    gpus: list[str] = Field(description="The node's GPUs this instance holds (uuids; 'index:N', else 'slot:N', "
                            "where a node's GPUs report no distinct uuids)")
    env: dict[str, str]
    command: list[str] | None
    privileged: bool
    host_network: bool
    desired: Literal["running", "stopped", "deleted"]
    status: Literal["pending", "creating", "running", "stopped", "error", "deleting"]
    status_message: str | None
    node_online: bool = Field(description="Whether the instance's node is online now. When it is not, status is "
                              "the last one its agent reported, and actions that need the agent (restart, logs, "
                              "terminal, files, commit) wait for it; start, stop and delete are kept and applied "
                              "when it returns")
    container_id: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    ssh: SshOut | None = Field(None, description="SSH access (in single-instance replies, not in lists)")
    port_maps: list[PortMapOut] | None = Field(None, description="Port maps (in single-instance replies, not in "
                                               "lists: see GET /port-maps)")


class InstanceQuery(PageQuery):
    node_id: int | None = Field(None, ge=1, le=MAX_ID)


class LogsQuery(QueryIn):
    tail: int = Field(200, ge=0, le=100_000)
    follow: bool = False


class CapacityOut(BaseModel):
    node_id: int
    name: str
    status: str
    cordoned: bool
    cpus_free: float | None
    memory_mb_free: int | None
    gpus_free: list[dict[str, Any]]
    gpus_total: int
    default_cpus: float = Field(description="CPUs an instance created here without cpus gets (and counts at)")
    default_memory_mb: int = Field(description="Memory (MiB) an instance created here without memory_mb gets")


class ImageOut(BaseModel):
    id: int
    node_id: int
    ref: str
    image_id: str
    size: int | None
    owner_id: int | None
    public: bool
    created_at: dt.datetime
    updated_at: dt.datetime


class PullIn(In):
    ref: ImageRef
    username: Annotated[str, StringConstraints(max_length=256)] | None = None
    password: Annotated[str, StringConstraints(max_length=4096)] | None = Field(
        None, description="Used for this pull only; never stored")


class ImagePatchIn(In):
    public: bool


class CopyIn(In):
    node_id: Annotated[int, Field(ge=1, le=MAX_ID)]


class CommitIn(In):
    repository: Annotated[str, StringConstraints(min_length=1, max_length=200,
                                                 pattern=r"^[a-z0-9][a-z0-9._/-]*$")]
    tag: Annotated[str, StringConstraints(min_length=1, max_length=128,
                                          pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")] = "latest"


class ContainerOut(BaseModel):
    id: str
    name: str
    image: str
    state: str
    managed: bool = Field(description="Created by DM; unmanaged containers are listed and left alone")
    instance_id: int | None
