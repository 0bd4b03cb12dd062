"""The values that cross the link: container specs and states, images, GPUs, port maps, SSH.

Both ends build and read these, never raw dicts; :mod:`agent.protocol.codec` turns them into
JSON and back. Fields are only ever added (with defaults), so older peers keep working.
Standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeGuard

from agent.protocol import codec

__all__ = [
    "BAD_REQUEST",
    "BUSY",
    "CONFLICT",
    "CONTAINER_STATES",
    "ERROR_CODES",
    "IMAGE_NOT_FOUND",
    "INTERNAL_ERROR",
    "INVALID",
    "LABEL_INSTALLATION",
    "LABEL_INSTANCE",
    "LABEL_MANAGED",
    "LABEL_NODE",
    "LABEL_OWNER",
    "NOT_FOUND",
    "PULL_FAILED",
    "RESERVED_LABELS",
    "RUNTIME_ERROR",
    "TIMEOUT",
    "UNAVAILABLE",
    "UNKNOWN_TYPE",
    "VENDORS",
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
    "is_image_ref",
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
ERROR_CODES = (NOT_FOUND, IMAGE_NOT_FOUND, CONFLICT, INVALID, UNAVAILABLE, PULL_FAILED, TIMEOUT, RUNTIME_ERROR,
               UNKNOWN_TYPE, BAD_REQUEST, INTERNAL_ERROR, BUSY)

# --------------------------------------------------------------------------- GPUs

GpuVendor = Literal["nvidia", "amd", "jetson"]
VENDORS: tuple[GpuVendor, ...] = ("nvidia", "amd", "jetson")


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

    @classmethod
    def from_gpu(cls, gpu: GpuInfo, *, gids: Sequence[int] = ()) -> GpuRequest:
        """The request for a detected (or reported) GPU."""
        return cls(vendor=gpu.vendor, uuid=gpu.uuid, index=gpu.index, dri_card=gpu.dri_card,
                   dri_render=gpu.dri_render, gids=tuple(gids))

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

# An image reference as the Engine API accepts it in a URL path: [host[:port]/]path[:tag][@digest],
# or an id ("sha256:<hex>" or a hex prefix). Every path segment starts with a letter or digit, so
# ".." and the like can never reach the Engine's URL.
IMAGE_REF_RE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9._-]*(?::[0-9]+)?"
    r"(?:/[A-Za-z0-9][A-Za-z0-9._-]*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9+._-]*:[0-9a-fA-F]{32,})?$"
)
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
_ENV_KEY_RE = re.compile(r"^[^=\x00]+$")
_DEVICE_RE = re.compile(r"^/dev/[A-Za-z0-9_./-]+$")
MIN_MEMORY_MB = 6  # the smallest memory limit Docker accepts


def is_image_ref(ref: object) -> TypeGuard[str]:
    """Whether ``ref`` is a well-formed image reference or id."""
    return isinstance(ref, str) and len(ref) <= 512 and bool(IMAGE_REF_RE.match(ref))


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

    def problems(self) -> list[str]:
        """What makes this spec one no runtime should be given (empty when none)."""
        problems: list[str] = []
        if not isinstance(self.instance_id, int) or isinstance(self.instance_id, bool) or self.instance_id < 0:
            problems.append(f"instance_id must be a non-negative integer, not {self.instance_id!r}")
        if not isinstance(self.node_id, int) or isinstance(self.node_id, bool) or self.node_id < 0:
            problems.append(f"node_id must be a non-negative integer, not {self.node_id!r}")
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            problems.append(f"container name {self.name!r} must match [a-zA-Z0-9][a-zA-Z0-9_.-]*")
        if not is_image_ref(self.image):
            problems.append(f"image reference {self.image!r} is not valid")
        if self.command is not None and (
            not isinstance(self.command, list) or not all(isinstance(a, str) for a in self.command)
        ):
            problems.append("command must be a list of strings")
        for key, value in self.env.items():
            if not isinstance(key, str) or not _ENV_KEY_RE.match(key) or not isinstance(value, str):
                problems.append(f"environment variable {key!r} is not valid")
            elif "\x00" in value:
                problems.append(f"environment variable {key!r} holds a NUL byte")
        if self.cpus is not None and not (isinstance(self.cpus, int | float) and 0 < self.cpus <= 4096):
            problems.append(f"cpus must be a positive number, not {self.cpus!r}")
        if self.memory_mb is not None and not (
            isinstance(self.memory_mb, int) and not isinstance(self.memory_mb, bool) and self.memory_mb >= MIN_MEMORY_MB
        ):
            problems.append(f"memory_mb must be an integer of at least {MIN_MEMORY_MB}, not {self.memory_mb!r}")
        for key, value in self.labels.items():
            if key in RESERVED_LABELS:
                problems.append(f"label {key!r} is set by DM and cannot be given")
            elif not isinstance(key, str) or not key or not isinstance(value, str):
                problems.append(f"label {key!r} is not valid")
        if self.restart_policy not in ("no", "on-failure", "always", "unless-stopped"):
            problems.append(f"restart policy {self.restart_policy!r} is not known")
        problems.extend(_gpu_problems(self.gpus))
        return problems

    def to_dict(self) -> dict[str, Any]:
        return codec.encode(self)  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ContainerSpec:
        return codec.decode(cls, dict(data))


def _gpu_problems(gpus: Sequence[GpuRequest]) -> list[str]:
    problems: list[str] = []
    vendors = {g.vendor for g in gpus}
    if "jetson" in vendors and len(vendors) > 1:
        problems.append("a Jetson GPU cannot be combined with other GPUs")
    seen: set[str] = set()
    for gpu in gpus:
        if gpu.vendor == "nvidia":
            if not gpu.uuid and gpu.index is None:
                problems.append("an NVIDIA GPU needs a uuid or an index")
                continue
            key = f"nvidia:{gpu.uuid or gpu.index}"
        elif gpu.vendor == "amd":
            if not gpu.dri_render:
                problems.append(f"AMD GPU {gpu.uuid or gpu.index} has no render node (/dev/dri/renderD*)")
                continue
            for path in (gpu.dri_render, gpu.dri_card):
                if path is not None and not _DEVICE_RE.match(path):
                    problems.append(f"device path {path!r} is not under /dev")
            key = f"amd:{gpu.dri_render}"
        elif gpu.vendor == "jetson":
            key = "jetson"
        else:
            problems.append(f"unknown GPU vendor {gpu.vendor!r}")
            continue
        if key in seen:
            problems.append(f"GPU {key} is requested twice")
        seen.add(key)
    return problems


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


@dataclass(frozen=True, slots=True)
class SshStatus:
    """What the agent found of an instance's SSH server."""

    state: SshState
    user: str | None = None
    message: str | None = None
    host_keys: list[SshHostKey] = field(default_factory=list)
