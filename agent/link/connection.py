"""One WebSocket to dmd and how a link ended: the pieces the session is built from."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from agent import protocol

__all__ = ["CLOSE_NAMES", "Connection", "LinkEnded", "Outcome", "OutcomeKind", "Stopped", "close_name", "describe"]


CLOSE_NAMES = {
    protocol.CLOSE_NORMAL: "normal",
    protocol.CLOSE_GOING_AWAY: "going away",
    1006: "connection lost",
    1011: "server error",
    protocol.CLOSE_AUTH: "credential refused",
    protocol.CLOSE_FORBIDDEN: "forbidden",
    protocol.CLOSE_HEARTBEAT: "heartbeat missed",
    protocol.CLOSE_REPLACED: "replaced by a newer link",
    protocol.CLOSE_DELETED: "node deleted",
    protocol.CLOSE_PROTOCOL: "protocol error",
    protocol.CLOSE_TOO_LARGE: "message too large",
    protocol.CLOSE_SLOW: "agent too slow",
    protocol.CLOSE_RATE_LIMITED: "too many messages",
}



# --------------------------------------------------------------------------- helpers

def describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def close_name(code: int | None) -> str:
    if code is None:
        return "no close code"
    return f"{code} ({CLOSE_NAMES[code]})" if code in CLOSE_NAMES else str(code)


OutcomeKind = Literal["dropped", "auth", "refused", "deleted", "stopped"]


@dataclass(slots=True)
class Outcome:
    """How one connection ended."""

    kind: OutcomeKind
    reason: str
    up_for: float = 0.0  # seconds between welcome and the end (0: never established)


class LinkEnded(Exception):
    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


class Stopped(Exception):
    """stop() was called while waiting."""


class Connection:
    """One established WebSocket: its one writer (envelopes before stream data, see
    :mod:`agent.protocol.streams`), its streams and the request tasks running on it."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse[Any],
                 accept: Callable[[protocol.Stream], Coroutine[Any, Any, None]] | None = None) -> None:
        self.ws = ws
        self.tasks: set[asyncio.Task[None]] = set()
        self.mux = protocol.Mux("agent", ws.send_str, ws.send_bytes, accept=accept)
        self.writer = asyncio.get_running_loop().create_task(self._write(), name="dmc-writer")

    async def _write(self) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
            await self.mux.run_writer()

    async def send(self, env: protocol.Envelope) -> None:
        """Send ahead of any stream data; returns once written (raises ConnectionError if not)."""
        await self.mux.send_control(env.to_json())

    async def close_streams(self, why: str) -> None:
        """The link ended: every stream ends, the stream tasks and the writer stop."""
        self.mux.close_all(protocol.StreamEnd("link_lost", why))
        await self.mux.stop()
        self.writer.cancel()
        await asyncio.gather(self.writer, return_exceptions=True)


# --------------------------------------------------------------------------- the link
