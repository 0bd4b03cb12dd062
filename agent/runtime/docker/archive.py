"""Files into and out of a container as tar streams: the Engine's archive endpoint
(``PUT``/``GET /containers/{id}/archive?path=``), streamed both ways.

aiodocker's own ``get_archive`` reads the whole answer into memory and ``put_archive`` wants the
whole body, so both go through the driver's streamed transport: a file of any size passes in
chunks and the agent never holds more than one of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from agent.runtime.docker.engine import STREAM_TIMEOUT, Engine, container_ref, engine_errors
from agent.runtime.driver import ARCHIVE_CHUNK, check_archive_path

__all__ = ["ArchiveCalls"]


class ArchiveCalls(Engine):
    """put_archive / get_archive on the Docker Engine."""

    async def put_archive(self, container: str, path: str, chunks: AsyncIterator[bytes]) -> None:
        check_archive_path(path)
        ref = container_ref(container)
        docker = await self._client()
        what = f"copy into {path} of container {container}"
        with engine_errors(what):
            async with self._stream(
                docker,
                f"containers/{ref}/archive",
                "PUT",
                # A directory is never replaced by a file nor the other way round.
                params={"path": path, "noOverwriteDirNonDir": "true"},
                data=chunks,
                headers={"Content-Type": "application/x-tar"},
                chunked=True,
                timeout=STREAM_TIMEOUT,
            ) as response:
                await response.read()

    async def get_archive(self, container: str, path: str) -> AsyncIterator[bytes]:
        check_archive_path(path)
        ref = container_ref(container)
        docker = await self._client()
        with engine_errors(f"copy {path} out of container {container}"):
            async with self._stream(
                docker, f"containers/{ref}/archive", "GET", params={"path": path}, timeout=STREAM_TIMEOUT
            ) as response:
                async for chunk in response.content.iter_chunked(ARCHIVE_CHUNK):
                    yield chunk
