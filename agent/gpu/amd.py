"""AMD (ROCm) GPUs through ``rocm-smi --json``, with ``amd-smi static --json`` as fallback.

Key names differ between ROCm releases ("Card series" / "Card Series"), between
vendors (Hygon DCUs say "DCU use (%)" and "vram Total Memory (MiB)") and with the
flags given, so lookups are case-insensitive and every key is optional.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from typing import Any

from agent.gpu import (
    DEFAULT_TIMEOUT,
    Deadline,
    GpuInfo,
    clean_str,
    find_tool,
    normalize_pci_bus_id,
    parse_number,
    read_text,
    run_tool,
    under_root,
    warn_once,
)

__all__ = [
    "ROCM_SMI_ARGS",
    "detect",
    "dri_nodes",
    "parse_amd_smi_static_json",
    "parse_rocm_smi_json",
    "rocm_version",
]

log = logging.getLogger(__name__)

ROCM_BIN_DIRS = ("/opt/rocm/bin",)
ROCM_SMI_ARGS = [
    "--showproductname",
    "--showuniqueid",
    "--showserial",
    "--showbus",
    "--showmeminfo",
    "vram",
    "--showuse",
    "--showtemp",
    "--showdriverversion",
    "--json",
]

_CARD_RE = re.compile(r"^card(\d+)$", re.IGNORECASE)
_VRAM_TOTAL_RE = re.compile(r"^vram total memory \((b|kib|kb|mib|mb|gib|gb)\)$")
_VRAM_USED_RE = re.compile(r"^vram total used memory \((b|kib|kb|mib|mb|gib|gb)\)$")
_USE_RE = re.compile(r"^(gpu|dcu) use \(%\)$")
_TEMP_RE = re.compile(r"^temperature \(sensor ([^)]+)\) \(c\)$")
_TEMP_PREFERENCE = ("edge", "junction", "hotspot")

_TO_MIB = {
    "b": 1 / (1024 * 1024),
    "kib": 1 / 1024,
    "kb": 1 / 1024,
    "mib": 1.0,
    "mb": 1.0,
    "gib": 1024.0,
    "gb": 1024.0,
}


def _load_json(text: str) -> Any:
    """JSON from a tool that may print warnings before it."""
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    if start < 0:
        raise ValueError("no JSON in output")
    try:
        value, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc}") from exc
    return value


def _mib(value: object, unit: str) -> int | None:
    number = parse_number(value)
    if number is None:
        return None
    return int(number * _TO_MIB.get(unit.lower(), 1.0))


def _fallback_uuid(pci_bus_id: str | None, index: int) -> str:
    return f"amd-{pci_bus_id}" if pci_bus_id else f"amd-card{index}"


def parse_rocm_smi_json(text: str) -> list[GpuInfo]:
    """Parse ``rocm-smi ... --json``: one GpuInfo per ``cardN`` entry.

    ``index`` is rocm-smi's card number (which is not the ``/dev/dri/cardN``
    number). ``uuid`` is the Unique ID, else the serial, else ``amd-<pci bus id>``.
    ``runtime_version`` is the driver version here; the detector replaces it with
    the installed ROCm version when it can read it. Raises ``ValueError`` when the
    text holds no JSON object.
    """
    data = _load_json(text)
    if not isinstance(data, dict):
        raise ValueError("rocm-smi JSON is not an object")
    system = data.get("system")
    system_lower = (
        {str(k).strip().lower(): v for k, v in system.items()} if isinstance(system, dict) else {}
    )
    system_driver = clean_str(system_lower.get("driver version"))

    cards: list[tuple[int, Mapping[str, Any]]] = []
    for key, value in data.items():
        m = _CARD_RE.match(str(key))
        if m and isinstance(value, dict):
            cards.append((int(m.group(1)), value))
    cards.sort(key=lambda item: item[0])

    gpus: list[GpuInfo] = []
    for index, card in cards:
        info = {str(k).strip().lower(): v for k, v in card.items()}
        name = (
            clean_str(info.get("card series"))
            or clean_str(info.get("device name"))
            or clean_str(info.get("card sku"))
            or "AMD GPU"
        )
        pci = normalize_pci_bus_id(clean_str(info.get("pci bus")))
        uuid = (
            _clean_id(info.get("unique id"))
            or _clean_id(info.get("serial number"))
            or _fallback_uuid(pci, index)
        )
        total: int | None = None
        used: int | None = None
        utilization: float | None = None
        temps: dict[str, float] = {}
        for key, value in info.items():
            if (m := _VRAM_TOTAL_RE.match(key)) is not None:
                total = _mib(value, m.group(1))
            elif (m := _VRAM_USED_RE.match(key)) is not None:
                used = _mib(value, m.group(1))
            elif _USE_RE.match(key) is not None:
                utilization = parse_number(value)
            elif (m := _TEMP_RE.match(key)) is not None:
                reading = parse_number(value)
                if reading is not None:
                    temps[m.group(1).strip()] = reading
        temperature = next((temps[s] for s in _TEMP_PREFERENCE if s in temps), None)
        if temperature is None and temps:
            temperature = next(iter(temps.values()))
        driver = clean_str(info.get("driver version")) or system_driver
        gpus.append(
            GpuInfo(
                vendor="amd",
                index=index,
                name=name,
                uuid=uuid,
                pci_bus_id=pci,
                memory_total_mb=total,
                memory_used_mb=used,
                utilization_pct=utilization,
                temperature_c=temperature,
                driver_version=driver,
                runtime_version=driver,
            )
        )
    return gpus


def _clean_id(value: object) -> str | None:
    text = clean_str(value)
    if text is None or text.lower() in {"0", "0x0", "0x0000000000000000"}:
        return None
    return text


_KERNEL_VERSION_RE = re.compile(r"^Linux\s*version\s*([^\s(]+)")


def _amd_smi_driver_version(value: object) -> str | None:
    """amd-smi's in-kernel amdgpu reports ``/proc/version`` squashed; keep the release."""
    text = clean_str(value)
    if text is None:
        return None
    m = _KERNEL_VERSION_RE.match(text)
    return m.group(1) if m else text


def _sized_mib(value: object) -> int | None:
    """amd-smi sizes: ``{"value": 65520, "unit": "MB"}`` or ``"65520 MB"``."""
    if isinstance(value, dict):
        unit = str(value.get("unit") or "MB")
        return _mib(value.get("value"), unit)
    text = clean_str(value)
    if text is None:
        return None
    m = re.search(r"([A-Za-z]+)\s*$", text)
    return _mib(text, m.group(1) if m else "MB")


def _section(entry: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = entry.get(key)
    return value if isinstance(value, dict) else {}


def parse_amd_smi_static_json(text: str) -> list[GpuInfo]:
    """Parse ``amd-smi static --json`` (either ``{"gpu_data": [...]}`` or a bare list).

    It has no utilisation, temperature or used memory; those stay None.
    """
    data = _load_json(text)
    entries: Any = data.get("gpu_data") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise ValueError("amd-smi JSON has no GPU list")
    gpus: list[GpuInfo] = []
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        index = entry.get("gpu")
        index = index if isinstance(index, int) else position
        asic = _section(entry, "asic")
        bus = _section(entry, "bus")
        board = _section(entry, "board")
        driver = _section(entry, "driver")
        vram = _section(entry, "vram")
        pci = normalize_pci_bus_id(clean_str(bus.get("bdf")))
        uuid = (
            _clean_id(asic.get("asic_serial"))
            or _clean_id(board.get("product_serial"))
            or _fallback_uuid(pci, index)
        )
        name = (
            clean_str(asic.get("market_name")) or clean_str(board.get("product_name")) or "AMD GPU"
        )
        driver_version = _amd_smi_driver_version(driver.get("version"))
        gpus.append(
            GpuInfo(
                vendor="amd",
                index=index,
                name=name,
                uuid=uuid,
                pci_bus_id=pci,
                memory_total_mb=_sized_mib(vram.get("size")),
                driver_version=driver_version,
                runtime_version=driver_version,
            )
        )
    return gpus


# --------------------------------------------------------------------------- host files


def dri_nodes(pci_bus_id: str | None, *, root: str = "/") -> tuple[str | None, str | None]:
    """``/dev/dri/cardN`` and ``/dev/dri/renderDN`` of a PCI device, from sysfs."""
    if not pci_bus_id:
        return None, None
    drm = under_root(root, f"/sys/bus/pci/devices/{pci_bus_id}/drm")
    try:
        names = os.listdir(drm)
    except OSError:
        return None, None
    card = next((n for n in sorted(names) if re.fullmatch(r"card\d+", n)), None)
    render = next((n for n in sorted(names) if re.fullmatch(r"renderD\d+", n)), None)
    return (
        f"/dev/dri/{card}" if card else None,
        f"/dev/dri/{render}" if render else None,
    )


def rocm_version(*, root: str = "/") -> str | None:
    """Installed ROCm (or Hygon DTK) version from ``/opt/*/.info/version``."""
    for path in ("/opt/rocm/.info/version", "/opt/dtk/.info/version"):
        text = read_text(under_root(root, path))
        if text and text.strip():
            return text.strip().splitlines()[0].strip()
    return None


def _kernel_driver_version(root: str) -> str | None:
    text = read_text(under_root(root, "/sys/module/amdgpu/version"))
    return text.strip() if text and text.strip() else None


# --------------------------------------------------------------------------- detector


async def detect(
    *,
    timeout: float = DEFAULT_TIMEOUT,
    root: str = "/",
    binary: str | None = None,
) -> list[GpuInfo]:
    """Detect AMD GPUs; [] when the ROCm tools are missing, fail, hang or talk nonsense."""
    deadline = Deadline(timeout)
    gpus: list[GpuInfo] | None = None
    rocm_smi = binary or find_tool("rocm-smi", ROCM_BIN_DIRS)
    if rocm_smi is not None:
        result = await run_tool([rocm_smi, *ROCM_SMI_ARGS], timeout=deadline.remaining())
        if result.timed_out:
            warn_once("amd:timeout", "rocm-smi timed out after %.1fs", timeout)
            return []
        if result.stdout is None:
            warn_once("amd:failed", "rocm-smi failed: %s", result.reason)
        else:
            try:
                gpus = parse_rocm_smi_json(result.stdout)
            except ValueError as exc:
                warn_once("amd:parse", "cannot parse rocm-smi output: %s", exc)
    if gpus is None and binary is None:
        amd_smi = find_tool("amd-smi", ROCM_BIN_DIRS)
        if amd_smi is not None:
            result = await run_tool([amd_smi, "static", "--json"], timeout=deadline.remaining())
            if result.stdout is None:
                warn_once("amd-smi:failed", "amd-smi static failed: %s", result.reason)
            else:
                try:
                    gpus = parse_amd_smi_static_json(result.stdout)
                except ValueError as exc:
                    warn_once("amd-smi:parse", "cannot parse amd-smi output: %s", exc)
        elif rocm_smi is None:
            warn_once("amd:missing", "rocm-smi not found: no AMD GPUs", level=logging.INFO)
    if not gpus:
        return []
    version = rocm_version(root=root)
    kernel_driver = _kernel_driver_version(root)
    for gpu in gpus:
        gpu.dri_card, gpu.dri_render = dri_nodes(gpu.pci_bus_id, root=root)
        gpu.driver_version = gpu.driver_version or kernel_driver
        gpu.runtime_version = version or gpu.driver_version
    return gpus
