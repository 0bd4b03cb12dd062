"""NVIDIA GPUs through ``nvidia-smi``.

The detector runs ``nvidia-smi -q -x`` (which also carries the CUDA version) and
falls back to ``--query-gpu`` CSV when the XML is unusable or lists fewer GPUs
than ``<attached_gpus>`` says.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from agent.gpu import (
    DEFAULT_TIMEOUT,
    Deadline,
    GpuInfo,
    MigDevice,
    clean_str,
    find_tool,
    normalize_pci_bus_id,
    parse_int,
    parse_number,
    run_tool,
    warn_once,
)

__all__ = [
    "QUERY_FIELDS",
    "detect",
    "parse_list",
    "parse_query_csv",
    "parse_xml",
    "parse_xml_document",
]

log = logging.getLogger(__name__)

BINARY = "nvidia-smi"

QUERY_FIELDS: list[str] = [
    "index",
    "uuid",
    "name",
    "memory.total",
    "memory.used",
    "utilization.gpu",
    "temperature.gpu",
    "driver_version",
    "pci.bus_id",
]


# --------------------------------------------------------------------------- CSV

_UNIT_RE = re.compile(r"\s*\[[^\]]*\]\s*$")
_FIELD_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def _field_name(column: str) -> str:
    """``"memory.total [MiB]"`` -> ``"memory.total"``."""
    return _UNIT_RE.sub("", column.strip())


def _is_header(columns: Sequence[str], fields: Sequence[str]) -> bool:
    names = [_field_name(c) for c in columns]
    return bool(set(names) & set(fields)) and all(_FIELD_NAME_RE.match(n) for n in names)


def parse_query_csv(text: str, fields: list[str]) -> list[GpuInfo]:
    """Parse ``nvidia-smi --query-gpu=<fields> --format=csv[,noheader][,nounits]``.

    ``fields`` is the list given to ``--query-gpu``. When the output has a header
    line (``--format=csv``), the header decides the column order, so any field
    list works; unit suffixes ("81559 MiB", "0 %") and the bracketed "not
    available" values ("[N/A]", "[Not Supported]") are handled. Rows that do not
    fit (wrong column count, no name) are skipped.
    """
    rows = [
        row
        for row in csv.reader(io.StringIO(text), skipinitialspace=True)
        if row and any(cell.strip() for cell in row)
    ]
    if not rows:
        return []
    columns = list(fields)
    if _is_header(rows[0], fields):
        columns = [_field_name(c) for c in rows[0]]
        rows = rows[1:]
    gpus: list[GpuInfo] = []
    for position, row in enumerate(rows):
        if len(row) != len(columns):
            log.debug("nvidia-smi csv: skipping row with %d columns: %r", len(row), row)
            continue
        values = {col: cell.strip() for col, cell in zip(columns, row, strict=True)}
        name = clean_str(values.get("name"))
        if name is None:
            continue
        index = position
        if "index" in values:
            parsed = parse_int(values["index"])
            if parsed is None or not values["index"].strip().isdigit():
                continue
            index = parsed
        uuid = clean_str(values.get("uuid"))
        if uuid is not None and not uuid.startswith(("GPU-", "MIG-")):
            continue
        gpus.append(
            GpuInfo(
                vendor="nvidia",
                index=index,
                name=name,
                uuid=uuid,
                pci_bus_id=normalize_pci_bus_id(values.get("pci.bus_id")),
                memory_total_mb=parse_int(values.get("memory.total")),
                memory_used_mb=parse_int(values.get("memory.used")),
                utilization_pct=parse_number(values.get("utilization.gpu")),
                temperature_c=parse_number(values.get("temperature.gpu")),
                driver_version=clean_str(values.get("driver_version")),
                mig_mode=clean_str(values.get("mig.mode.current")),
            )
        )
    return gpus


# --------------------------------------------------------------------------- XML


def _text(element: ET.Element | None, path: str) -> str | None:
    if element is None:
        return None
    found = element.find(path)
    if found is None or found.text is None:
        return None
    return clean_str(found.text)


def parse_xml_document(text: str) -> tuple[list[GpuInfo], int | None]:
    """Parse ``nvidia-smi -q -x``; return the GPUs and ``<attached_gpus>``.

    Works with the v11, v12 and v13 DTD layouts. The DOCTYPE is never resolved
    (ElementTree does not fetch external DTDs). Raises ``ValueError`` when the
    text is not an ``nvidia_smi_log`` document.
    """
    try:
        root = ET.fromstring(text.strip())  # noqa: S314 - local tool output, no DTD fetched
    except ET.ParseError as exc:
        raise ValueError(f"not XML: {exc}") from exc
    if root.tag != "nvidia_smi_log":
        raise ValueError(f"unexpected XML root <{root.tag}>")
    driver = _text(root, "driver_version")
    cuda = _text(root, "cuda_version")
    attached = parse_int(_text(root, "attached_gpus"))
    gpus: list[GpuInfo] = []
    for position, gpu in enumerate(root.findall("gpu")):
        name = _text(gpu, "product_name") or "NVIDIA GPU"
        bus = _text(gpu, "pci/pci_bus_id") or gpu.get("id")
        mig_devices: list[MigDevice] = []
        for mig in gpu.findall("mig_devices/mig_device"):
            mig_index = parse_int(_text(mig, "index"))
            if mig_index is None:
                continue
            mig_devices.append(
                MigDevice(
                    index=mig_index,
                    uuid=_text(mig, "uuid"),
                    memory_total_mb=parse_int(_text(mig, "fb_memory_usage/total")),
                    gpu_instance_id=parse_int(_text(mig, "gpu_instance_id")),
                    compute_instance_id=parse_int(_text(mig, "compute_instance_id")),
                )
            )
        gpus.append(
            GpuInfo(
                vendor="nvidia",
                index=position,
                name=name,
                uuid=_text(gpu, "uuid"),
                pci_bus_id=normalize_pci_bus_id(bus),
                memory_total_mb=parse_int(_text(gpu, "fb_memory_usage/total")),
                memory_used_mb=parse_int(_text(gpu, "fb_memory_usage/used")),
                utilization_pct=parse_number(_text(gpu, "utilization/gpu_util")),
                temperature_c=parse_number(_text(gpu, "temperature/gpu_temp")),
                driver_version=driver,
                runtime_version=cuda,
                mig_mode=_text(gpu, "mig_mode/current_mig"),
                mig_devices=mig_devices,
            )
        )
    if attached is not None and attached != len(gpus):
        warn_once(
            f"nvidia:attached:{attached}:{len(gpus)}",
            "nvidia-smi -q -x: <attached_gpus> says %d but %d <gpu> elements were found",
            attached,
            len(gpus),
        )
    return gpus, attached


def parse_xml(text: str) -> list[GpuInfo]:
    """Parse ``nvidia-smi -q -x`` into GPUs (index = document order, as nvidia-smi's)."""
    return parse_xml_document(text)[0]


# --------------------------------------------------------------------------- -L

_LIST_GPU_RE = re.compile(r"^GPU\s+(?P<index>\d+):\s*(?P<name>.*?)\s*\(UUID:\s*(?P<uuid>[^)]+)\)")
_LIST_MIG_RE = re.compile(
    r"^\s+MIG\s+(?P<profile>\S+)\s+Device\s+(?P<index>\d+):\s*\(UUID:\s*(?P<uuid>[^)]+)\)"
)


def parse_list(text: str) -> list[GpuInfo]:
    """Parse ``nvidia-smi -L``: index, name and UUID; MIG devices under their GPU.

    A GPU with MIG lines under it gets ``mig_mode="Enabled"``; otherwise the mode
    is unknown (None) because ``-L`` does not say.
    """
    gpus: list[GpuInfo] = []
    for line in text.splitlines():
        gpu_match = _LIST_GPU_RE.match(line)
        if gpu_match is not None:
            gpus.append(
                GpuInfo(
                    vendor="nvidia",
                    index=int(gpu_match.group("index")),
                    name=gpu_match.group("name").strip(),
                    uuid=gpu_match.group("uuid").strip(),
                )
            )
            continue
        mig_match = _LIST_MIG_RE.match(line)
        if mig_match is not None and gpus:
            parent = gpus[-1]
            parent.mig_mode = "Enabled"
            parent.mig_devices.append(
                MigDevice(
                    index=int(mig_match.group("index")),
                    uuid=mig_match.group("uuid").strip(),
                    profile=mig_match.group("profile"),
                )
            )
    return gpus


# --------------------------------------------------------------------------- detector


def _merge(xml_gpus: list[GpuInfo], csv_gpus: list[GpuInfo], cuda: str | None) -> list[GpuInfo]:
    """CSV decides which GPUs exist; XML entries (richer) replace matching ones."""
    by_uuid = {g.uuid: g for g in xml_gpus if g.uuid}
    by_bus = {g.pci_bus_id: g for g in xml_gpus if g.pci_bus_id}
    merged: list[GpuInfo] = []
    for gpu in csv_gpus:
        rich = by_bus.get(gpu.pci_bus_id) if gpu.pci_bus_id else None
        if rich is None and gpu.uuid:
            rich = by_uuid.get(gpu.uuid)
        if rich is not None:
            rich.index = gpu.index
            merged.append(rich)
        else:
            gpu.runtime_version = gpu.runtime_version or cuda
            merged.append(gpu)
    return merged


async def detect(
    *,
    timeout: float = DEFAULT_TIMEOUT,
    binary: str | None = None,
) -> list[GpuInfo]:
    """Detect NVIDIA GPUs; [] when nvidia-smi is missing, fails, hangs or talks nonsense."""
    path = binary or find_tool(BINARY)
    if path is None:
        warn_once("nvidia:missing", "nvidia-smi not found: no NVIDIA GPUs", level=logging.INFO)
        return []
    deadline = Deadline(timeout)

    xml_gpus: list[GpuInfo] = []
    attached: int | None = None
    cuda: str | None = None
    result = await run_tool([path, "-q", "-x"], timeout=deadline.remaining())
    if result.reason == "missing":
        warn_once("nvidia:missing", "nvidia-smi not found: no NVIDIA GPUs", level=logging.INFO)
        return []
    if result.timed_out:
        warn_once("nvidia:timeout", "nvidia-smi -q -x timed out after %.1fs", timeout)
        return []
    if result.stdout is not None:
        try:
            xml_gpus, attached = parse_xml_document(result.stdout)
            cuda = xml_gpus[0].runtime_version if xml_gpus else None
        except ValueError as exc:
            warn_once("nvidia:xml", "cannot parse nvidia-smi -q -x output: %s", exc)
    else:
        warn_once("nvidia:xml-failed", "nvidia-smi -q -x failed: %s", result.reason)

    if xml_gpus and (attached is None or attached <= len(xml_gpus)):
        return xml_gpus

    query = ",".join(QUERY_FIELDS)
    result = await run_tool(
        [path, f"--query-gpu={query}", "--format=csv,noheader,nounits"],
        timeout=deadline.remaining(),
    )
    if result.stdout is None:
        if not xml_gpus:
            warn_once("nvidia:csv-failed", "nvidia-smi --query-gpu failed: %s", result.reason)
        return xml_gpus
    csv_gpus = parse_query_csv(result.stdout, QUERY_FIELDS)
    if not csv_gpus:
        if not xml_gpus:
            warn_once("nvidia:csv", "nvidia-smi --query-gpu output had no usable rows")
        return xml_gpus
    return _merge(xml_gpus, csv_gpus, cuda)
