"""The Docker driver's plumbing: its aiodocker client, streamed answers, and engine errors as DriverErrors.

Where aiodocker has no call for an Engine endpoint (importing a root file system with
``fromSrc``, streaming logs with their stream ids, the event stream with filters), the request
goes through its ``_query``/``_query_json`` transport, which every aiodocker release has kept.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import aiodocker
import aiohttp
from aiodocker.exceptions import DockerError, DockerStreamError

from agent.runtime.driver import DEFAULT_EXEC_OUTPUT_LIMIT, RuntimeDriver
from agent.runtime.errors import (
    ConflictError,
    DriverError,
    DriverTimeoutError,
    InvalidError,
    NotFoundError,
    RuntimeFailedError,
    UnavailableError,
    error_for,
)
from agent.runtime.image_tar import DEFAULT_EXPANSION, ExpansionLimits
from agent.runtime.locks import KeyedLocks
from agent.runtime.refs import is_container_ref

__all__ = ["DEFAULT_DOCKER_HOST", "STREAM_TIMEOUT", "Engine", "call", "container_ref", "engine_errors",
           "translate_error"]

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_read=None, connect=None, sock_connect=30)


def translate_error(
    exc: BaseException,
    what: str,
    *,
    not_found: str = NotFoundError.CODE,
    stream_code: str = RuntimeFailedError.CODE,
) -> DriverError:
    """A :class:`DriverError` for an aiodocker/aiohttp failure, with the engine's message."""
    if isinstance(exc, DriverError):
        return exc
    if isinstance(exc, DockerStreamError):
        return error_for(stream_code, f"{what}: {exc.message}")
    if isinstance(exc, DockerError):
        message = str(exc.message).strip() or f"HTTP {exc.status}"
        status = exc.status
        if status == 900:
            return UnavailableError(f"{what}: {message}")
        if status == 404:
            return error_for(not_found, f"{what}: {message}")
        if status == 409:
            return ConflictError(f"{what}: {message}")
        if status in (400, 403, 422):
            return InvalidError(f"{what}: {message}")
        if status == 503:
            return UnavailableError(f"{what}: {message}")
        return RuntimeFailedError(f"{what}: {message} (HTTP {status})")
    if isinstance(exc, TimeoutError):
        return DriverTimeoutError(f"{what}: the Docker Engine did not answer in time")
    if isinstance(exc, aiohttp.ClientError | OSError):
        text = str(exc).strip()
        return UnavailableError(f"{what}: cannot talk to the Docker Engine: {type(exc).__name__}: {text}")
    if isinstance(exc, ValueError | KeyError | TypeError):
        return RuntimeFailedError(f"{what}: unexpected answer from the Docker Engine: {type(exc).__name__}: {exc}")
    return RuntimeFailedError(f"{what}: {type(exc).__name__}: {exc}")


@contextlib.contextmanager
def engine_errors(what: str, **kwargs: str) -> Iterator[None]:
    try:
        yield
    except DriverError:
        raise
    except Exception as exc:  # every engine failure becomes a DriverError with its message
        raise translate_error(exc, what, **kwargs) from exc


async def call(docker: aiodocker.Docker, path: str, method: str, **kwargs: Any) -> None:
    """A request whose answer body is read (and so its connection returned to the pool)."""
    async with docker._query(path, method, **kwargs) as response:
        await response.read()


def container_ref(container: str) -> str:
    if not is_container_ref(container):
        raise NotFoundError(f"no such container: {container!r}")
    return container.lstrip("/")


class Engine(RuntimeDriver):
    """What every part of the Docker driver shares: the client, streams, plain calls."""

    def __init__(
        self,
        url: str = DEFAULT_DOCKER_HOST,
        *,
        connect_timeout: float = 10,
        exec_output_limit: int = DEFAULT_EXEC_OUTPUT_LIMIT,
        spool_dir: str | None = None,
        expansion: ExpansionLimits = DEFAULT_EXPANSION,
    ) -> None:
        if url.startswith("ssh://"):
            raise InvalidError("ssh:// Docker hosts are not supported by the agent")
        self.url = url
        self._connect_timeout = connect_timeout
        self._exec_output_limit = exec_output_limit
        self._spool_dir = spool_dir
        self._expansion = expansion  # how far a compressed archive to import may expand
        self._docker: aiodocker.Docker | None = None
        self._closed = False
        self._create_locks = KeyedLocks()
        self._streams: set[aiohttp.ClientResponse] = set()

    async def _client(self) -> aiodocker.Docker:
        if self._closed:
            raise UnavailableError("the Docker driver is closed")
        if self._docker is None:
            timeout = aiohttp.ClientTimeout(
                total=None, connect=self._connect_timeout, sock_connect=self._connect_timeout
            )
            try:
                self._docker = aiodocker.Docker(url=self.url, timeout=timeout)
            except ValueError as exc:
                raise InvalidError(f"cannot use Docker host {self.url!r}: {exc}") from exc
        return self._docker

    @contextlib.asynccontextmanager
    async def _stream(
        self, docker: aiodocker.Docker, path: str, method: str, **kwargs: Any
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A streamed answer; its connection is closed afterwards however far it was read
        (aiodocker's ``_query`` leaves releasing the response to its caller), and when the
        driver is closed (which ends follows and event streams)."""
        async with docker._query(path, method, **kwargs) as response:
            self._streams.add(response)
            try:
                yield response
            finally:
                self._streams.discard(response)
                response.close()

    async def close(self) -> None:
        self._closed = True
        for response in list(self._streams):
            response.close()
        docker, self._docker = self._docker, None
        if docker is not None:
            with contextlib.suppress(Exception):
                await docker.close()

    async def version(self) -> dict[str, Any]:
        docker = await self._client()
        with engine_errors("version"):
            data = await docker._query_json("version")
        return {
            "name": self.name,
            "version": data.get("Version"),
            "api_version": data.get("ApiVersion"),
            "min_api_version": data.get("MinAPIVersion"),
            "os": data.get("Os"),
            "arch": data.get("Arch"),
            "kernel_version": data.get("KernelVersion"),
        }


    async def _inspect_raw(self, container: str) -> dict[str, Any] | None:
        if not is_container_ref(container):
            return None
        docker = await self._client()
        try:
            with engine_errors(f"inspect container {container}"):
                data = await docker._query_json(f"containers/{container.lstrip('/')}/json")
        except NotFoundError:
            return None
        return data if isinstance(data, dict) else None

    async def _post(self, path: str, what: str, params: Mapping[str, Any] | None = None) -> None:
        docker = await self._client()
        with engine_errors(what):
            await call(docker, path, "POST", params=dict(params or {}), timeout=STREAM_TIMEOUT)

