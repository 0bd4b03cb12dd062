"""PLACEHOLDER until the lead's byte streams land on main (docs: the streams-api brief): only the
documented names this branch codes against. At the merge, main's module replaces this file whole."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class StreamClosed(Exception):
    """write() on a closed stream."""


@dataclass(frozen=True, slots=True)
class ExecParams:
    cmd: list[str] = field(default_factory=list)
    tty: bool = True
    cols: int = 80
    rows: int = 24
    env: dict[str, str] = field(default_factory=dict)
    user: str = ""
    workdir: str = ""


@dataclass(frozen=True, slots=True)
class CopyParams:
    direction: str
    path: str


@dataclass(frozen=True, slots=True)
class StreamOpen:
    kind: str
    instance_id: int
    exec: ExecParams | None = None
    copy: CopyParams | None = None


@dataclass(frozen=True, slots=True)
class StreamEnd:
    code: str = "closed"
    reason: str = ""
    exit_status: int | None = None


class Stream(Protocol):
    id: int
    open: StreamOpen
    bytes_in: int
    bytes_out: int

    async def read(self) -> bytes: ...
    async def write(self, data: bytes) -> None: ...
    async def write_eof(self) -> None: ...
    def control(self, msg: dict[str, Any]) -> None: ...
    async def next_control(self) -> dict[str, Any] | None: ...
    async def close(self, end: StreamEnd = ...) -> None: ...
    async def wait_closed(self) -> StreamEnd: ...
    @property
    def closed(self) -> bool: ...
