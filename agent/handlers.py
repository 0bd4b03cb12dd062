"""Requests from dmd to the agent: a registry of request type -> async handler.

A handler is registered for a request class of :mod:`agent.protocol.messages`: it gets the
request decoded and checked (data that does not fit is answered with the class's
``INVALID_CODE`` naming the field, and the handler never runs) and returns the class's
``REPLY``. It reports a failure dmd should understand by raising :class:`HandlerError` with a
short code; any other exception becomes the code ``internal_error``, a time limit overrun
``timeout``, and a type nobody registered ``unknown_type``. A handler never brings the link
down. (A handler may also be registered under a bare type name, taking and returning dicts:
for tests and experiments, not for the protocol's own messages.)

Public API::

    registry = HandlerRegistry()

    @registry.handler(p.InstanceInspect)                  # time limit: the class's TIMEOUT_S
    async def inspect(req: p.InstanceInspect) -> p.MaybeContainer: ...

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
UNKNOWN_TYPE = protocol.UNKNOWN_TYPE
TIMEOUT = protocol.TIMEOUT
INTERNAL_ERROR = protocol.INTERNAL_ERROR
BAD_REQUEST = protocol.BAD_REQUEST  # for handlers: the request's data is not what they expect

Handler = Callable[[Any], Awaitable[Any]]
Kind = type[protocol.Request[Any]] | str


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
    request: type[protocol.Request[Any]] | None  # None: a raw handler (dict in, dict out)


class HandlerRegistry:
    """Message type -> handler, each with its own time limit (None: the link's default)."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def register(self, kind: Kind, handler: Handler, *, timeout_s: float | None = None, replace: bool = True) -> None:
        """Add ``handler`` for a request class (or a bare type name); with ``replace=False`` an
        existing one is kept. The time limit is ``timeout_s``, else the class's ``TIMEOUT_S``."""
        request = None if isinstance(kind, str) else kind
        type_ = kind if isinstance(kind, str) else kind.TYPE
        if not isinstance(type_, str) or not 0 < len(type_) <= 64 or type_ == protocol.REPLY:
            raise ValueError(f"not a request type: {type_!r}")
        if timeout_s is None and request is not None:
            timeout_s = request.TIMEOUT_S
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError("timeout_s must be positive")
        if not replace and type_ in self._entries:
            return
        self._entries[type_] = _Entry(handler, timeout_s, request)

    def handler(self, kind: Kind, *, timeout_s: float | None = None) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`register`."""

        def wrap(func: Handler) -> Handler:
            self.register(kind, func, timeout_s=timeout_s)
            return func

        return wrap

    def unregister(self, type_: str) -> None:
        self._entries.pop(type_, None)

    def get(self, type_: str) -> Handler | None:
        entry = self._entries.get(type_)
        return entry.handler if entry else None

    def entry(self, type_: str) -> _Entry | None:
        return self._entries.get(type_)

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
    entry = registry.entry(request.type)
    if entry is None:
        return protocol.reply_error(request.id, UNKNOWN_TYPE, f"this agent does not handle {request.type!r}")
    arg: Any = request.data
    if entry.request is not None:
        try:
            arg = protocol.parse(entry.request, request.data)
        except protocol.DecodeError as exc:
            return protocol.reply_error(request.id, entry.request.INVALID_CODE, f"{request.type}: {exc}")
    limit = registry.timeout_for(request.type, default_timeout_s)
    try:
        async with asyncio.timeout(limit):
            result = await entry.handler(arg)
        if entry.request is not None:
            if not isinstance(result, entry.request.REPLY):
                raise TypeError(f"handler returned {type(result).__name__}, not {entry.request.REPLY.__name__}")
            reply = protocol.reply_envelope(request.id, result)
        else:
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
