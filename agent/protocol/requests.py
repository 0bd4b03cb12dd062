"""The requests dmd sends to the agent, each with the type of its reply."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from agent.protocol.base import Empty, Request
from agent.protocol.notices import Listening, NodeFacts
from agent.protocol.types import INVALID, ContainerInfo, ContainerSpec, ImageInfo, PortMap, SshStatus

__all__ = [
    "LOGS_MAX_BYTES",
    "MAX_PORT_MAPS",
    "TRANSFER_TIMEOUT_S",
    "AccessReply",
    "ContainerList",
    "ContainerReply",
    "ContainersList",
    "CredentialRotate",
    "Desired",
    "Exported",
    "FactsRefresh",
    "ImageCommit",
    "ImageExport",
    "ImageImport",
    "ImageList",
    "ImagePull",
    "ImageRemove",
    "ImageReply",
    "ImagesList",
    "InstanceAccess",
    "InstanceEnsure",
    "InstanceInspect",
    "InstanceLogs",
    "InstanceRemove",
    "InstanceRestart",
    "InstanceSync",
    "LogLines",
    "MaybeContainer",
    "Ping",
    "PingReply",
    "PortFailure",
    "PortsApply",
    "PortsReply",
    "RegistryAuth",
    "Removed",
    "SshRequest",
    "SyncReply",
]

# =========================================================================== requests: the link


@dataclass(frozen=True, slots=True)
class PingReply:
    at: float


@dataclass(frozen=True, slots=True)
class Ping(Request[PingReply]):
    TYPE = "ping"
    REPLY = PingReply
    TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class FactsRefresh(Request[NodeFacts]):
    """Read the facts again now; the reply is the facts."""

    TYPE = "facts.refresh"
    REPLY = NodeFacts


@dataclass(frozen=True, slots=True)
class CredentialRotate(Request[Empty]):
    """Keep this credential from now on; the reply comes once it is saved."""

    TYPE = "credential.rotate"
    REPLY = Empty
    TIMEOUT_S = 30.0
    credential: str


# =========================================================================== requests: instances


Desired = Literal["running", "stopped"]


@dataclass(frozen=True, slots=True)
class ContainerReply:
    container: ContainerInfo


@dataclass(frozen=True, slots=True)
class MaybeContainer:
    container: ContainerInfo | None = None


@dataclass(frozen=True, slots=True)
class InstanceEnsure(Request[ContainerReply]):
    """Create the container when missing (idempotent by instance id), then start or stop it."""

    TYPE = "instance.ensure"
    REPLY = ContainerReply
    TIMEOUT_S = 300.0
    spec: ContainerSpec
    desired: Desired
    # dmd's view of the node's containers (complete since the link's hello) holds none for this
    # instance: the agent need not look for one before creating. One made under the spec's name
    # by a request whose reply was lost is still found (the name is taken) and adopted.
    fresh: bool = False


@dataclass(frozen=True, slots=True)
class Removed:
    removed: bool


@dataclass(frozen=True, slots=True)
class InstanceRemove(Request[Removed]):
    """Remove the instance's container; a missing one is fine."""

    TYPE = "instance.remove"
    REPLY = Removed
    TIMEOUT_S = 120.0
    instance_id: int


@dataclass(frozen=True, slots=True)
class InstanceRestart(Request[ContainerReply]):
    TYPE = "instance.restart"
    REPLY = ContainerReply
    TIMEOUT_S = 120.0
    instance_id: int


@dataclass(frozen=True, slots=True)
class InstanceInspect(Request[MaybeContainer]):
    TYPE = "instance.inspect"
    REPLY = MaybeContainer
    TIMEOUT_S = 30.0
    instance_id: int


LOGS_MAX_BYTES = 512 * 1024


@dataclass(frozen=True, slots=True)
class LogLines:
    lines: list[str] = field(default_factory=list)
    truncated: bool = False
    last_ts: float | None = None  # where a follow-up read resumes (``since``)


@dataclass(frozen=True, slots=True)
class InstanceLogs(Request[LogLines]):
    """The container's output, at most LOGS_MAX_BYTES (the newest lines win)."""

    TYPE = "instance.logs"
    REPLY = LogLines
    TIMEOUT_S = 30.0
    instance_id: int
    tail: int | None = None
    since: float | None = None


@dataclass(frozen=True, slots=True)
class SyncReply:
    removed: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class InstanceSync(Request[SyncReply]):
    """Remove this node's managed containers (of this installation) whose instance is not in ``keep``."""

    TYPE = "instance.sync"
    REPLY = SyncReply
    TIMEOUT_S = 120.0
    keep: list[int]


@dataclass(frozen=True, slots=True)
class ContainerList:
    containers: list[ContainerInfo] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ContainersList(Request[ContainerList]):
    """Every container, managed or not."""

    TYPE = "containers.list"
    REPLY = ContainerList


# =========================================================================== requests: images


@dataclass(frozen=True, slots=True)
class ImageList:
    images: list[ImageInfo] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ImageReply:
    image: ImageInfo


@dataclass(frozen=True, slots=True)
class ImagesList(Request[ImageList]):
    TYPE = "images.list"
    REPLY = ImageList


@dataclass(frozen=True, slots=True)
class RegistryAuth:
    username: str | None = None
    password: str | None = None
    serveraddress: str | None = None


TRANSFER_TIMEOUT_S = 3600.0


@dataclass(frozen=True, slots=True)
class ImagePull(Request[ImageReply]):
    """Pull from a registry; progress comes as ``image.progress`` events with ``progress_id``."""

    TYPE = "image.pull"
    REPLY = ImageReply
    TIMEOUT_S = TRANSFER_TIMEOUT_S
    ref: str
    auth: RegistryAuth | None = None
    progress_id: str = ""

    def __wire_check__(self) -> str | None:
        return _empty(self, 'ref')


@dataclass(frozen=True, slots=True)
class ImageImport(Request[ImageReply]):
    """GET the tarball from dmd's one-time blob URL (a path on dmd) and load it as repository:tag."""

    TYPE = "image.import"
    REPLY = ImageReply
    TIMEOUT_S = TRANSFER_TIMEOUT_S
    url: str
    repository: str
    tag: str = "latest"

    def __wire_check__(self) -> str | None:
        return _empty(self, 'url', 'repository')


@dataclass(frozen=True, slots=True)
class Exported:
    bytes: int


@dataclass(frozen=True, slots=True)
class ImageExport(Request[Exported]):
    """PUT the image as a ``docker save`` archive to dmd's one-time blob URL."""

    TYPE = "image.export"
    REPLY = Exported
    TIMEOUT_S = TRANSFER_TIMEOUT_S
    ref: str
    url: str

    def __wire_check__(self) -> str | None:
        return _empty(self, 'ref', 'url')


@dataclass(frozen=True, slots=True)
class ImageRemove(Request[Empty]):
    TYPE = "image.remove"
    REPLY = Empty
    TIMEOUT_S = 300.0
    ref: str
    force: bool = False

    def __wire_check__(self) -> str | None:
        return _empty(self, 'ref')


@dataclass(frozen=True, slots=True)
class ImageCommit(Request[ImageReply]):
    TYPE = "image.commit"
    REPLY = ImageReply
    TIMEOUT_S = TRANSFER_TIMEOUT_S
    instance_id: int
    repository: str
    tag: str = "latest"

    def __wire_check__(self) -> str | None:
        return _empty(self, 'repository')


# =========================================================================== requests: access


@dataclass(frozen=True, slots=True)
class PortFailure:
    id: int | str
    code: str  # port_busy, out_of_pool, duplicate_port, no_address, kernel_unavailable, ...
    message: str


@dataclass(frozen=True, slots=True)
class PortsReply:
    mode: Literal["kernel", "proxy"]
    active: list[int | str] = field(default_factory=list)
    waiting: list[int | str] = field(default_factory=list)  # their instance is not running
    failed: list[PortFailure] = field(default_factory=list)
    listening: Listening = field(default_factory=Listening)


MAX_PORT_MAPS = 65535 * 2


@dataclass(frozen=True, slots=True)
class PortsApply(Request[PortsReply]):
    """The node's *full* set of port maps. Declarative: a map not in the list stops taking new
    connections at once; the agent re-applies the set whenever a container starts or stops."""

    TYPE = "ports.apply"
    REPLY = PortsReply
    INVALID_CODE = INVALID
    maps: list[PortMap]

    def __wire_check__(self) -> str | None:
        if len(self.maps) > MAX_PORT_MAPS:
            return f"too many maps ({len(self.maps)})"
        seen: set[int | str] = set()
        for i, m in enumerate(self.maps):
            if m.id in seen:
                return f"maps[{i}]: id {m.id!r} appears twice"
            seen.add(m.id)
        return None


@dataclass(frozen=True, slots=True)
class SshRequest:
    enabled: bool
    keys: list[str] | None = None  # whole authorized_keys lines; [] revokes them all

    def __wire_check__(self) -> str | None:
        if self.enabled and self.keys is None:
            return "keys is required when SSH is enabled"
        return None


@dataclass(frozen=True, slots=True)
class AccessReply:
    ssh: SshStatus


@dataclass(frozen=True, slots=True)
class InstanceAccess(Request[AccessReply]):
    """Write these keys where the instance's sshd reads them, make host keys, start and keep
    supervising sshd (a container start, or sshd dying, brings it back) with the last keys given."""

    TYPE = "instance.access"
    REPLY = AccessReply
    INVALID_CODE = INVALID
    instance_id: int
    ssh: SshRequest

    def __wire_check__(self) -> str | None:
        return "instance_id must be a non-negative integer" if self.instance_id < 0 else None


def _empty(msg: object, *names: str) -> str | None:
    for name in names:
        if not getattr(msg, name):
            return f"{name} must be a non-empty string"
    return None


