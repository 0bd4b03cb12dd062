"""NVIDIA Jetson (Tegra) integrated GPUs, from files only (no tool is run).

A Jetson is recognised by ``/etc/nv_tegra_release`` (the L4T release) or by a
Tegra ``compatible`` string in the device tree. Its single GPU is reported as
``GpuInfo(vendor="jetson", index=0, name=<board model>, runtime_version=<L4T>)``,
with the load and temperature from sysfs when the kernel exposes them.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass

from agent.gpu import GpuInfo, parse_number, read_text, under_root

__all__ = [
    "TegraStats",
    "detect",
    "detect_sync",
    "parse_device_tree_compatible",
    "parse_device_tree_model",
    "parse_nv_tegra_release",
    "parse_tegrastats",
]

_RELEASE_RE = re.compile(r"#\s*R(?P<major>\d+)\s*\(\w+\),\s*REVISION:\s*(?P<rev>\d+(?:\.\d+)*)")

# Per-mille GPU load files of the different Tegra generations (nano/TX1, TX2, Xavier, Orin).
_LOAD_FILES = (
    "/sys/devices/gpu.0/load",
    "/sys/devices/platform/gpu.0/load",
    "/sys/devices/17000000.gp10b/load",
    "/sys/devices/17000000.gv11b/load",
    "/sys/devices/17000000.ga10b/load",
    "/sys/devices/platform/17000000.gpu/load",
    "/sys/devices/platform/17000000.ga10b/load",
    "/sys/devices/platform/bus@0/17000000.gpu/load",
)
_GPU_THERMAL_TYPES = {"gpu-therm", "gpu-thermal", "gpu"}


def parse_nv_tegra_release(text: str) -> str | None:
    """``# R35 (release), REVISION: 4.1, ...`` -> ``"35.4.1"`` (first release line)."""
    m = _RELEASE_RE.search(text)
    if m is None:
        return None
    return f"{m.group('major')}.{m.group('rev')}"


def parse_device_tree_model(text: str) -> str | None:
    """``/proc/device-tree/model`` without its trailing NUL (None when empty)."""
    model = text.replace("\x00", " ").strip()
    return model or None


def parse_device_tree_compatible(text: str) -> list[str]:
    """``/proc/device-tree/compatible``: a NUL-separated list of strings."""
    return [part.strip() for part in text.split("\x00") if part.strip()]


def _is_tegra(compatible: list[str]) -> bool:
    # Pasted text loses the NULs ("...nvidia,tegra234nvidia,tegra23x"): search, don't match.
    return any(re.search(r"nvidia,tegra\d", c) for c in compatible)


@dataclass(slots=True)
class TegraStats:
    """The GPU- and memory-related parts of one ``tegrastats`` line."""

    gpu_utilization_pct: float | None = None
    gpu_freq_mhz: int | None = None
    gpu_temperature_c: float | None = None
    ram_used_mb: int | None = None
    ram_total_mb: int | None = None


_GR3D_RE = re.compile(r"\bGR3D_FREQ\s+(?P<pct>\d+)%(?:@\[?(?P<freq>\d+)(?:,\d+)*\]?)?")
_GPU_TEMP_RE = re.compile(r"\bgpu@(?P<temp>-?\d+(?:\.\d+)?)C", re.IGNORECASE)
_RAM_RE = re.compile(r"\bRAM\s+(?P<used>\d+)/(?P<total>\d+)MB")


def parse_tegrastats(line: str) -> TegraStats:
    """GPU load/frequency/temperature and RAM from a ``tegrastats`` line (any JetPack)."""
    stats = TegraStats()
    if (m := _GR3D_RE.search(line)) is not None:
        stats.gpu_utilization_pct = float(m.group("pct"))
        stats.gpu_freq_mhz = int(m.group("freq")) if m.group("freq") else None
    if (m := _GPU_TEMP_RE.search(line)) is not None:
        stats.gpu_temperature_c = float(m.group("temp"))
    if (m := _RAM_RE.search(line)) is not None:
        stats.ram_used_mb = int(m.group("used"))
        stats.ram_total_mb = int(m.group("total"))
    return stats


def _gpu_load_pct(root: str) -> float | None:
    candidates = [under_root(root, p) for p in _LOAD_FILES]
    candidates += sorted(glob.glob(under_root(root, "/sys/devices/platform/*gpu*/load")))
    for path in candidates:
        value = parse_number(read_text(path))
        if value is not None:
            return round(value / 10.0, 1)  # per mille
    return None


def _gpu_temperature_c(root: str) -> float | None:
    for zone in sorted(glob.glob(under_root(root, "/sys/class/thermal/thermal_zone*"))):
        kind = (read_text(f"{zone}/type") or "").strip().lower()
        if kind in _GPU_THERMAL_TYPES:
            value = parse_number(read_text(f"{zone}/temp"))
            if value is not None:
                return value / 1000.0 if abs(value) > 200 else value
    return None


def detect_sync(*, root: str = "/") -> list[GpuInfo]:
    """Read the Jetson files under ``root``; [] when this is not a Jetson."""
    release_text = read_text(under_root(root, "/etc/nv_tegra_release"))
    model_text = read_text(under_root(root, "/proc/device-tree/model")) or read_text(
        under_root(root, "/sys/firmware/devicetree/base/model")
    )
    compatible_text = read_text(under_root(root, "/proc/device-tree/compatible")) or read_text(
        under_root(root, "/sys/firmware/devicetree/base/compatible")
    )
    release = parse_nv_tegra_release(release_text) if release_text else None
    model = parse_device_tree_model(model_text) if model_text else None
    compatible = parse_device_tree_compatible(compatible_text) if compatible_text else []
    if release is None and not _is_tegra(compatible) and "jetson" not in (model or "").lower():
        return []
    return [
        GpuInfo(
            vendor="jetson",
            index=0,
            name=model or "NVIDIA Jetson",
            runtime_version=release,
            utilization_pct=_gpu_load_pct(root),
            temperature_c=_gpu_temperature_c(root),
        )
    ]


async def detect(*, root: str = "/") -> list[GpuInfo]:
    """Async wrapper so the Jetson check runs alongside the other vendors."""
    return detect_sync(root=root)
