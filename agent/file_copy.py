"""Files into and out of an instance over a byte stream of kind "copy" (the browser's upload and
download, through dmd): a tar stream both ways, never held whole in memory.

``"in"``: the stream carries a tar that the runtime extracts into the directory ``path``
(:meth:`RuntimeDriver.put_archive`); ``"out"``: the runtime packs ``path`` (a file or a folder)
and the tar goes out on the stream, in chunks as the Engine gives them (flow control: a slow
reader slows the Engine, nothing piles up here).

Public API::

    handler = copy_handler(driver, container_of)    # container_of(instance_id) -> its container
    stream_handlers.register("copy", handler)       # the agent's stream registry (lead's, main)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from agent.protocol.streams import CopyParams, Stream, StreamEnd
from agent.protocol.types import ContainerInfo
from agent.runtime.driver import RuntimeDriver
from agent.runtime.errors import DriverError

__all__ = ["StreamHandler", "copy_handler", "copy_stream"]

StreamHandler = Callable[[Stream], Awaitable[StreamEnd]]
DIRECTIONS = ("in", "out")


async def _incoming(stream: Stream) -> AsyncIterator[bytes]:
    while chunk := await stream.read():
        yield chunk


async def copy_stream(stream: Stream, driver: RuntimeDriver, container: str, params: CopyParams) -> StreamEnd:
    """Run one copy; how it ended (a driver's refusal keeps its code and message)."""
    if params.direction not in DIRECTIONS:
        return StreamEnd("refused", f"a copy goes 'in' or 'out', not {params.direction[:20]!r}")
    try:
        if params.direction == "in":
            await driver.put_archive(container, params.path, _incoming(stream))
        else:
            async for chunk in driver.get_archive(container, params.path):
                await stream.write(chunk)
            await stream.write_eof()
    except DriverError as exc:
        return StreamEnd(exc.code, exc.message)
    return StreamEnd("closed")


def copy_handler(driver: RuntimeDriver, container_of: Callable[[int], Awaitable[ContainerInfo]]) -> StreamHandler:
    """The stream handler of kind "copy" on ``driver``; ``container_of`` finds the instance's
    container (the agent's own lookup: this installation's containers only)."""

    async def handle(stream: Stream) -> StreamEnd:
        params = stream.open.copy
        if params is None:
            return StreamEnd("refused", "a copy stream needs its parameters (direction, path)")
        found = await container_of(stream.open.instance_id)
        return await copy_stream(stream, driver, found.id, params)

    return handle
