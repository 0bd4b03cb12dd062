"""Files into and out of an instance over a byte stream of kind "copy" (the browser's upload and
download, through dmd): a tar stream both ways, never held whole in memory.

``"in"``: the stream carries a tar that the runtime extracts into the directory ``path``
(:meth:`RuntimeDriver.put_archive`); ``"out"``: the runtime packs ``path`` (a file or a folder)
and the tar goes out on the stream, in chunks as the Engine gives them (flow control: a slow
reader slows the Engine, nothing piles up here). An "out" stream is accepted only once the
first chunk is there, so a path that does not exist is a refusal dmd can answer with a 404.

Public API::

    streams.register("copy", copy_handler(driver))   # agent.streams.StreamHandlers (make_link)
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from agent import protocol as p
from agent.protocol.types import ContainerInfo
from agent.runtime.driver import RuntimeDriver, check_archive_path
from agent.runtime.errors import DriverError
from agent.streams import StreamHandler

__all__ = ["copy_handler", "copy_stream"]

DIRECTIONS = ("in", "out")


async def _incoming(stream: p.Stream) -> AsyncIterator[bytes]:
    while chunk := await stream.read():
        yield chunk


async def copy_stream(stream: p.Stream, driver: RuntimeDriver, container: str) -> p.StreamEnd:
    """Serve one copy stream; how it ended (a driver's refusal keeps its code and message)."""
    params = stream.open.copy
    if params is None:
        return p.StreamEnd("refused", "a copy stream needs its parameters (direction, path)")
    if params.direction not in DIRECTIONS:
        return p.StreamEnd("refused", f"a copy goes 'in' or 'out', not {str(params.direction)[:20]!r}")
    try:
        check_archive_path(params.path)
        if params.direction == "in":
            stream.accept()
            await driver.put_archive(container, params.path, _incoming(stream))
            return p.StreamEnd("closed")
        chunks = driver.get_archive(container, params.path)
        try:
            first = await anext(chunks, b"")  # the path exists (else not_found, before accepting)
            stream.accept()
            if first:
                await stream.write(first)
            async for chunk in chunks:
                await stream.write(chunk)
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
        await stream.write_eof()
    except DriverError as exc:
        return p.StreamEnd(exc.code, exc.message)
    return p.StreamEnd("closed")


def copy_handler(driver: RuntimeDriver) -> StreamHandler:
    """The stream handler of kind "copy" on ``driver`` (the registry found the container: DM's
    own, running)."""

    async def handle(stream: p.Stream, container: ContainerInfo) -> p.StreamEnd:
        return await copy_stream(stream, driver, container.id)

    return handle
