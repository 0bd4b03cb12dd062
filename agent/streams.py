"""The agent's stream handlers: kind -> coroutine, like the request registry (:mod:`agent.handlers`).

dmd opens a stream (``StreamOpen``: a kind, an instance, the kind's parameters); the link's
multiplexer hands it to :meth:`StreamHandlers.run`, which finds the instance's container
(DM's own, by its labels: a stream never reaches a container DM did not make), refuses what
it cannot run with a reason, and calls the kind's handler. The handler accepts the stream
(``stream.accept()``) once it is sure it can serve it — so dmd's ``open`` fails with the
handler's reason instead of opening a stream that ends at once — and returns how it ended.

Public API::

    streams = StreamHandlers(find)                 # find(instance_id) -> ContainerInfo | None
    streams.register("exec", handler)              # async handler(stream, container) -> StreamEnd
    await streams.run(stream)                      # what the link calls for each OPEN
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from agent import protocol as p
from agent.handlers import HandlerError
from agent.protocol.types import ContainerInfo
from agent.runtime.errors import DriverError

__all__ = ["FindContainer", "StreamHandler", "StreamHandlers"]

log = logging.getLogger("agent.streams")

StreamHandler = Callable[[p.Stream, ContainerInfo], Awaitable[p.StreamEnd]]
FindContainer = Callable[[int], Awaitable[ContainerInfo | None]]


class StreamHandlers:
    def __init__(self, find: FindContainer) -> None:
        self._find = find
        self._handlers: dict[str, StreamHandler] = {}
        self.running: set[p.Stream] = set()

    def register(self, kind: str, handler: StreamHandler) -> None:
        if kind not in p.STREAM_KINDS:
            raise ValueError(f"unknown stream kind {kind!r}")
        if kind in self._handlers:
            raise ValueError(f"stream kind {kind!r} is registered twice")
        self._handlers[kind] = handler

    def kinds(self) -> list[str]:
        return sorted(self._handlers)

    async def run(self, stream: p.Stream) -> None:
        """Serve one stream until it ends; it always ends with a StreamEnd the peer sees."""
        self.running.add(stream)
        try:
            end = await self._serve(stream)
        except asyncio.CancelledError:
            await stream.close(p.StreamEnd("link_lost", "the agent is closing the link"))
            raise
        finally:
            self.running.discard(stream)
        await stream.close(end)

    async def _serve(self, stream: p.Stream) -> p.StreamEnd:
        opening = stream.open
        handler = self._handlers.get(opening.kind)
        if handler is None:
            return p.StreamEnd("unsupported", f"this agent does not serve {opening.kind} streams")
        try:
            container = await self._find(opening.instance_id)
        except DriverError as e:
            return p.StreamEnd(e.code, f"the runtime failed: {e}")
        if container is None:
            return p.StreamEnd("not_found", f"instance {opening.instance_id} has no container on this node")
        if container.state != "running":
            return p.StreamEnd("not_running", f"instance {opening.instance_id} is not running")
        try:
            return await handler(stream, container)
        except HandlerError as e:
            return p.StreamEnd(e.code, e.message)
        except DriverError as e:
            return p.StreamEnd(e.code, str(e))
        except p.StreamClosed as e:
            return e.end
        except (ConnectionError, OSError) as e:
            return p.StreamEnd("error", f"{type(e).__name__}: {e}")
        except Exception as e:
            log.exception("%s stream %s for instance %s failed", opening.kind, stream.id, opening.instance_id)
            return p.StreamEnd("error", f"the agent failed: {type(e).__name__}")
