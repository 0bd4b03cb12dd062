"""Calling an agent's typed request handler with a request as it comes off the wire (a dict), and
reading its reply as it goes back (a dict): the same decoding and encoding as the link's dispatch."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from agent import protocol as p
from agent.handlers import HandlerError


async def call(handler: Callable[[Any], Awaitable[Any]], cls: type[p.Request[Any]], data: Any) -> dict[str, Any]:
    """``handler(parse(cls, data))`` as a dict; data that does not decode is the class's HandlerError."""
    try:
        req = p.parse(cls, data)
    except p.DecodeError as e:
        raise HandlerError(cls.INVALID_CODE, f"{cls.TYPE}: {e}") from None
    return p.to_data(await handler(req))
