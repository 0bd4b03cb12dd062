"""The fake driver's state: its images, its containers and the scripted failures and delays."""

from __future__ import annotations

import asyncio
import builtins
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime

from agent.protocol.types import ContainerInfo, ContainerState, ImageInfo
from agent.runtime.errors import DriverError
from agent.runtime.ownership import container_labels

__all__ = ["FakeContainer", "FakeImage", "Script", "new_id", "now"]


def now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return secrets.token_hex(32)


@dataclass
class Script:
    method: str
    remaining: int
    error: DriverError | None = None
    delay: float = 0.0
    after: bool = False


@dataclass
class FakeImage:
    id: str
    tags: builtins.list[str]
    size: int = 1024
    created: datetime = field(default_factory=now)
    labels: dict[str, str] = field(default_factory=dict)
    cmd: builtins.list[str] = field(default_factory=lambda: ["sh"])
    env: builtins.list[str] = field(
        default_factory=lambda: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    )

    def info(self) -> ImageInfo:
        return ImageInfo(
            id=self.id, repo_tags=list(self.tags), size=self.size, created=self.created, labels=dict(self.labels)
        )


@dataclass
class FakeContainer:
    id: str
    name: str
    image: str
    image_id: str
    argv: builtins.list[str]
    env: dict[str, str]
    labels: dict[str, str]
    cpus: float | None = None
    memory_mb: int | None = None
    state: ContainerState = "created"
    exit_code: int | None = None
    error: str | None = None
    oom_killed: bool = False
    created_at: datetime = field(default_factory=now)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    ip_address: str | None = None
    task: asyncio.Task[None] | None = None
    log: builtins.list[tuple[datetime, str]] = field(default_factory=list)
    partial: dict[int, bytearray] = field(default_factory=lambda: {1: bytearray(), 2: bytearray()})
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    pending_exit: tuple[int, bool] | None = None
    # Its file system for put_archive/get_archive: path -> content, None for a directory.
    files: dict[str, bytes | None] = field(
        default_factory=lambda: {"/": None, "/tmp": None, "/root": None, "/etc": None}  # noqa: S108 - the fake's own
    )

    def info(self) -> ContainerInfo:
        labels, managed, instance_id, node_id = container_labels(self.labels)
        return ContainerInfo(
            id=self.id,
            name=self.name,
            image=self.image,
            state=self.state,
            instance_id=instance_id,
            node_id=node_id,
            managed=managed,
            exit_code=self.exit_code if self.state in ("exited", "dead") else None,
            error=self.error,
            oom_killed=self.oom_killed,
            created_at=self.created_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            labels=labels,
            ip_address=self.ip_address if self.state in ("running", "paused") else None,
            image_id=self.image_id,
            cpus=self.cpus,
            memory_mb=self.memory_mb,
        )

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

