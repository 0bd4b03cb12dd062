"""Docker Engine API answers as DM's types: containers, images, events, log lines, timestamps."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from agent.protocol.types import CONTAINER_STATES, ContainerInfo, ContainerState, ImageInfo
from agent.runtime.driver import MANAGED_ACTIONS, EventAction, RuntimeEvent
from agent.runtime.ownership import container_labels

__all__ = ["container_info", "engine_event", "image_info", "lines", "parse_time"]

_TS_RE = re.compile(r"^(?P<base>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(?P<frac>\d+))?(?P<tz>Z|[+-]\d\d:?\d\d)?$")


def parse_time(value: object) -> datetime | None:
    """An engine timestamp (RFC 3339 with nanoseconds, or unix seconds) as an aware datetime;
    None for Docker's "never" (year 1) and for anything unreadable."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        if value <= 0:
            return None
        return datetime.fromtimestamp(value, UTC)
    if not isinstance(value, str):
        return None
    m = _TS_RE.match(value.strip())
    if m is None:
        return None
    frac = (m.group("frac") or "")[:6].ljust(6, "0")
    tz = m.group("tz") or "Z"
    tz = "+00:00" if tz == "Z" else tz
    try:
        parsed = datetime.fromisoformat(f"{m.group('base')}.{frac}{tz}")
    except ValueError:
        return None
    if parsed.year <= 1:
        return None
    return parsed.astimezone(UTC)


def container_info(data: Mapping[str, Any]) -> ContainerInfo:
    state = data.get("State") or {}
    config = data.get("Config") or {}
    host = data.get("HostConfig") or {}
    status_raw = state.get("Status")
    status: ContainerState = status_raw if status_raw in CONTAINER_STATES else "dead"
    labels, managed, instance_id, node_id = container_labels(config.get("Labels"))
    exit_code = state.get("ExitCode") if status in ("exited", "dead") else None
    nano = host.get("NanoCpus") or 0
    memory = host.get("Memory") or 0
    return ContainerInfo(
        id=str(data.get("Id", "")),
        name=str(data.get("Name", "")).lstrip("/"),
        image=str(config.get("Image") or data.get("Image") or ""),
        state=status,
        instance_id=instance_id,
        node_id=node_id,
        managed=managed,
        exit_code=int(exit_code) if isinstance(exit_code, int) else None,
        error=(state.get("Error") or None),
        oom_killed=bool(state.get("OOMKilled")),
        created_at=parse_time(data.get("Created")),
        started_at=parse_time(state.get("StartedAt")),
        finished_at=parse_time(state.get("FinishedAt")),
        labels=labels,
        ip_address=ip_address(data.get("NetworkSettings") or {}),
        image_id=data.get("Image") or None,
        cpus=nano / 1e9 if nano else None,
        memory_mb=memory // (1024 * 1024) if memory else None,
    )


def ip_address(network: Mapping[str, Any]) -> str | None:
    address = network.get("IPAddress")
    if address:
        return str(address)
    for net in (network.get("Networks") or {}).values():
        if isinstance(net, Mapping) and net.get("IPAddress"):
            return str(net["IPAddress"])
    return None


def image_info(data: Mapping[str, Any]) -> ImageInfo:
    config = data.get("Config") or {}
    labels = config.get("Labels") if "Config" in data else data.get("Labels")
    return ImageInfo(
        id=str(data.get("Id", "")),
        repo_tags=[t for t in (data.get("RepoTags") or []) if t and t != "<none>:<none>"],
        size=int(data.get("Size") or 0),
        created=parse_time(data.get("Created")),
        labels=dict(labels or {}),
    )


def engine_event(data: Mapping[str, Any]) -> RuntimeEvent | None:
    if data.get("Type") != "container":
        return None
    action = str(data.get("Action") or data.get("status") or "")
    if action not in MANAGED_ACTIONS:
        return None
    actor = data.get("Actor") or {}
    attributes = actor.get("Attributes") or {}
    _, managed, instance_id, node_id = container_labels(attributes)
    if not managed:
        return None
    exit_code: int | None = None
    if "exitCode" in attributes:
        with contextlib.suppress(TypeError, ValueError):
            exit_code = int(attributes["exitCode"])
    nanos = data.get("timeNano")
    when = parse_time(nanos / 1e9 if isinstance(nanos, int) else data.get("time"))
    event_action: EventAction = action  # type: ignore[assignment]  # checked against MANAGED_ACTIONS
    return RuntimeEvent(
        action=event_action,
        container_id=str(actor.get("ID") or data.get("id") or ""),
        name=attributes.get("name"),
        instance_id=instance_id,
        node_id=node_id,
        exit_code=exit_code,
        time=when,
    )


def lines(buffer: bytearray, *, final: bool = False) -> Iterator[str]:
    while True:
        end = buffer.find(b"\n")
        if end < 0:
            break
        line = bytes(buffer[:end])
        del buffer[: end + 1]
        yield line.rstrip(b"\r").decode("utf-8", "replace")
    if final and buffer:
        line = bytes(buffer)
        buffer.clear()
        yield line.rstrip(b"\r").decode("utf-8", "replace")

