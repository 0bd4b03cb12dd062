"""What an established link reports on its own: heartbeats, metrics and changed facts."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from agent import protocol as p
from agent.config import AgentConfig
from agent.link.backoff import LinkTimings
from agent.metrics import MetricsSampler

__all__ = ["FactsProvider", "Reporter", "Send", "stable_facts"]

log = logging.getLogger("agent.link")

FactsProvider = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[p.Envelope], Awaitable[None]]

_VOLATILE_FACTS = frozenset({"memory_available_mb", "disk_free_mb"})
_VOLATILE_GPU = frozenset({"memory_used_mb", "utilization_pct", "temperature_c"})


def stable_facts(facts: dict[str, Any]) -> dict[str, Any]:
    """``facts`` without the figures that change all the time (they travel as metrics)."""
    out = {k: v for k, v in facts.items() if k not in _VOLATILE_FACTS}
    gpus = facts.get("gpus")
    if isinstance(gpus, list):
        out["gpus"] = [
            {k: v for k, v in g.items() if k not in _VOLATILE_GPU} if isinstance(g, dict) else g for g in gpus
        ]
    return out


class Reporter:
    """The node's facts (collected on each connect and every ``facts_interval_s``, sent when they
    change), its metrics (every ``metrics_interval_s``; GPU figures at most every
    ``gpu_metrics_interval_s``) and the heartbeat."""

    def __init__(self, config: Callable[[], AgentConfig], timings: LinkTimings,
                 facts_provider: FactsProvider | None) -> None:
        self._config = config
        self._timings = timings
        self._facts_provider = facts_provider
        self._sampler = MetricsSampler()
        self.last_facts: dict[str, Any] = {}
        self._gpu_sample: list[dict[str, Any]] = []
        self._gpu_sampled_at: float | None = None

    async def collect_facts(self) -> dict[str, Any]:
        if self._facts_provider is not None:
            facts = await self._facts_provider()
        else:
            from agent.docker_info import node_facts

            config = self._config()
            facts = await node_facts(config.docker_host, public_address=config.public_address)
        if not isinstance(facts, dict):
            raise TypeError("the facts provider must return a dict")
        return facts

    async def heartbeats(self, send: Send, interval: float) -> None:
        seq = 0
        while True:
            await asyncio.sleep(interval)
            seq += 1
            await send(p.notice_envelope(p.Heartbeat(seq)))

    async def metrics(self, send: Send) -> None:
        while True:
            sample: dict[str, Any] = {"at": time.time(), **self._sampler.sample(), "gpus": await self._gpu_metrics()}
            await send(p.notice_envelope(p.codec.decode(p.Metrics, sample)))
            await asyncio.sleep(self._config().metrics_interval_s)

    async def _gpu_metrics(self) -> list[dict[str, Any]]:
        """GPU figures, re-read at most every gpu_metrics_interval_s; none without GPUs."""
        if not self.last_facts.get("gpus"):
            return []
        now = time.monotonic()
        if self._gpu_sampled_at is None or now - self._gpu_sampled_at >= self._timings.gpu_metrics_interval_s:
            self._gpu_sampled_at = now
            try:
                self._gpu_sample = await self._sampler.sample_gpus()
            except Exception:  # detection never raises, but stay safe
                log.debug("GPU sampling failed", exc_info=True)
                self._gpu_sample = []
        return self._gpu_sample

    async def facts_changes(self, send: Send) -> None:
        while True:
            await asyncio.sleep(self._timings.facts_interval_s)
            facts = await self.collect_facts()
            if stable_facts(facts) != stable_facts(self.last_facts):
                log.info("host facts changed; sending them to dmd")
                await send(p.message(p.FACTS, facts))  # as collected: dmd checks them as NodeFacts
            self.last_facts = facts
