"""The Docker driver: the Engine API through aiodocker (never the docker CLI, never a shell).

Public API::

    async with DockerDriver("unix:///var/run/docker.sock") as driver:
        info = await driver.create(spec)

Its parts: :mod:`.engine` (client, streams, engine errors), :mod:`.convert` (Engine answers
as DM's types), :mod:`.containers`, :mod:`.streams` (logs, exec, events), :mod:`.interactive`
(exec with stdin and a terminal), :mod:`.images` and :mod:`.archive` (files in and out).
"""

from __future__ import annotations

from agent.protocol.types import GPU_VENDORS, Capabilities
from agent.runtime.docker.archive import ArchiveCalls
from agent.runtime.docker.containers import ContainerCalls
from agent.runtime.docker.engine import DEFAULT_DOCKER_HOST, translate_error
from agent.runtime.docker.images import ImageCalls
from agent.runtime.docker.streams import StreamCalls

__all__ = ["CAPABILITIES", "DEFAULT_DOCKER_HOST", "DockerDriver", "translate_error"]

# What the Docker driver does: a driver claims only what it does, and the conformance suite checks
# each claim.
CAPABILITIES = Capabilities(
    gpu_vendors=GPU_VENDORS,  # NVIDIA by DeviceRequests, AMD by devices, Jetson by the nvidia runtime
    privileged=True,
    host_network=True,
    exec=True,
    exec_tty=True,  # exec_interactive (docker/interactive.py)
    logs_follow=True,
    pull=True,
    image_import=True,
    image_export=True,
    commit=True,
    file_copy=True,  # put_archive / get_archive (archive.py)
)


class DockerDriver(ContainerCalls, StreamCalls, ImageCalls, ArchiveCalls):
    """:class:`~agent.runtime.driver.RuntimeDriver` on a Docker Engine (or a Docker-compatible
    API such as Podman's)."""

    name = "docker"

    def capabilities(self) -> Capabilities:
        return CAPABILITIES
