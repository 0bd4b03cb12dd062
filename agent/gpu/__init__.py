"""GPU detection for the node agent.

Only the standard library is used. Every vendor detector runs its tool through
``asyncio.create_subprocess_exec`` (never a shell) with a time limit; a missing
tool, a non-zero exit, a timeout or output that cannot be parsed all mean "no
GPUs of that vendor" and are logged once, never raised.

Public API::

    gpus = await detect_gpus(timeout=10.0)        # list[GpuInfo]
    [g.to_dict() for g in gpus]                   # JSON-able
    GpuInfo.from_dict(d)

The vendor modules (:mod:`agent.gpu.nvidia`, :mod:`agent.gpu.amd`,
:mod:`agent.gpu.jetson`) hold the pure parsers, which are tested on real tool
outputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from agent.protocol.types import VENDORS, GpuInfo, GpuVendor, MigDevice

__all__ = [
    "GpuInfo",
    "MigDevice",
    "ToolResult",
    "Vendor",
    "detect_gpus",
    "normalize_pci_bus_id",
]

log = logging.getLogger(__name__)

# The reported shapes are part of the wire contract (dmd reads them from the facts).
Vendor = GpuVendor

DEFAULT_TIMEOUT = 10.0


# --------------------------------------------------------------------------- helpers

_PCI_RE = re.compile(
    r"^(?:(?P<domain>[0-9a-fA-F]{1,8}):)?(?P<bus>[0-9a-fA-F]{1,2}):"
    r"(?P<dev>[0-9a-fA-F]{1,2})\.(?P<fn>[0-7])$"
)


def normalize_pci_bus_id(value: str | None) -> str | None:
    """``00000000:81:00.0`` / ``0000:C3:00.0`` / ``81:00.0`` -> ``0000:81:00.0``.

    This is the form Linux uses under ``/sys/bus/pci/devices``. Returns None for
    anything that is not a PCI address.
    """
    if value is None:
        return None
    m = _PCI_RE.match(value.strip())
    if m is None:
        return None
    domain = int(m.group("domain") or "0", 16)
    return (
        f"{domain:04x}:{int(m.group('bus'), 16):02x}:{int(m.group('dev'), 16):02x}.{m.group('fn')}"
    )


_MISSING = {
    "",
    "n/a",
    "[n/a]",
    "na",
    "none",
    "unknown",
    "[unknown error]",
    "[not supported]",
    "not supported",
    "[insufficient permissions]",
    "[requested functionality has been deprecated]",
    "requested functionality has been deprecated",
    "[gpu is lost]",
    "[gpu requires reset]",
}


def clean_str(value: object) -> str | None:
    """Strip a tool's value; the many spellings of "not available" become None."""
    if value is None:
        return None
    text = str(value).strip()
    if text.lower() in _MISSING:
        return None
    return text


_NUM_RE = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


def parse_number(value: object) -> float | None:
    """First number in ``value`` ("81559 MiB" -> 81559.0, "45.0" -> 45.0)."""
    text = clean_str(value)
    if text is None:
        return None
    m = _NUM_RE.search(text)
    if m is None:
        return None
    try:
        return float(m.group(0))
    except ValueError:  # pragma: no cover - the regex only matches floats
        return None


def parse_int(value: object) -> int | None:
    number = parse_number(value)
    return None if number is None else round(number)


def read_text(path: str) -> str | None:
    """Read a small file (sysfs, /proc, /etc); None when it is absent or unreadable."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def under_root(root: str, path: str) -> str:
    """``path`` (absolute) as seen from ``root`` ("/" means the real system)."""
    return os.path.join(root, path.lstrip("/"))


_warned: set[str] = set()


def warn_once(key: str, message: str, *args: object, level: int = logging.WARNING) -> None:
    """Log ``message`` at ``level`` the first time ``key`` is seen, at DEBUG after."""
    if key in _warned:
        log.debug(message, *args)
        return
    _warned.add(key)
    log.log(level, message, *args)


def reset_warnings() -> None:
    """Forget which warnings were logged (for tests)."""
    _warned.clear()


@dataclass(slots=True)
class ToolResult:
    """What came back from running one vendor tool."""

    stdout: str | None  # None when the tool could not run or failed
    reason: str | None = None  # "missing", "exit 1", "timeout", "error: ..."

    @property
    def timed_out(self) -> bool:
        return self.reason == "timeout"


def find_tool(name: str, extra_dirs: Iterable[str] = ()) -> str | None:
    """Locate ``name`` on PATH, then in ``extra_dirs``."""
    found = shutil.which(name)
    if found:
        return found
    for directory in extra_dirs:
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


async def run_tool(
    argv: Sequence[str],
    *,
    timeout: float,
) -> ToolResult:
    """Run ``argv`` (no shell) and return its stdout, or why there is none.

    The tool runs in its own session so that, on timeout, the whole process group
    (a wrapper script and its children) is killed. Never raises for tool failures.
    """
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except FileNotFoundError:
        return ToolResult(None, "missing")
    except OSError as exc:
        return ToolResult(None, f"error: {exc}")
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=max(timeout, 0.0))
    except TimeoutError:
        _kill_group(proc)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), timeout=2.0)
        return ToolResult(None, "timeout")
    except asyncio.CancelledError:
        _kill_group(proc)
        raise
    if proc.returncode != 0:
        tail = stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        return ToolResult(None, f"exit {proc.returncode}: {tail[0][:200]}")
    return ToolResult(stdout.decode("utf-8", "replace"))


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


class Deadline:
    """Remaining time of one detection budget, shared by a tool and its fallback."""

    def __init__(self, timeout: float) -> None:
        self._end = time.monotonic() + timeout

    def remaining(self) -> float:
        return max(0.0, self._end - time.monotonic())


# --------------------------------------------------------------------------- detection


async def detect_gpus(
    *,
    timeout: float = DEFAULT_TIMEOUT,
    root: str = "/",
) -> list[GpuInfo]:
    """Detect NVIDIA, AMD and Jetson GPUs concurrently.

    ``timeout`` bounds each vendor's tool runs; ``root`` is where ``/sys``, ``/proc``
    and ``/etc`` are read from (tests point it at a fake tree). Never raises.

    On a Jetson, recent JetPacks also ship ``nvidia-smi``, which lists the
    integrated GPU; such entries (no dedicated memory) are folded into the single
    ``jetson`` entry instead of being reported twice.
    """
    from agent.gpu import amd, jetson, nvidia

    results = await asyncio.gather(
        nvidia.detect(timeout=timeout),
        amd.detect(timeout=timeout, root=root),
        jetson.detect(root=root),
        return_exceptions=True,
    )
    found: dict[str, list[GpuInfo]] = {}
    for vendor, result in zip(VENDORS, results, strict=True):
        if isinstance(result, BaseException):
            if isinstance(result, asyncio.CancelledError):
                raise result
            warn_once(f"{vendor}:crash", "%s GPU detection failed: %r", vendor, result)
            found[vendor] = []
        else:
            found[vendor] = result

    nvidia_gpus = found["nvidia"]
    jetson_gpus = found["jetson"]
    if jetson_gpus and nvidia_gpus:
        integrated = [g for g in nvidia_gpus if g.memory_total_mb is None]
        if integrated:
            igpu = integrated[0]
            jet = jetson_gpus[0]
            jet.uuid = jet.uuid or igpu.uuid
            jet.driver_version = jet.driver_version or igpu.driver_version
            jet.utilization_pct = (
                jet.utilization_pct if jet.utilization_pct is not None else igpu.utilization_pct
            )
            jet.temperature_c = (
                jet.temperature_c if jet.temperature_c is not None else igpu.temperature_c
            )
            nvidia_gpus = [g for g in nvidia_gpus if g.memory_total_mb is not None]

    gpus = [*nvidia_gpus, *found["amd"], *jetson_gpus]
    seen: set[str] = set()
    for gpu in gpus:
        if gpu.uuid is None:
            continue
        if gpu.uuid in seen:
            warn_once(
                f"dup-uuid:{gpu.uuid}",
                "two GPUs report the same UUID %s; address them by index or PCI bus id",
                gpu.uuid,
            )
        seen.add(gpu.uuid)
    return gpus
