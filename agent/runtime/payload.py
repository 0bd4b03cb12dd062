"""The exact Docker Engine API body of ``POST /containers/create`` for a :class:`ContainerSpec`.

A pure function, so that what DM asks of Docker (limits, GPUs, what it leaves out) is tested
without a Docker Engine. What it never sets, on purpose:

* ``PortBindings`` / ``ExposedPorts`` / publishing: DM allocates host ports from its own pools
  and forwards them itself, so maps can change while the container runs.
* a restart policy other than the spec's (``no`` by default): DM decides what runs.
* ``Privileged`` / host networking unless the spec asks (an admin's decision).

GPUs (one spec may combine NVIDIA and AMD GPUs; a Jetson's GPU stands alone):

* NVIDIA: ``HostConfig.DeviceRequests`` naming the devices by uuid (``GPU-``/``MIG-``; index
  when there is no uuid) with the ``gpu`` capability, which selects Docker's nvidia device
  driver (the NVIDIA Container Toolkit).
* AMD (ROCm): ``/dev/kfd`` plus each GPU's own DRM card and render node as ``Devices``, and the
  ``video`` group. ``seccomp=unconfined``, which some ROCm documentation adds, is *not* set: it
  disables the syscall filter for every workload to help a few (debuggers, some profilers);
  an admin can run such workloads privileged instead.
* Jetson: the ``nvidia`` runtime with ``NVIDIA_VISIBLE_DEVICES=all`` (on Tegra the container
  runtime mounts the integrated GPU's devices and libraries).
* A container given no NVIDIA or Jetson GPU gets ``NVIDIA_VISIBLE_DEVICES=void``: on hosts
  whose default runtime is nvidia (every Jetson, many GPU servers) an image's
  ``ENV NVIDIA_VISIBLE_DEVICES=all`` (as in the CUDA images) would otherwise hand it every GPU,
  outside DM's ledger and quotas. A spec's own value for that variable is never used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent.gpu import GpuInfo
from agent.protocol.types import ContainerSpec, GpuRequest
from agent.runtime.ownership import labels_for
from agent.runtime.validate import validate_spec

__all__ = ["MIB", "NVIDIA_ENV", "container_create_payload", "gpu_host_config", "gpu_request"]

MIB = 1024 * 1024
NVIDIA_ENV = "NVIDIA_VISIBLE_DEVICES"
KFD = "/dev/kfd"


def gpu_request(gpu: GpuInfo, *, gids: Sequence[int] = ()) -> GpuRequest:
    """The request for a detected GPU (see :mod:`agent.gpu`)."""
    return GpuRequest(
        vendor=gpu.vendor,
        uuid=gpu.uuid,
        index=gpu.index,
        dri_card=gpu.dri_card,
        dri_render=gpu.dri_render,
        gids=tuple(gids),
    )


def _device(path: str) -> dict[str, str]:
    return {"PathOnHost": path, "PathInContainer": path, "CgroupPermissions": "rwm"}


def gpu_host_config(gpus: list[GpuRequest]) -> tuple[dict[str, Any], dict[str, str]]:
    """(HostConfig fields, environment variables) that give a container ``gpus``."""
    host: dict[str, Any] = {}
    env: dict[str, str] = {}
    nvidia = [g for g in gpus if g.vendor == "nvidia"]
    amd = [g for g in gpus if g.vendor == "amd"]
    jetson = [g for g in gpus if g.vendor == "jetson"]
    if nvidia:
        ids = [g.uuid if g.uuid else str(g.index) for g in nvidia]
        host["DeviceRequests"] = [{"Driver": "nvidia", "DeviceIDs": ids, "Capabilities": [["gpu"]]}]
    if amd:
        paths = [KFD]
        for gpu in amd:
            for path in (gpu.dri_card, gpu.dri_render):
                if path and path not in paths:
                    paths.append(path)
        host["Devices"] = [_device(p) for p in paths]
        # "video" by name: it exists in practically every base image and owns /dev/kfd and the
        # DRM nodes on older distributions. "render" (their group on current ones) is *not*
        # added by name: Docker resolves GroupAdd names in the image's /etc/group and refuses
        # to start the container when an image lacks the group (most base images lack
        # "render"). The host's numeric group ids of the device nodes, which need no entry in
        # the image, come in GpuRequest.gids instead. Root in the container needs neither.
        groups = ["video"]
        for gpu in amd:
            for gid in gpu.gids:
                if str(gid) not in groups:
                    groups.append(str(gid))
        host["GroupAdd"] = groups
    if jetson:
        host["Runtime"] = "nvidia"
        env[NVIDIA_ENV] = "all"
    elif not nvidia:
        env[NVIDIA_ENV] = "void"
    return host, env


def container_create_payload(spec: ContainerSpec) -> dict[str, Any]:
    """The JSON body for ``POST /containers/create?name=<spec.name>``.

    Validates the spec first (raises :class:`agent.runtime.errors.InvalidError`).
    """
    validate_spec(spec)
    gpu_host, gpu_env = gpu_host_config(spec.gpus)
    env = {k: v for k, v in spec.env.items() if k != NVIDIA_ENV}
    env.update(gpu_env)

    host: dict[str, Any] = {
        "NetworkMode": "host" if spec.host_network else "bridge",
        "Privileged": bool(spec.privileged),
        "PublishAllPorts": False,
        "RestartPolicy": {"Name": spec.restart_policy, "MaximumRetryCount": 0},
        "Init": bool(spec.init),
    }
    if spec.cpus is not None:
        host["NanoCpus"] = round(spec.cpus * 1_000_000_000)
    if spec.memory_mb is not None:
        host["Memory"] = spec.memory_mb * MIB
        # Swap equal to the limit: no swap on top of it, so the memory quota is the quota.
        host["MemorySwap"] = spec.memory_mb * MIB
    host.update(gpu_host)

    payload: dict[str, Any] = {
        "Image": spec.image,
        "Env": [f"{k}={v}" for k, v in env.items()],
        "Labels": labels_for(spec.instance_id, spec.node_id, spec.labels),
        "Tty": False,
        "OpenStdin": False,
        "AttachStdin": False,
        "AttachStdout": False,
        "AttachStderr": False,
        "HostConfig": host,
    }
    if spec.command is not None:
        payload["Cmd"] = list(spec.command)
    if spec.hostname:
        payload["Hostname"] = spec.hostname
    if spec.working_dir:
        payload["WorkingDir"] = spec.working_dir
    if spec.user:
        payload["User"] = spec.user
    return payload
