"""Requests from dmd to the agent: a registry of message type -> async handler.

A handler takes the request's ``data`` and returns the reply's ``data``. It reports a
failure dmd should understand by raising :class:`HandlerError` with a short code; any
other exception becomes the code ``internal_error``, a time limit overrun ``timeout``,
and a type nobody registered ``unknown_type``. A handler never brings the link down.

Public API::

    registry = HandlerRegistry()

    @registry.handler("container.start", timeout_s=120)
    async def start(data: dict[str, Any]) -> dict[str, Any]: ...

    reply = await dispatch(registry, envelope)      # an Envelope to send back
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from agent import protocol

__all__ = [
    "DEFAULT_REQUEST_TIMEOUT_S",
    "Handler",
    "HandlerError",
    "HandlerRegistry",
    "dispatch",
]

log = logging.getLogger(__name__)

DEFAULT_REQUEST_TIMEOUT_S = 60.0

# Error codes the agent answers with (besides those handlers raise themselves).
UNKNOWN_TYPE = "unknown_type"
TIMEOUT = "timeout"
INTERNAL_ERROR = "internal_error"
BAD_REQUEST = "bad_request"  # for handlers: the request's data is not what they expect

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class HandlerError(Exception):
    """A structured failure: ``code`` (short, machine-readable) and a message for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class _Entry:
    handler: Handler
    timeout_s: float | None


class HandlerRegistry:
    """Message type -> handler, each with its own time limit (None: the link's default)."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def register(self, type_: str, handler: Handler, *, timeout_s: float | None = None, replace: bool = True) -> None:
        """Add ``handler`` for ``type_``; with ``replace=False`` an existing one is kept."""
        if not isinstance(type_, str) or not 0 < len(type_) <= 64 or type_ == protocol.REPLY:
            raise ValueError(f"not a request type: {type_!r}")
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError("timeout_s must be positive")
        if not replace and type_ in self._entries:
            return
        self._entries[type_] = _Entry(handler, timeout_s)

    def handler(self, type_: str, *, timeout_s: float | None = None) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`register`."""

        def wrap(func: Handler) -> Handler:
            self.register(type_, func, timeout_s=timeout_s)
            return func

        return wrap

    def unregister(self, type_: str) -> None:
        self._entries.pop(type_, None)

    def get(self, type_: str) -> Handler | None:
        entry = self._entries.get(type_)
        return entry.handler if entry else None

    def timeout_for(self, type_: str, default: float) -> float:
        entry = self._entries.get(type_)
        return entry.timeout_s if entry and entry.timeout_s is not None else default

    def types(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, type_: object) -> bool:
        return type_ in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.types())

    def __len__(self) -> int:
        return len(self._entries)


async def dispatch(
    registry: HandlerRegistry,
    request: protocol.Envelope,
    *,
    default_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
) -> protocol.Envelope:
    """Run the handler for ``request`` (which has an id) and build the reply envelope."""
    if request.id is None:
        raise ValueError("only requests (messages with an id) are dispatched")
    handler = registry.get(request.type)
    if handler is None:
        return protocol.reply_error(request.id, UNKNOWN_TYPE, f"this agent does not handle {request.type!r}")
    limit = registry.timeout_for(request.type, default_timeout_s)
    try:
        async with asyncio.timeout(limit):
            result = await handler(request.data)
        if not isinstance(result, dict):
            raise TypeError(f"handler returned {type(result).__name__}, not a dict")
        reply = protocol.reply_ok(request.id, result)
        reply.to_json()  # surface an unserialisable or oversized result here, as an error
        return reply
    except HandlerError as exc:
        return protocol.reply_error(request.id, exc.code, exc.message)
    except TimeoutError:
        log.warning("request %s (%s) ran past its %.1f s limit", request.id, request.type, limit)
        return protocol.reply_error(request.id, TIMEOUT, f"{request.type} did not finish within {limit:g} s")
    except protocol.ProtocolError as exc:
        return protocol.reply_error(request.id, INTERNAL_ERROR, f"reply could not be sent: {exc}")
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a failing handler must never take the link down
        log.exception("request %s (%s) failed", request.id, request.type)
        return protocol.reply_error(request.id, INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
