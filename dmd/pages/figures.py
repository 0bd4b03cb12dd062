"""How the pages write sizes, percentages, times and a node's live figures (the sparklines
under each one), in the page's language."""

from __future__ import annotations

import collections
import datetime as dt
import time
from collections.abc import Callable, Sequence
from typing import Any

from dmd.models import mib_text
from dmd.schemas import NodeOut

# The history drawn under each live figure (the hub keeps about this much).
HISTORY_S = 15 * 60
SPARK_W, SPARK_H = 120, 32
TIMES = "\N{MULTIPLICATION SIGN}"


# --- formatting -----------------------------------------------------------------------

def mib(value: Any) -> str:
    """A size given in MiB, in the largest unit that keeps it readable."""
    return mib_text(value)


def pct(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "—"
    return f"{value:.0f} %" if value >= 10 or value == 0 else f"{value:.1f} %"


def ago(_: Callable[..., str], when: dt.datetime | float | None, now: float | None = None) -> str:
    """"3 min ago" in the page's language."""
    if when is None:
        return _("time.never")
    ts = when.timestamp() if isinstance(when, dt.datetime) else float(when)
    secs = max(0, int((now if now is not None else time.time()) - ts))
    if secs < 5:
        return _("ago.now")
    if secs < 60:
        return _("ago.s", n=secs)
    if secs < 3600:
        return _("ago.m", n=secs // 60)
    if secs < 86400:
        return _("ago.h", n=secs // 3600)
    return _("ago.d", n=secs // 86400)


def until(_: Callable[..., str], when: dt.datetime | None) -> str:
    """"in 59 min" (or "expired") for a moment still to come."""
    if when is None:
        return "—"
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    secs = int(when.timestamp() - time.time())
    if secs <= 0:
        return _("until.expired")
    if secs < 3600:
        return _("until.m", n=max(1, secs // 60))
    if secs < 86400:
        return _("until.h", n=secs // 3600)
    return _("until.d", n=secs // 86400)


def duration(_: Callable[..., str], seconds: int) -> str:
    if seconds % 86400 == 0:
        return _("dur.d1") if seconds == 86400 else _("dur.d", n=seconds // 86400)
    if seconds % 3600 == 0:
        return _("dur.h1") if seconds == 3600 else _("dur.h", n=seconds // 3600)
    return _("dur.m", n=max(1, seconds // 60))


def gpu_summary(gpus: Sequence[dict[str, Any]]) -> list[str]:
    """["2 \N{MULTIPLICATION SIGN} NVIDIA RTX A5000", ...] in the order the node lists them."""
    counts = collections.Counter(str(g.get("name") or "GPU") for g in gpus)
    return [f"{n} {TIMES} {name}" if n > 1 else name for name, n in counts.items()]


def os_name(facts: dict[str, Any]) -> str:
    os_ = facts.get("os")
    if isinstance(os_, dict):
        pretty = os_.get("pretty_name") or " ".join(str(os_.get(k) or "") for k in ("name", "version")).strip()
        if pretty:
            return str(pretty)
    return "—"


def addresses(facts: dict[str, Any]) -> list[str]:
    out: list[str] = []
    addrs = facts.get("addresses")
    if isinstance(addrs, dict):
        for fam in ("ipv4", "ipv6"):
            out += [str(a) for a in addrs.get(fam) or [] if isinstance(a, str)]
    return out


# --- live metrics ------------------------------------------------------------------------

def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def mem_pct(s: dict[str, Any]) -> float | None:
    used, total = _num(s.get("memory_used_mb")), _num(s.get("memory_total_mb"))
    return 100.0 * used / total if used is not None and total else None


def _gpus_of(s: dict[str, Any]) -> list[dict[str, Any]]:
    gpus = s.get("gpus")
    return [g for g in gpus if isinstance(g, dict)] if isinstance(gpus, list) else []


def gpu_util(s: dict[str, Any]) -> float | None:
    vals = [v for v in (_num(g.get("utilization_pct")) for g in _gpus_of(s)) if v is not None]
    return sum(vals) / len(vals) if vals else None


def gpu_mem_pct(s: dict[str, Any]) -> float | None:
    used = [_num(g.get("memory_used_mb")) for g in _gpus_of(s)]
    total = [_num(g.get("memory_total_mb")) for g in _gpus_of(s)]
    if not used or None in used or None in total or not sum(t or 0 for t in total):
        return None
    return 100.0 * sum(u or 0 for u in used) / sum(t or 0 for t in total)


SERIES: dict[str, Callable[[dict[str, Any]], float | None]] = {
    "cpu": lambda s: _num(s.get("cpu_pct")),
    "mem": mem_pct,
    "gpu": gpu_util,
    "gpumem": gpu_mem_pct,
}


def spark_points(samples: Sequence[dict[str, Any]], series: str, now: float | None = None) -> str:
    """An SVG polyline's points for one series (0-100 %): the samples of the last HISTORY_S
    seconds, spread over the width by time (a node that connected a minute ago fills it too)."""
    fn = SERIES[series]
    now = now if now is not None else time.time()
    start = now - HISTORY_S
    seen: list[tuple[float, float]] = []
    for s in samples:
        t, v = _num(s.get("received_at")), fn(s)
        if t is not None and v is not None and start <= t <= now + 60:
            seen.append((t, max(0.0, min(100.0, v))))
    if len(seen) < 2:
        return ""
    t0, t1 = seen[0][0], seen[-1][0]
    if t1 <= t0:
        return ""
    return " ".join(
        f"{(t - t0) / (t1 - t0) * SPARK_W:.1f},{SPARK_H - 1 - v / 100.0 * (SPARK_H - 2):.1f}" for t, v in seen
    )


def gpu_rows(node: NodeOut, latest: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The node's GPUs (from its facts) with the newest live figures laid over them."""
    live = _gpus_of(latest or {})
    by_uuid = {g["uuid"]: g for g in live if g.get("uuid")}
    by_index = {g.get("index"): g for g in live}
    rows = []
    for g in node.gpus:
        m = by_uuid.get(g.get("uuid")) or by_index.get(g.get("index")) or {}
        row = dict(g)
        for k in ("memory_used_mb", "memory_total_mb", "utilization_pct", "temperature_c"):
            if m.get(k) is not None:
                row[k] = m[k]
        row["live"] = bool(m)
        row["key"] = str(g.get("uuid") or g.get("index"))
        rows.append(row)
    return rows



def idle_text(_: Callable[..., str], state: str, seconds: float | None) -> str:
    """An idle time (see dmd.usecases.gpus.Idle) in the page's language."""
    if state == "busy":
        return _("gpu.idle.busy")
    if state == "idle":
        return _("gpu.idle.for", time=_span(_, seconds or 0))
    if state == "idle_at_least":
        return _("gpu.idle.at_least", time=_span(_, seconds or 0))
    return _("gpu.idle.unknown")


def _span(_: Callable[..., str], secs: float) -> str:
    s = max(0, int(secs))
    if s < 60:
        return _("span.s", n=s)
    if s < 3600:
        return _("span.m", n=s // 60)
    return _("span.h", n=s // 3600)
