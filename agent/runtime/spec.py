"""The runtime's data as it crosses the wire between dmd and the agent (standard library only).

What dmd asks for (:class:`ContainerSpec` with its :class:`GpuRequest`), what the agent
reports back (:class:`ContainerInfo`, :class:`ImageInfo`), the label names every DM
container carries, and what a node's runtime driver can do (:class:`Capabilities`, in the
node's facts). Checking a spec is the runtime's job (:func:`agent.runtime.validate.validate_spec`),
not the data's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any, Literal

__all__ = [
    "CONTAINER_STATES",
    "GPU_VENDORS",
    "LABEL_INSTALLATION",
    "LABEL_INSTANCE",
    "LABEL_MANAGED",
    "LABEL_NODE",
    "LEGACY_CAPABILITIES",
    "RESERVED_LABELS",
    "Capabilities",
    "ContainerInfo",
    "ContainerSpec",
    "ContainerState",
    "GpuRequest",
    "GpuVendor",
    "ImageInfo",
    "RestartPolicy",
]

# --------------------------------------------------------------------------- labels

LABEL_MANAGED = "dm.managed"
LABEL_INSTANCE = "dm.instance"
LABEL_NODE = "dm.node"
LABEL_INSTALLATION = "dm.installation"  # set by dmd: containers of another installation are not ours
RESERVED_LABELS = (LABEL_MANAGED, LABEL_INSTANCE, LABEL_NODE)

ContainerState = Literal["created", "running", "paused", "restarting", "exited", "dead", "removing"]
CONTAINER_STATES: tuple[ContainerState, ...] = (
    "created",
    "running",
    "paused",
    "restarting",
    "exited",
    "dead",
    "removing",
)
GpuVendor = Literal["nvidia", "amd", "jetson"]
GPU_VENDORS: tuple[GpuVendor, ...] = ("nvidia", "amd", "jetson")
RestartPolicy = Literal["no", "on-failure", "always", "unless-stopped"]


# --------------------------------------------------------------------------- specs and results


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
        data = asdict(self)
        data["gids"] = list(self.gids)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GpuRequest:
        return cls(
            vendor=data["vendor"],
            uuid=data.get("uuid"),
            index=data.get("index"),
            dri_card=data.get("dri_card"),
            dri_render=data.get("dri_render"),
            gids=tuple(int(g) for g in data.get("gids") or ()),
        )


@dataclass(slots=True)
class ContainerSpec:
    """What DM wants created. Host ports are not here on purpose: DM maps them itself
    (kernel DNAT / proxy to :attr:`ContainerInfo.ip_address`), never through Docker publishing."""

    instance_id: int
    node_id: int
    name: str  # e.g. "dm-3fa2c1-42-web" (dmd adds its installation, see dmd.services.instances)
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
        data = asdict(self)
        data["gpus"] = [g.to_dict() for g in self.gpus]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ContainerSpec:
        kwargs = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        kwargs["gpus"] = [GpuRequest.from_dict(g) for g in data.get("gpus") or ()]
        return cls(**kwargs)


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
        data = asdict(self)
        for key in ("created_at", "started_at", "finished_at"):
            value = data[key]
            data[key] = value.isoformat() if value is not None else None
        return data


@dataclass(slots=True)
class ImageInfo:
    id: str  # "sha256:..."
    repo_tags: list[str] = field(default_factory=list)
    size: int = 0
    created: datetime | None = None
    labels: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["created"] = self.created.isoformat() if self.created is not None else None
        return data


# --------------------------------------------------------------------------- capabilities


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a node's runtime driver can do, reported in the node's facts (``"capabilities"``).

    dmd refuses what a node cannot do before it asks (409 ``unsupported``); a driver refuses
    it too (``unsupported``). A driver claims only what it does today: the conformance suite
    checks every claim against what the driver actually does.
    """

    gpu_vendors: tuple[GpuVendor, ...] = ()  # whose GPUs it can pass into a container
    privileged: bool = False  # ContainerSpec.privileged
    host_network: bool = False  # ContainerSpec.host_network
    exec: bool = False  # run a command in a running container, output collected (no TTY)
    exec_tty: bool = False  # an interactive command on a terminal (a shell); no driver call does it yet
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
        known: tuple[GpuVendor, ...] = ()
        if isinstance(vendors, list | tuple):
            known = tuple(v for v in GPU_VENDORS if v in vendors)
        flags = {name: data.get(name) is True for name in _BOOLEAN}
        return cls(gpu_vendors=known, **flags)


_BOOLEAN = tuple(f.name for f in fields(Capabilities) if f.name != "gpu_vendors")

# What every agent could do before agents reported capabilities (the Docker driver of then):
# dmd assumes it of a node whose facts carry none.
LEGACY_CAPABILITIES = Capabilities(
    gpu_vendors=GPU_VENDORS,
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
