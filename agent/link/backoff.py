"""When to try again: exponential backoff with jitter, and every timing of the link."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from agent.handlers import DEFAULT_REQUEST_TIMEOUT_S

__all__ = ["Backoff", "LinkTimings"]



class Backoff:
    """Exponential backoff with jitter: ``initial`` doubling up to ``maximum`` seconds,
    each delay spread by ±``jitter`` (a fraction) and never above ``maximum``."""

    def __init__(
        self,
        initial: float = 1.0,
        maximum: float = 60.0,
        *,
        factor: float = 2.0,
        jitter: float = 0.2,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if not 0 < initial <= maximum or factor < 1 or not 0 <= jitter < 1:
            raise ValueError("need 0 < initial <= maximum, factor >= 1 and 0 <= jitter < 1")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self._rng = rng
        self._base = initial

    @property
    def base(self) -> float:
        """The un-jittered delay the next call of :meth:`next` spreads."""
        return self._base

    def _spread(self, base: float) -> float:
        spread = base * (1.0 + self.jitter * (2.0 * self._rng() - 1.0))
        return min(self.maximum, max(0.0, spread))

    def next(self) -> float:
        delay = self._spread(self._base)
        self._base = min(self.maximum, self._base * self.factor)
        return delay

    def longest(self) -> float:
        """A delay at the maximum (jittered), without changing the sequence."""
        return self._spread(self.maximum)

    def reset(self) -> None:
        self._base = self.initial


@dataclass(frozen=True, slots=True)
class LinkTimings:
    """Every timing of the link; tests shrink them."""

    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    backoff_jitter: float = 0.2
    stable_after_s: float = 60.0  # a link up this long resets the backoff
    connect_timeout_s: float = 20.0
    welcome_timeout_s: float = 20.0
    close_timeout_s: float = 5.0
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    facts_interval_s: float = 300.0
    gpu_metrics_interval_s: float = 30.0


