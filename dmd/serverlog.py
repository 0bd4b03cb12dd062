"""What aiohttp's HTTP server logs about the connections themselves.

aiohttp answers a request its parser refuses (a NUL in a header, a bad request line, a header
line too long) with a 400 and logs it as an ERROR with the parser's traceback. Anyone can send
such requests, and scanners do, so they would flood dmd's log with tracebacks that say nothing
about dmd: one WARNING line naming the client and what was wrong is logged instead. Every other
error of the server keeps its traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

# The parser's message may quote what the client sent: cut, and ascii() keeps it on one line.
_MAX_DETAIL = 200


class ServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp.web_protocol.RequestHandler's `logger`: it calls exception() on a refused request
    with the client's address as the message's one argument ("... from %s")."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, stack_info: bool = False,
                  stacklevel: int = 1, extra: Mapping[str, object] | None = None, **kwargs: object) -> None:
        if isinstance(exc_info, HttpProcessingError):
            client = args[0] if len(args) == 1 else "an unknown client"
            detail = ascii(exc_info.message[:_MAX_DETAIL]) if exc_info.message else type(exc_info).__name__
            self.warning("malformed HTTP request from %s refused with %s: %s", client, exc_info.code or 400,
                         detail)
            return
        super().exception(msg, *args, exc_info=exc_info, stack_info=stack_info, stacklevel=stacklevel,
                          extra=extra)


def server_options() -> dict[str, Any]:
    """Keyword arguments for the AppRunner (or a test server) that serves dmd."""
    return {"logger": ServerLog(logging.getLogger("aiohttp.server"), {})}
