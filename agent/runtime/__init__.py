"""Container runtimes behind one driver interface (see :mod:`agent.runtime.base`).

Public API::

    from agent.runtime import ContainerSpec, DriverError, GpuRequest, RuntimeDriver, make_driver

    driver = make_driver("docker", url="unix:///var/run/docker.sock")   # or make_driver("fake")

The Docker driver (and with it aiodocker) is imported only when it is asked for.
"""

from __future__ import annotations

from typing import Any

from agent.runtime.base import (
    LABEL_INSTANCE,
    LABEL_MANAGED,
    LABEL_NODE,
    ConflictError,
    ContainerInfo,
    ContainerSpec,
    ContainerState,
    DriverError,
    DriverTimeoutError,
    ExecResult,
    GpuRequest,
    ImageInfo,
    ImageNotFoundError,
    InvalidError,
    NotFoundError,
    PullFailedError,
    RuntimeDriver,
    RuntimeEvent,
    RuntimeFailedError,
    UnavailableError,
    error_for,
)
from agent.runtime.payload import container_create_payload

__all__ = [
    "DRIVERS",
    "LABEL_INSTANCE",
    "LABEL_MANAGED",
    "LABEL_NODE",
    "ConflictError",
    "ContainerInfo",
    "ContainerSpec",
    "ContainerState",
    "DriverError",
    "DriverTimeoutError",
    "ExecResult",
    "GpuRequest",
    "ImageInfo",
    "ImageNotFoundError",
    "InvalidError",
    "NotFoundError",
    "PullFailedError",
    "RuntimeDriver",
    "RuntimeEvent",
    "RuntimeFailedError",
    "UnavailableError",
    "container_create_payload",
    "error_for",
    "make_driver",
]

DRIVERS = ("docker", "fake")


def make_driver(name: str, **options: Any) -> RuntimeDriver:
    """A driver by name ("docker" takes ``url``, ...; "fake" for tests)."""
    if name == "docker":
        from agent.runtime.docker import DockerDriver

        return DockerDriver(**options)
    if name == "fake":
        from agent.runtime.fake import FakeDriver

        return FakeDriver(**options)
    raise InvalidError(f"unknown runtime driver {name!r} (known: {', '.join(DRIVERS)})")
