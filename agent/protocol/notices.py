"""The handshake and the notices: messages without a reply, either way."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from agent.protocol.base import Notice
from agent.protocol.types import Capabilities, ContainerInfo, GpuInfo, ImageInfo

__all__ = [
    "EVENT_KINDS",
    "MAX_SNAPSHOT_PARTS",
    "Addresses",
    "ContainerEvent",
    "Event",
    "EventBody",
    "GpuMetrics",
    "Heartbeat",
    "Hello",
    "ImageProgress",
    "ImagesChanged",
    "Listening",
    "Metrics",
    "NodeDeleted",
    "NodeFacts",
    "OsInfo",
    "PortFacts",
    "ProtocolRange",
    "RuntimeInfo",
    "Snapshot",
    "SnapshotPart",
    "Welcome",
]

# =========================================================================== the handshake


@dataclass(frozen=True, slots=True)
class ProtocolRange:
    min: int
    max: int


@dataclass(frozen=True, slots=True)
class Listening:
    """Host ports inside the node's pools that host programs (not DM) listen on."""

    tcp: list[int] = field(default_factory=list)
    udp: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the runtime holds: every container (managed or not) and every image."""

    containers: list[ContainerInfo] | None = None  # None: not reported (the runtime could not be read)
    images: list[ImageInfo] | None = None
    listening: Listening | None = None
    runtime_error: str | None = None  # why the runtime could not be read


@dataclass(frozen=True, slots=True)
class OsInfo:
    id: str | None = None
    name: str | None = None
    version: str | None = None
    pretty_name: str | None = None


@dataclass(frozen=True, slots=True)
class Addresses:
    ipv4: list[str] = field(default_factory=list)
    ipv6: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RuntimeInfo:
    name: str | None = None
    version: str | None = None
    api_version: str | None = None
    data_root: str | None = None
    os: str | None = None


@dataclass(frozen=True, slots=True)
class PortFacts:
    pools: dict[str, list[list[int]]] = field(default_factory=dict)  # {"tcp": [[first, last], ...]}
    mode: Literal["kernel", "proxy"] | None = None


@dataclass(frozen=True, slots=True)
class NodeFacts(Notice):
    """The node as the agent sees it (sent in the hello, then as a ``facts`` notice when it changes)."""

    TYPE = "facts"
    hostname: str | None = None
    os: OsInfo | None = None
    kernel: str | None = None
    arch: str | None = None
    cpu_model: str | None = None
    cpu_count: int | None = None
    memory_total_mb: int | None = None
    memory_available_mb: int | None = None
    disk_path: str | None = None
    disk_total_mb: int | None = None
    disk_free_mb: int | None = None
    addresses: Addresses | None = None
    public_address: str | None = None
    gpus: list[GpuInfo] = field(default_factory=list)
    runtime: RuntimeInfo | None = None
    runtime_error: str | None = None
    ports: PortFacts | None = None
    capabilities: Capabilities | None = None  # None: an agent from before capabilities (see LEGACY_CAPABILITIES)
    # The node's SSH host key (OpenSSH public key line) for instances the agent serves SSH for.
    ssh_host_key: str | None = None


@dataclass(frozen=True, slots=True)
class Hello(Notice):
    """The agent's first message. With ``snapshot_parts`` > 0 the state is not in the hello but
    follows in that many ``snapshot`` notices (protocol 2), so a node with thousands of
    containers and images is not held to one message's size."""

    TYPE = "hello"
    node_id: int
    agent_version: str
    protocol: ProtocolRange
    facts: dict[str, Any] = field(default_factory=dict)  # NodeFacts, kept as sent (see dmd.agents)
    state: Snapshot = field(default_factory=Snapshot)
    snapshot_parts: int = 0

    def __wire_check__(self) -> str | None:
        if len(self.agent_version) > 64:
            return "agent_version must be a short string"
        if not 0 <= self.snapshot_parts <= MAX_SNAPSHOT_PARTS:
            return f"snapshot_parts must be from 0 to {MAX_SNAPSHOT_PARTS}"
        return None


MAX_SNAPSHOT_PARTS = 4096


@dataclass(frozen=True, slots=True)
class SnapshotPart(Notice):
    """One part of the hello's state; parts are merged in order (listening: the last one's)."""

    TYPE = "snapshot"
    part: int
    containers: list[ContainerInfo] | None = None  # None in every part: not reported
    images: list[ImageInfo] | None = None
    listening: Listening | None = None
    runtime_error: str | None = None


@dataclass(frozen=True, slots=True)
class Welcome(Notice):
    TYPE = "welcome"
    protocol: int
    node_id: int
    heartbeat_s: float | None = None
    server_version: str | None = None
    installation_id: str | None = None


@dataclass(frozen=True, slots=True)
class NodeDeleted(Notice):
    """Forget the credential and stop."""

    TYPE = "node.deleted"


# =========================================================================== agent -> dmd notices


@dataclass(frozen=True, slots=True)
class Heartbeat(Notice):
    TYPE = "heartbeat"
    seq: int = 0


@dataclass(frozen=True, slots=True)
class GpuMetrics:
    vendor: str | None = None
    index: int | None = None
    uuid: str | None = None
    utilization_pct: float | None = None
    memory_total_mb: int | None = None
    memory_used_mb: int | None = None
    temperature_c: float | None = None


@dataclass(frozen=True, slots=True)
class Metrics(Notice):
    TYPE = "metrics"
    at: float
    cpu_pct: float | None = None
    memory_total_mb: int | None = None
    memory_available_mb: int | None = None
    memory_used_mb: int | None = None
    load_1: float | None = None
    load_5: float | None = None
    load_15: float | None = None
    gpus: list[GpuMetrics] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ContainerEvent:
    """A managed container started, died, ... (the agent also acts on it itself)."""

    KIND: ClassVar[str] = "container"
    kind: Literal["container"] = "container"
    instance_id: int | None = None
    container_id: str = ""
    action: str = ""
    exit_code: int | None = None


@dataclass(frozen=True, slots=True)
class ImagesChanged:
    """The runtime's images changed outside DM's own requests."""

    KIND: ClassVar[str] = "images.changed"
    kind: Literal["images.changed"] = "images.changed"


@dataclass(frozen=True, slots=True)
class ImageProgress:
    """One of the runtime's progress messages for a pull (Docker's fields, as they come)."""

    KIND: ClassVar[str] = "image.progress"
    kind: Literal["image.progress"] = "image.progress"
    progress_id: str = ""
    status: str | None = None
    id: str | None = None
    progress: str | None = None
    progressDetail: dict[str, Any] | None = None


EventBody = ContainerEvent | ImagesChanged | ImageProgress
EVENT_KINDS: dict[str, type[Any]] = {c.KIND: c for c in (ContainerEvent, ImagesChanged, ImageProgress)}


@dataclass(frozen=True, slots=True)
class Event(Notice):
    """An ``event`` notice: ``{"kind": ..., ...}`` with the kind's fields beside it."""

    TYPE = "event"
    body: EventBody


