"""Periodic host metrics for heartbeats: CPU %, memory, load, and (on demand) GPUs.

``MetricsSampler.sample()`` only reads /proc and is cheap enough to call on every
heartbeat. GPU figures need the vendor tools, so they come from
``await sampler.sample_gpus()``, which re-runs detection; callers decide how often.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from agent.facts import memory_mb
from agent.gpu import DEFAULT_TIMEOUT, detect_gpus, read_text, under_root

__all__ = ["CpuTimes", "MetricsSampler", "parse_proc_stat"]


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """Aggregate CPU jiffies from the ``cpu`` line of /proc/stat."""

    busy: int
    total: int


def parse_proc_stat(text: str) -> CpuTimes | None:
    """The aggregate ``cpu`` line: idle = idle + iowait; guest time is already in user."""
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0] != "cpu":
            continue
        try:
            values = [int(v) for v in parts[1:]]
        except ValueError:
            return None
        # user nice system idle iowait irq softirq steal guest guest_nice
        values = values[:8]  # guest/guest_nice are counted in user/nice already
        if len(values) < 4:
            return None
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        total = sum(values)
        return CpuTimes(busy=total - idle, total=total)
    return None


class MetricsSampler:
    """Keeps the previous /proc/stat reading so each sample gives CPU % since the last."""

    def __init__(self, *, root: str = "/") -> None:
        self._root = root
        self._last = self._read_cpu()

    def _read_cpu(self) -> CpuTimes | None:
        text = read_text(under_root(self._root, "/proc/stat"))
        return parse_proc_stat(text) if text else None

    def _cpu_pct(self) -> float | None:
        current = self._read_cpu()
        previous, self._last = self._last, current
        if current is None or previous is None:
            return None
        total = current.total - previous.total
        if total <= 0:
            return None
        busy = max(0, current.busy - previous.busy)
        return round(min(100.0, 100.0 * busy / total), 1)

    def _load(self) -> tuple[float | None, float | None, float | None]:
        if self._root == "/":
            try:
                one, five, fifteen = os.getloadavg()
                return one, five, fifteen
            except OSError:
                pass
        text = read_text(under_root(self._root, "/proc/loadavg"))
        if text:
            parts = text.split()
            try:
                return float(parts[0]), float(parts[1]), float(parts[2])
            except (IndexError, ValueError):
                pass
        return None, None, None

    def sample(self) -> dict[str, Any]:
        """``cpu_pct`` (since the previous call or construction; None if no time
        passed), memory totals in MiB and the load averages."""
        total, available = memory_mb(root=self._root)
        used = total - available if total is not None and available is not None else None
        load1, load5, load15 = self._load()
        return {
            "cpu_pct": self._cpu_pct(),
            "memory_total_mb": total,
            "memory_available_mb": available,
            "memory_used_mb": used,
            "load_1": load1,
            "load_5": load5,
            "load_15": load15,
        }

    async def sample_gpus(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> list[dict[str, Any]]:
        """Per-GPU utilisation, memory and temperature from a fresh detection."""
        gpus = await detect_gpus(timeout=timeout, root=self._root)
        return [
            {
                "vendor": g.vendor,
                "index": g.index,
                "uuid": g.uuid,
                "utilization_pct": g.utilization_pct,
                "memory_total_mb": g.memory_total_mb,
                "memory_used_mb": g.memory_used_mb,
                "temperature_c": g.temperature_c,
            }
            for g in gpus
        ]
