"""One WebSocket to dmd and how a link ended: the pieces the session is built from."""

from __future__ import annotations

import asyncio
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
    """One established WebSocket: serialised sends and the request tasks running on it."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse[Any]) -> None:
        self.ws = ws
        self.lock = asyncio.Lock()
        self.tasks: set[asyncio.Task[None]] = set()

    async def send(self, env: protocol.Envelope) -> None:
        text = env.to_json()
        async with self.lock:
            await self.ws.send_str(text)


# --------------------------------------------------------------------------- the link
