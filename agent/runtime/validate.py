"""Checks of a :class:`ContainerSpec` before any runtime is given it.

:func:`validate_spec` refuses a spec no runtime should be given (``invalid``);
:func:`check_supported` refuses one this driver cannot run (``unsupported``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from agent.protocol.types import RESERVED_LABELS, Capabilities, ContainerSpec, GpuRequest
from agent.runtime.errors import InvalidError, UnsupportedError
from agent.runtime.refs import is_image_ref

__all__ = ["MIN_MEMORY_MB", "check_supported", "validate_spec"]

_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
_ENV_KEY_RE = re.compile(r"^[^=\x00]+$")
_DEVICE_RE = re.compile(r"^/dev/[A-Za-z0-9_./-]+$")
MIN_MEMORY_MB = 6  # the smallest memory limit Docker accepts


def validate_spec(spec: ContainerSpec) -> None:
    """Raise :class:`InvalidError` for a spec no runtime should be given."""
    problems: list[str] = []
    if not isinstance(spec.instance_id, int) or isinstance(spec.instance_id, bool) or spec.instance_id < 0:
        problems.append(f"instance_id must be a non-negative integer, not {spec.instance_id!r}")
    if not isinstance(spec.node_id, int) or isinstance(spec.node_id, bool) or spec.node_id < 0:
        problems.append(f"node_id must be a non-negative integer, not {spec.node_id!r}")
    if not isinstance(spec.name, str) or not _NAME_RE.match(spec.name):
        problems.append(f"container name {spec.name!r} must match [a-zA-Z0-9][a-zA-Z0-9_.-]*")
    if not is_image_ref(spec.image):
        problems.append(f"image reference {spec.image!r} is not valid")
    if spec.command is not None and (
        not isinstance(spec.command, list) or not all(isinstance(a, str) for a in spec.command)
    ):
        problems.append("command must be a list of strings")
    for key, value in spec.env.items():
        if not isinstance(key, str) or not _ENV_KEY_RE.match(key) or not isinstance(value, str):
            problems.append(f"environment variable {key!r} is not valid")
        elif "\x00" in value:
            problems.append(f"environment variable {key!r} holds a NUL byte")
    if spec.cpus is not None and not (isinstance(spec.cpus, int | float) and 0 < spec.cpus <= 4096):
        problems.append(f"cpus must be a positive number, not {spec.cpus!r}")
    if spec.memory_mb is not None and not (
        isinstance(spec.memory_mb, int) and not isinstance(spec.memory_mb, bool) and spec.memory_mb >= MIN_MEMORY_MB
    ):
        problems.append(f"memory_mb must be an integer of at least {MIN_MEMORY_MB}, not {spec.memory_mb!r}")
    for key, value in spec.labels.items():
        if key in RESERVED_LABELS:
            problems.append(f"label {key!r} is set by DM and cannot be given")
        elif not isinstance(key, str) or not key or not isinstance(value, str):
            problems.append(f"label {key!r} is not valid")
    if spec.restart_policy not in ("no", "on-failure", "always", "unless-stopped"):
        problems.append(f"restart policy {spec.restart_policy!r} is not known")
    problems.extend(_gpu_problems(spec.gpus))
    if problems:
        raise InvalidError("; ".join(problems))


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


def check_supported(spec: ContainerSpec, capabilities: Capabilities) -> None:
    """Raise :class:`UnsupportedError` when the spec asks for what the driver cannot do."""
    missing: list[str] = []
    if spec.privileged and not capabilities.privileged:
        missing.append("privileged containers (capability privileged)")
    if spec.host_network and not capabilities.host_network:
        missing.append("the host's network (capability host_network)")
    for vendor in dict.fromkeys(g.vendor for g in spec.gpus):
        if not capabilities.can_pass(vendor):
            missing.append(f"{vendor} GPUs (capability gpu_vendors)")
    if missing:
        raise UnsupportedError(f"create container {spec.name}: this runtime driver cannot give a container "
                               + ", ".join(missing))
