"""What one agent link may send: a size per message type and a rate (issue 10, hole 10).

Agents run on machines users bring, so what they send is untrusted input like any request.
Every message of an established link is decoded against its type (dmd.agents.dispatch) and,
before that, held to the limits here; a link that breaks one is closed with a code (and only
that link: other nodes carry on). What dmd keeps of a node (its recent metrics) is then bounded
by these sizes times the number of samples kept.

* size: metrics 16 KiB, facts 256 KiB, heartbeats 4 KiB, events 64 KiB, replies the
  protocol's limit (a list of every image or container), anything else 64 KiB
  (CLOSE_TOO_LARGE);
* rate: token buckets per link, for metrics, facts, events and all notices together
  (CLOSE_RATE_LIMITED). An agent sends metrics every 10 s and facts when they change; pull
  progress comes as events, several a second. Replies are not counted: they answer dmd's own
  requests (as many as dmd asked), and one that answers nothing is dropped.
* metrics are checked beyond their types: finite numbers, a bounded GPU list (CLOSE_PROTOCOL).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent import protocol as p

KIB = 1024
MAX_BYTES: dict[str, int] = {
    p.Metrics.TYPE: 16 * KIB,
    p.NodeFacts.TYPE: 256 * KIB,
    p.Heartbeat.TYPE: 4 * KIB,
    p.Event.TYPE: 64 * KIB,
    p.REPLY: p.MAX_MESSAGE_BYTES,
}
DEFAULT_MAX_BYTES = 64 * KIB
MAX_METRIC_GPUS = 64
ALL = "*"


@dataclass(frozen=True, slots=True)
class Rate:
    burst: float  # messages at once
    per_s: float  # refilled per second


RATES: dict[str, Rate] = {
    p.Metrics.TYPE: Rate(burst=10, per_s=1.0),
    p.NodeFacts.TYPE: Rate(burst=10, per_s=0.5),
    p.Event.TYPE: Rate(burst=1000, per_s=200.0),
    ALL: Rate(burst=2000, per_s=500.0),
}


class Bucket:
    def __init__(self, rate: Rate, now: float) -> None:
        self.rate = rate
        self.tokens = rate.burst
        self.at = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.rate.burst, self.tokens + (now - self.at) * self.rate.per_s)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def size_of(text: str) -> int:
    """A frame's size in bytes (without encoding it when it is ASCII, as agents' JSON is)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


class LinkLimits:
    """The limits of one link; `check` raises ProtocolError with the close code to use."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, rates: dict[str, Rate] | None = None) -> None:
        self.clock = clock
        now = clock()
        self.buckets = {kind: Bucket(rate, now) for kind, rate in (rates or RATES).items()}

    def check(self, env: p.Envelope, size: int) -> None:
        limit = MAX_BYTES.get(env.type, DEFAULT_MAX_BYTES)
        if size > limit:
            raise p.ProtocolError(f"{env.type} message of {size} bytes exceeds its limit of {limit}",
                                  p.CLOSE_TOO_LARGE)
        if env.type == p.REPLY:
            return
        now = self.clock()
        for kind in (env.type, ALL):
            bucket = self.buckets.get(kind)
            if bucket is not None and not bucket.take(now):
                what = "notices" if kind == ALL else f"{kind} messages"
                raise p.ProtocolError(f"too many {what} (at most {bucket.rate.per_s:g} a second, "
                                      f"{bucket.rate.burst:g} at once)", p.CLOSE_RATE_LIMITED)


def check_metrics(msg: p.Metrics) -> None:
    """What the types do not say: numbers are finite and the GPU list is bounded."""
    if len(msg.gpus) > MAX_METRIC_GPUS:
        raise p.ProtocolError(f"metrics: {len(msg.gpus)} GPUs (at most {MAX_METRIC_GPUS})")
    values: list[float | None] = [msg.at, msg.cpu_pct, msg.load_1, msg.load_5, msg.load_15]
    for gpu in msg.gpus:
        values += [gpu.utilization_pct, gpu.temperature_c]
    for v in values:
        if isinstance(v, float) and not math.isfinite(v):
            raise p.ProtocolError("metrics: numbers must be finite")
