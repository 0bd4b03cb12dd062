"""Container runtimes behind one driver interface (see :mod:`agent.runtime.driver`).

The package's modules say what they hold: :mod:`.driver` (the interface), :mod:`.spec` (the
data that crosses the wire, and :class:`Capabilities`), :mod:`.errors`, :mod:`.validate`,
:mod:`.ownership` (DM's labels), :mod:`.refs` (image and container references),
:mod:`.image_tar` (image archives), :mod:`.locks`, :mod:`.payload` (the Engine API body), and
the drivers :mod:`.docker` and :mod:`.fake`.

Public API::

    from agent.runtime import ContainerSpec, DriverError, GpuRequest, RuntimeDriver, make_driver

    driver = make_driver("docker", url="unix:///var/run/docker.sock")   # or make_driver("fake")
    driver.capabilities().to_dict()                                       # reported in the facts

The Docker driver (and with it aiodocker) is imported only when it is asked for.
"""

from __future__ import annotations

from typing import Any

from agent.protocol.types import (
    LABEL_INSTANCE,
    LABEL_MANAGED,
    LABEL_NODE,
    LEGACY_CAPABILITIES,
    Capabilities,
    ContainerInfo,
    ContainerSpec,
    ContainerState,
    GpuRequest,
    ImageInfo,
)
from agent.runtime.driver import ExecResult, RuntimeDriver, RuntimeEvent
from agent.runtime.errors import (
    ConflictError,
    DriverError,
    DriverTimeoutError,
    ImageNotFoundError,
    InvalidError,
    NotFoundError,
    PullFailedError,
    RuntimeFailedError,
    UnavailableError,
    UnsupportedError,
    error_for,
)
from agent.runtime.payload import container_create_payload

__all__ = [
    "DRIVERS",
    "LABEL_INSTANCE",
    "LABEL_MANAGED",
    "LABEL_NODE",
    "LEGACY_CAPABILITIES",
    "Capabilities",
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
    "UnsupportedError",
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
