"""Request and response schemas of the JSON API (pydantic). They validate requests and
generate the OpenAPI document."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from dmd.auth.passwords import MAX_LENGTH as PW_MAX
from dmd.auth.passwords import MIN_LENGTH as PW_MIN
from dmd.models import ApiToken, User

# Ids are 32-bit integers in every database; PostgreSQL refuses a larger number in a query
# outright, so one is refused here with the field's name.
MAX_ID = 2**31 - 1


def _id_cursor(value: str) -> str:
    if int(value) > MAX_ID:
        raise ValueError(f"a cursor is at most {MAX_ID}")
    return value


def _printable(v: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in v):
        raise ValueError("must not contain control characters or line breaks")
    return v


class In(BaseModel):
    """Every request body: unknown fields are an error, types are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)


class QueryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


Email = Annotated[str, StringConstraints(min_length=3, max_length=254), AfterValidator(_printable)]
Password = Annotated[str, StringConstraints(min_length=PW_MIN, max_length=PW_MAX)]
Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), AfterValidator(_printable)
]
Username = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_printable)]
Quota = Annotated[int, Field(ge=0, le=1_000_000)]
Role = Literal["admin", "user"]

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= to get the next page; null on the last page."
    )


class PageQuery(QueryIn):
    limit: int = Field(50, ge=1, le=200)
    cursor: Annotated[str, StringConstraints(pattern=r"^\d{1,10}$"), AfterValidator(_id_cursor)] | None = None

    @property
    def cursor_id(self) -> int | None:
        return int(self.cursor) if self.cursor else None


def page_of(items: list[Any], query: PageQuery, key: str = "id") -> dict[str, Any]:
    """Items fetched with limit+1: the extra one only says whether there is a next page."""
    more = len(items) > query.limit
    items = items[: query.limit]
    last = items[-1] if items else None
    nxt = None
    if more and last is not None:
        nxt = str(last[key] if isinstance(last, dict) else getattr(last, key))
    return {"items": items, "next_cursor": nxt}


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorOut(BaseModel):
    error: ErrorBody


# --- auth ---------------------------------------------------------------------------

class LoginIn(In):
    email: Email
    password: Annotated[str, StringConstraints(min_length=1, max_length=PW_MAX)]


class SetupIn(In):
    token: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    email: Email
    password: Password
    username: Username | None = None


class PasswordChangeIn(In):
    current_password: Annotated[str, StringConstraints(min_length=1, max_length=PW_MAX)]
    new_password: Password


class UserOut(Out):
    id: int
    email: str
    username: str
    role: Role
    disabled: bool
    instance_limit: int | None = Field(description="null: no limit")
    node_limit: int | None = Field(description="null: no limit")
    gpu_limit: int | None = Field(description="null: no limit")
    created_at: dt.datetime
    updated_at: dt.datetime
    last_login_at: dt.datetime | None

    @classmethod
    def of(cls, u: User) -> UserOut:
        return cls.model_validate(u)


class LoginOut(BaseModel):
    user: UserOut
    csrf_token: str = Field(description="Send as X-CSRF-Token on cookie-authenticated writes")


class MeOut(UserOut):
    auth: Literal["session", "token"]


class HealthOut(BaseModel):
    status: Literal["ok"]
    version: str
    database: str
    sessions: str


# --- users --------------------------------------------------------------------------

class UserCreateIn(In):
    email: Email
    password: Password
    role: Role = "user"
    username: Username | None = None
    instance_limit: Quota | None = None
    node_limit: Quota | None = None
    gpu_limit: Quota | None = None


class UserPatchIn(In):
    """Only the fields sent are changed; a quota set to null means no limit."""

    email: Email | None = None
    username: Username | None = None
    role: Role | None = None
    disabled: bool | None = None
    password: Password | None = Field(None, description="Set a new password (ends their sessions)")
    instance_limit: Quota | None = None
    node_limit: Quota | None = None
    gpu_limit: Quota | None = None


# --- tokens -------------------------------------------------------------------------

class TokenCreateIn(In):
    name: Name
    expires_in_days: Annotated[int, Field(ge=1, le=3650)] | None = None


class TokenOut(Out):
    id: int
    name: str
    prefix: str = Field(description="The first characters, to tell tokens apart")
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None

    @classmethod
    def of(cls, t: ApiToken) -> TokenOut:
        return cls.model_validate(t)


class TokenCreatedOut(TokenOut):
    token: str = Field(description="The secret itself. It is shown only this once.")


# --- audit --------------------------------------------------------------------------

class AuditOut(BaseModel):
    id: int
    at: dt.datetime
    actor_id: int | None
    actor: str
    action: str
    target_type: str | None
    target_id: str | None
    ip: str | None
    detail: dict[str, Any]


class AuditQuery(PageQuery):
    action: Annotated[str, StringConstraints(max_length=64, pattern=r"^[a-z_.]+$")] | None = None
    actor_id: int | None = Field(None, ge=1, le=MAX_ID)
    target_type: Annotated[str, StringConstraints(max_length=32, pattern=r"^[a-z_]+$")] | None = None
    target_id: Annotated[str, StringConstraints(max_length=64)] | None = None


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
    access: Literal["owner", "shared", "admin"] = Field(description="How the caller may use this node")
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
    username: Username | None = None
    user_id: Annotated[int, Field(ge=1, le=MAX_ID)] | None = None


class ShareOut(BaseModel):
    user_id: int
    username: str
    email: str
    created_at: dt.datetime


class MetricsOut(BaseModel):
    items: list[dict[str, Any]]


class PingOut(BaseModel):
    rtt_ms: float
    agent_time: float


# --- instances ----------------------------------------------------------------------

ImageRef = Annotated[str, StringConstraints(min_length=1, max_length=255,
                                            pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$")]
EnvKey = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
Arg = Annotated[str, StringConstraints(max_length=8192), AfterValidator(lambda v: _no_nul(v))]
GpuId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9:_./-]+$")]


def _no_nul(v: str) -> str:
    if "\x00" in v:
        raise ValueError("must not contain NUL characters")
    return v


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
    cpus: Annotated[float, Field(gt=0, le=1024)] | None = None
    memory_mb: Annotated[int, Field(ge=6, le=16 * 1024 * 1024)] | None = None
    gpus: Annotated[int, Field(ge=0, le=64)] | Annotated[list[GpuId], Field(max_length=64)] = Field(
        0, description="A number of GPUs, or a list of GPU uuids on the node")
    env: Annotated[dict[EnvKey, Arg], Field(max_length=200)] = Field(default_factory=dict)
    command: Annotated[list[Arg], Field(min_length=1, max_length=200)] | None = None
    privileged: bool = Field(False, description="Administrators only")
    host_network: bool = Field(False, description="Administrators only")
    ssh: bool = Field(True, description="Let the chosen SSH keys in (the image needs an OpenSSH server; DM "
                      "starts and supervises it) and map port 22 from the node's pool")
    ssh_key_ids: Annotated[list[Annotated[int, Field(ge=1, le=MAX_ID)]], Field(max_length=100)] | None = Field(
        None, description="Your keys to put in; omit for all of your keys, including keys you add later")
    port_maps: Annotated[list[PortMapIn], Field(max_length=100)] = Field(
        default_factory=list, description="Host ports to map to the instance's ports (port 22 is mapped "
        "already when ssh is on)")


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
    gpus: list[str] = Field(description="The node's GPUs this instance holds (uuids; 'index:N' where a node's "
                            "GPUs report no distinct uuids)")
    env: dict[str, str]
    command: list[str] | None
    privileged: bool
    host_network: bool
    desired: Literal["running", "stopped", "deleted"]
    status: Literal["pending", "creating", "running", "stopped", "error", "deleting"]
    status_message: str | None
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


# --- SSH keys -----------------------------------------------------------------------

class SshKeyCreateIn(In):
    name: Name | None = Field(None, description="Omit to use the key's comment")
    public_key: Annotated[str, StringConstraints(min_length=1, max_length=65536)] = Field(
        description="One public key: an OpenSSH line ('ssh-ed25519 AAAA… comment', as in a .pub file) or an "
        "RFC 4716 block. Types: ed25519, ecdsa, rsa of at least 2048 bits, sk-ssh-ed25519 and sk-ecdsa. "
        "Options before the key (no-pty, command=…) are dropped: DM writes its own authorized_keys.")


class SshKeyPatchIn(In):
    name: Name


class SshKeyOut(BaseModel):
    id: int
    user_id: int
    name: str
    type: str = Field(description="The key's algorithm, e.g. ssh-ed25519, ecdsa-sha2-nistp256, ssh-rsa")
    bits: int
    fingerprint: str = Field(description="As `ssh-keygen -l` prints it: SHA256:…")
    comment: str
    public_key: str = Field(description="The canonical line DM puts into authorized_keys (no options)")
    created_at: dt.datetime
    updated_at: dt.datetime


class SshKeyCreatedOut(SshKeyOut):
    options_removed: list[str] = Field(
        description="Names of the options that preceded the key and were dropped (empty when none)")


class SshKeyQuery(PageQuery):
    user_id: int | None = Field(None, ge=1, le=MAX_ID, description="Administrators: list this user's keys")
