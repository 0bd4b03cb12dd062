"""The values that cross the link: container specs and states, images, GPUs, port maps, SSH.

Both ends build and read these, never raw dicts; :mod:`agent.protocol.codec` turns them into
JSON and back. Fields are only ever added (with defaults), so older peers keep working.
Standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any, Literal

from agent.protocol import codec

__all__ = [
    "BAD_REQUEST",
    "BUSY",
    "CONFLICT",
    "CONTAINER_STATES",
    "ERROR_CODES",
    "GPU_VENDORS",
    "IMAGE_NOT_FOUND",
    "INTERNAL_ERROR",
    "INVALID",
    "LABEL_INSTALLATION",
    "LABEL_INSTANCE",
    "LABEL_MANAGED",
    "LABEL_NODE",
    "LABEL_OWNER",
    "LEGACY_CAPABILITIES",
    "NOT_FOUND",
    "PULL_FAILED",
    "RESERVED_LABELS",
    "RUNTIME_ERROR",
    "TIMEOUT",
    "UNAVAILABLE",
    "UNKNOWN_TYPE",
    "UNSUPPORTED",
    "VENDORS",
    "Capabilities",
    "ContainerInfo",
    "ContainerSpec",
    "ContainerState",
    "GpuInfo",
    "GpuRequest",
    "GpuVendor",
    "ImageInfo",
    "MigDevice",
    "PortMap",
    "SshHostKey",
    "SshStatus",
]

# --------------------------------------------------------------------------- labels

LABEL_MANAGED = "dm.managed"
LABEL_INSTANCE = "dm.instance"
LABEL_NODE = "dm.node"
LABEL_INSTALLATION = "dm.installation"  # set by dmd: containers of another installation are not ours
LABEL_OWNER = "dm.owner"  # the owning user's id, for people reading `docker ps`
RESERVED_LABELS = (LABEL_MANAGED, LABEL_INSTANCE, LABEL_NODE)

# --------------------------------------------------------------------------- error codes

# What a failed reply's error.code may say about the runtime (the driver's codes), and about
# the request itself. dmd shows the message; it acts on the code.
NOT_FOUND = "not_found"
IMAGE_NOT_FOUND = "image_not_found"
CONFLICT = "conflict"
INVALID = "invalid"
UNAVAILABLE = "unavailable"
PULL_FAILED = "pull_failed"
TIMEOUT = "timeout"
RUNTIME_ERROR = "runtime_error"
UNKNOWN_TYPE = "unknown_type"  # the peer does not handle this request (an older agent)
BAD_REQUEST = "bad_request"
INTERNAL_ERROR = "internal_error"
BUSY = "busy"
UNSUPPORTED = "unsupported"  # the node's runtime cannot do this (see Capabilities)
ERROR_CODES = (NOT_FOUND, IMAGE_NOT_FOUND, CONFLICT, INVALID, UNAVAILABLE, PULL_FAILED, TIMEOUT, RUNTIME_ERROR,
               UNKNOWN_TYPE, BAD_REQUEST, INTERNAL_ERROR, BUSY, UNSUPPORTED)

# --------------------------------------------------------------------------- GPUs

GpuVendor = Literal["nvidia", "amd", "jetson"]
VENDORS: tuple[GpuVendor, ...] = ("nvidia", "amd", "jetson")
GPU_VENDORS = VENDORS


@dataclass(slots=True)
class MigDevice:
    """One MIG (Multi-Instance GPU) device of an NVIDIA GPU."""

    index: int
    uuid: str | None = None
    profile: str | None = None  # e.g. "1g.20gb" (from ``nvidia-smi -L``)
    memory_total_mb: int | None = None
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MigDevice:
        return codec.decode(cls, dict(data))


@dataclass(slots=True)
class GpuInfo:
    """One accelerator as the agent reports it to dmd (in the node's facts)."""

    vendor: GpuVendor
    index: int
    name: str
    uuid: str | None = None
    pci_bus_id: str | None = None  # "0000:81:00.0", lower case
    memory_total_mb: int | None = None
    memory_used_mb: int | None = None
    utilization_pct: float | None = None
    temperature_c: float | None = None
    driver_version: str | None = None
    # CUDA version (NVIDIA), ROCm or driver version (AMD), L4T release (Jetson).
    runtime_version: str | None = None
    mig_mode: str | None = None  # "Enabled" / "Disabled" / None when not applicable
    mig_devices: list[MigDevice] = field(default_factory=list)
    # AMD: the DRM nodes to pass into a container together with /dev/kfd.
    dri_card: str | None = None  # "/dev/dri/card1"
    dri_render: str | None = None  # "/dev/dri/renderD128"

    def to_dict(self) -> dict[str, Any]:
        return codec.encode(self)  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GpuInfo:
        """Build from :meth:`to_dict` output; unknown keys are ignored, a bad value is a ValueError."""
        return codec.decode(cls, dict(data))


@dataclass(frozen=True, slots=True)
class GpuRequest:
    """One GPU (or MIG slice) given to a container, as DM's ledger assigned it.

    * ``nvidia``: ``uuid`` (``GPU-...`` or ``MIG-...``), else ``index``.
    * ``amd``: ``dri_render`` (``/dev/dri/renderD128``) and ``dri_card`` (``/dev/dri/card1``).
      ``gids`` are the *numeric* host groups owning those nodes (``render`` on current
      distributions), added to the container so that non-root users can open them.
    * ``jetson``: the whole integrated GPU (the nvidia container runtime exposes it).
    """

    vendor: GpuVendor
    uuid: str | None = None
    index: int | None = None
    dri_card: str | None = None
    dri_render: str | None = None
    gids: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return codec.encode(self)  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GpuRequest:
        return codec.decode(cls, dict(data))


# --------------------------------------------------------------------------- containers

ContainerState = Literal["created", "running", "paused", "restarting", "exited", "dead", "removing"]
CONTAINER_STATES: tuple[ContainerState, ...] = (
    "created", "running", "paused", "restarting", "exited", "dead", "removing",
)
RestartPolicy = Literal["no", "on-failure", "always", "unless-stopped"]

@dataclass(slots=True)
class ContainerSpec:
    """What DM wants created. Host ports are not here on purpose: DM maps them itself
    (kernel DNAT / proxy to :attr:`ContainerInfo.ip_address`), never through Docker publishing."""

    instance_id: int
    node_id: int
    name: str  # e.g. "dm-3fa2c1-42-web" (dmd adds its installation, see dmd.reconciler.plan)
    image: str
    command: list[str] | None = None  # None: the image's CMD
    env: dict[str, str] = field(default_factory=dict)
    cpus: float | None = None  # -> HostConfig.NanoCpus
    memory_mb: int | None = None  # -> HostConfig.Memory (and MemorySwap: no extra swap)
    gpus: list[GpuRequest] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    privileged: bool = False  # only when an admin asks
    host_network: bool = False  # only when an admin asks
    restart_policy: RestartPolicy = "no"  # DM restarts what should run
    hostname: str | None = None
    init: bool = True  # an init as PID 1 reaps zombies and forwards signals
    working_dir: str | None = None
    user: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return codec.encode(self)  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ContainerSpec:
        return codec.decode(cls, dict(data))


@dataclass(slots=True)
class ContainerInfo:
    """A container as the runtime reports it (managed by DM or not)."""

    id: str
    name: str
    image: str  # the reference it was created from
    state: ContainerState
    instance_id: int | None = None  # from dm.instance, None for unmanaged containers
    node_id: int | None = None
    managed: bool = False
    exit_code: int | None = None  # set once the container has exited
    error: str | None = None  # the runtime's message (e.g. State.Error)
    oom_killed: bool = False
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    labels: dict[str, str] = field(default_factory=dict)
    ip_address: str | None = None  # on its network, while running: DM forwards ports to it
    image_id: str | None = None
    cpus: float | None = None
    memory_mb: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return codec.encode(self)  # type: ignore[no-any-return]


@dataclass(slots=True)
class ImageInfo:
    id: str  # "sha256:..."
    repo_tags: list[str] = field(default_factory=list)
    size: int = 0
    created: datetime | None = None
    labels: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return codec.encode(self)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- access

Protocol = Literal["tcp", "udp"]


@dataclass(frozen=True, slots=True)
class PortMap:
    """One forward the agent keeps: host port -> the instance's port (see ``ports.apply``)."""

    id: int | str
    instance_id: int
    protocol: Protocol
    host_port: int
    instance_port: int

    def __wire_check__(self) -> str | None:
        if (isinstance(self.id, int) and self.id < 0) or (isinstance(self.id, str) and not 0 < len(self.id) <= 64):
            return "id must be a non-negative integer or a short string"
        if not 1 <= self.instance_id <= 2**63 - 1:
            return "instance_id must be a positive integer"
        for name in ("host_port", "instance_port"):
            if not 1 <= getattr(self, name) <= 65535:
                return f"{name} must be an integer from 1 to 65535, got {getattr(self, name)!r}"
        return None


SshState = Literal["ready", "no_server", "not_running", "disabled", "error"]


@dataclass(frozen=True, slots=True)
class SshHostKey:
    type: str
    fingerprint: str
    key: str = ""  # the public key ("ssh-ed25519 AAAA..."): known_hosts lines for `dmd ssh-config`


@dataclass(frozen=True, slots=True)
class SshStatus:
    """What the agent found of an instance's SSH server."""

    state: SshState
    user: str | None = None
    message: str | None = None
    host_keys: list[SshHostKey] = field(default_factory=list)


# --------------------------------------------------------------------------- what a runtime can do


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a node's runtime driver can do, reported in the node's facts (``"capabilities"``).

    dmd refuses what a node cannot do before it asks (409 ``unsupported``); a driver refuses
    it too (``unsupported``). A driver claims only what it does today: the conformance suite
    checks every claim against what the driver actually does.
    """

    # Whose GPUs it can pass into a container (text, not GpuVendor: a newer agent may name more).
    gpu_vendors: tuple[str, ...] = ()
    privileged: bool = False  # ContainerSpec.privileged
    host_network: bool = False  # ContainerSpec.host_network
    exec: bool = False  # run a command in a running container, output collected (no TTY)
    exec_tty: bool = False  # an interactive command, on a terminal or not (a shell): exec_interactive
    logs_follow: bool = False  # logs(follow=True) streams until the container stops
    pull: bool = False  # from a registry
    image_import: bool = False  # a `docker save` archive or a root file system tar (upload, copy target)
    image_export: bool = False  # as a `docker save` archive (copy source)
    commit: bool = False  # a container's file system as a new image
    file_copy: bool = False  # files into and out of a container; no driver call does it yet

    def can(self, name: str) -> bool:
        """Whether the boolean capability ``name`` is there (False for names it does not know)."""
        if name == "gpu_vendors" or name not in _BOOLEAN:
            return False
        return bool(getattr(self, name))

    def can_pass(self, vendor: str) -> bool:
        return vendor in self.gpu_vendors

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["gpu_vendors"] = list(self.gpu_vendors)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Capabilities:
        """Tolerant on purpose (facts are a report, not a request): what a peer does not say,
        or says in a shape this side does not know, it cannot do; unknown names are ignored."""
        vendors = data.get("gpu_vendors")
        known: tuple[str, ...] = ()
        if isinstance(vendors, list | tuple):
            known = tuple(v for v in VENDORS if v in vendors)
        flags = {name: data.get(name) is True for name in _BOOLEAN}
        return cls(gpu_vendors=known, **flags)


_BOOLEAN = tuple(f.name for f in fields(Capabilities) if f.name != "gpu_vendors")

# What every agent could do before agents reported capabilities (the Docker driver of then):
# dmd assumes it of a node whose facts carry none.
LEGACY_CAPABILITIES = Capabilities(
    gpu_vendors=VENDORS,
    privileged=True,
    host_network=True,
    exec=True,
    exec_tty=False,
    logs_follow=True,
    pull=True,
    image_import=True,
    image_export=True,
    commit=True,
    file_copy=False,
)
