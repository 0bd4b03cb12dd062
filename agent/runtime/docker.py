"""The Docker driver: the Engine API through aiodocker (never the docker CLI, never a shell).

Public API::

    async with DockerDriver("unix:///var/run/docker.sock") as driver:
        info = await driver.create(spec)

Where aiodocker has no call for an Engine endpoint (importing a root file system with
``fromSrc``, streaming logs with their stream ids, the event stream with filters), the request
goes through its ``_query``/``_query_json`` transport, which every aiodocker release has kept.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import math
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

import aiodocker
import aiohttp
from aiodocker.exceptions import DockerError, DockerStreamError

from agent.runtime.base import (
    CONTAINER_STATES,
    DEFAULT_EXEC_OUTPUT_LIMIT,
    LABEL_INSTANCE,
    LABEL_MANAGED,
    LABEL_NODE,
    MANAGED_ACTIONS,
    ConflictError,
    ContainerInfo,
    ContainerSpec,
    ContainerState,
    DriverError,
    DriverTimeoutError,
    EventAction,
    ExecResult,
    ImageInfo,
    ImageNotFoundError,
    ImageSource,
    InvalidError,
    KeyedLocks,
    NotFoundError,
    ProgressCallback,
    PullFailedError,
    RuntimeDriver,
    RuntimeEvent,
    RuntimeFailedError,
    UnavailableError,
    call_progress,
    check_image_ref,
    check_repository,
    container_labels,
    error_for,
    identity_labels,
    is_container_ref,
    normalize_image_ref,
    parse_time,
    pick_instance_container,
    prepare_image_tar,
)
from agent.runtime.payload import container_create_payload

__all__ = ["DEFAULT_DOCKER_HOST", "DockerDriver", "translate_error"]

log = logging.getLogger(__name__)

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
_STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_read=None, connect=None, sock_connect=30)
_LIST_CONCURRENCY = 8
_EXPORT_CHUNK = 256 * 1024
# DM's labels are blanked (not removable: Docker merges a container's labels into a commit).
_BLANK_DM_LABELS = {LABEL_MANAGED: "", LABEL_INSTANCE: "", LABEL_NODE: ""}


# --------------------------------------------------------------------------- errors


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
def _errors(what: str, **kwargs: str) -> Iterator[None]:
    try:
        yield
    except DriverError:
        raise
    except Exception as exc:  # every engine failure becomes a DriverError with its message
        raise translate_error(exc, what, **kwargs) from exc


async def _call(docker: aiodocker.Docker, path: str, method: str, **kwargs: Any) -> None:
    """A request whose answer body is read (and so its connection returned to the pool)."""
    async with docker._query(path, method, **kwargs) as response:
        await response.read()


# --------------------------------------------------------------------------- conversions


def _container_info(data: Mapping[str, Any]) -> ContainerInfo:
    state = data.get("State") or {}
    config = data.get("Config") or {}
    host = data.get("HostConfig") or {}
    status_raw = state.get("Status")
    status: ContainerState = status_raw if status_raw in CONTAINER_STATES else "dead"
    labels, managed, instance_id, node_id = container_labels(config.get("Labels"))
    exit_code = state.get("ExitCode") if status in ("exited", "dead") else None
    nano = host.get("NanoCpus") or 0
    memory = host.get("Memory") or 0
    return ContainerInfo(
        id=str(data.get("Id", "")),
        name=str(data.get("Name", "")).lstrip("/"),
        image=str(config.get("Image") or data.get("Image") or ""),
        state=status,
        instance_id=instance_id,
        node_id=node_id,
        managed=managed,
        exit_code=int(exit_code) if isinstance(exit_code, int) else None,
        error=(state.get("Error") or None),
        oom_killed=bool(state.get("OOMKilled")),
        created_at=parse_time(data.get("Created")),
        started_at=parse_time(state.get("StartedAt")),
        finished_at=parse_time(state.get("FinishedAt")),
        labels=labels,
        ip_address=_ip_address(data.get("NetworkSettings") or {}),
        image_id=data.get("Image") or None,
        cpus=nano / 1e9 if nano else None,
        memory_mb=memory // (1024 * 1024) if memory else None,
    )


def _ip_address(network: Mapping[str, Any]) -> str | None:
    address = network.get("IPAddress")
    if address:
        return str(address)
    for net in (network.get("Networks") or {}).values():
        if isinstance(net, Mapping) and net.get("IPAddress"):
            return str(net["IPAddress"])
    return None


def _image_info(data: Mapping[str, Any]) -> ImageInfo:
    config = data.get("Config") or {}
    labels = config.get("Labels") if "Config" in data else data.get("Labels")
    return ImageInfo(
        id=str(data.get("Id", "")),
        repo_tags=[t for t in (data.get("RepoTags") or []) if t and t != "<none>:<none>"],
        size=int(data.get("Size") or 0),
        created=parse_time(data.get("Created")),
        labels=dict(labels or {}),
    )


def _event(data: Mapping[str, Any]) -> RuntimeEvent | None:
    if data.get("Type") != "container":
        return None
    action = str(data.get("Action") or data.get("status") or "")
    if action not in MANAGED_ACTIONS:
        return None
    actor = data.get("Actor") or {}
    attributes = actor.get("Attributes") or {}
    _, managed, instance_id, node_id = container_labels(attributes)
    if not managed:
        return None
    exit_code: int | None = None
    if "exitCode" in attributes:
        with contextlib.suppress(TypeError, ValueError):
            exit_code = int(attributes["exitCode"])
    nanos = data.get("timeNano")
    when = parse_time(nanos / 1e9 if isinstance(nanos, int) else data.get("time"))
    event_action: EventAction = action  # type: ignore[assignment]  # checked against MANAGED_ACTIONS
    return RuntimeEvent(
        action=event_action,
        container_id=str(actor.get("ID") or data.get("id") or ""),
        name=attributes.get("name"),
        instance_id=instance_id,
        node_id=node_id,
        exit_code=exit_code,
        time=when,
    )


def _lines(buffer: bytearray, *, final: bool = False) -> Iterator[str]:
    while True:
        end = buffer.find(b"\n")
        if end < 0:
            break
        line = bytes(buffer[:end])
        del buffer[: end + 1]
        yield line.rstrip(b"\r").decode("utf-8", "replace")
    if final and buffer:
        line = bytes(buffer)
        buffer.clear()
        yield line.rstrip(b"\r").decode("utf-8", "replace")


def _container_ref(container: str) -> str:
    if not is_container_ref(container):
        raise NotFoundError(f"no such container: {container!r}")
    return container.lstrip("/")


# --------------------------------------------------------------------------- the driver


class DockerDriver(RuntimeDriver):
    """:class:`RuntimeDriver` on a Docker Engine (or a Docker-compatible API such as Podman's)."""

    name = "docker"

    def __init__(
        self,
        url: str = DEFAULT_DOCKER_HOST,
        *,
        connect_timeout: float = 10,
        exec_output_limit: int = DEFAULT_EXEC_OUTPUT_LIMIT,
        spool_dir: str | None = None,
    ) -> None:
        if url.startswith("ssh://"):
            raise InvalidError("ssh:// Docker hosts are not supported by the agent")
        self.url = url
        self._connect_timeout = connect_timeout
        self._exec_output_limit = exec_output_limit
        self._spool_dir = spool_dir
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
        with _errors("version"):
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

    # -- containers

    async def create(self, spec: ContainerSpec) -> ContainerInfo:
        payload = container_create_payload(spec)  # validates the spec
        async with self._create_locks.hold(spec.instance_id):
            existing = await self.find_instance(spec.instance_id, labels=identity_labels(spec))
            if existing is not None:
                log.info("instance %s already has container %s; not creating another", spec.instance_id, existing.id)
                return existing
            docker = await self._client()
            what = f"create container {spec.name}"
            try:
                with _errors(what):
                    data = await docker._query_json(
                        "containers/create", "POST", params={"name": spec.name}, data=payload
                    )
            except NotFoundError as exc:
                if "image" in exc.message.lower():
                    raise ImageNotFoundError(exc.message) from None
                raise
            except ConflictError:
                # The name is taken: by this instance's container (created meanwhile by someone
                # else on this engine), or by another container, which is a real conflict.
                existing = await self.find_instance(spec.instance_id, labels=identity_labels(spec))
                if existing is not None:
                    return existing
                raise
            container_id = data.get("Id") if isinstance(data, dict) else None
            if not container_id:
                raise RuntimeFailedError(f"{what}: the Docker Engine did not say which container it made: {data!r}")
            info = await self.inspect(str(container_id))
            if info is None:
                raise NotFoundError(f"{what}: the container vanished right after it was created")
            return info

    async def find_instance(self, instance_id: int, *, labels: Mapping[str, str] | None = None) -> ContainerInfo | None:
        filters = {"label": [f"{LABEL_MANAGED}=1", f"{LABEL_INSTANCE}={int(instance_id)}",
                             *(f"{k}={v}" for k, v in (labels or {}).items())]}
        found = await self._list(all_=True, filters=filters)
        if len(found) > 1:
            log.warning("instance %s has %d containers: %s", instance_id, len(found), [c.id[:12] for c in found])
        return pick_instance_container(found)

    async def _inspect_raw(self, container: str) -> dict[str, Any] | None:
        if not is_container_ref(container):
            return None
        docker = await self._client()
        try:
            with _errors(f"inspect container {container}"):
                data = await docker._query_json(f"containers/{container.lstrip('/')}/json")
        except NotFoundError:
            return None
        return data if isinstance(data, dict) else None

    async def inspect(self, container: str) -> ContainerInfo | None:
        data = await self._inspect_raw(container)
        return _container_info(data) if data is not None else None

    async def _post(self, path: str, what: str, params: Mapping[str, Any] | None = None) -> None:
        docker = await self._client()
        with _errors(what):
            await _call(docker, path, "POST", params=dict(params or {}), timeout=_STREAM_TIMEOUT)

    async def start(self, container: str) -> None:
        ref = _container_ref(container)
        await self._post(f"containers/{ref}/start", f"start container {container}")

    async def stop(self, container: str, timeout: float = 10) -> None:
        ref = _container_ref(container)
        await self._post(f"containers/{ref}/stop", f"stop container {container}", {"t": max(0, math.ceil(timeout))})

    async def restart(self, container: str, timeout: float = 10) -> None:
        ref = _container_ref(container)
        await self._post(
            f"containers/{ref}/restart", f"restart container {container}", {"t": max(0, math.ceil(timeout))}
        )

    async def remove(self, container: str, *, force: bool = False) -> None:
        if not is_container_ref(container):
            return
        docker = await self._client()
        what = f"remove container {container}"
        try:
            with _errors(what):
                # v=1: the container's anonymous volumes go with it.
                params = {"force": bool(force), "v": True}
                await _call(docker, f"containers/{container.lstrip('/')}", "DELETE", params=params)
        except NotFoundError:
            return
        except ConflictError as exc:
            if "already in progress" in exc.message:
                return
            raise

    async def _list(self, *, all_: bool, filters: Mapping[str, Any] | None = None) -> builtins.list[ContainerInfo]:
        docker = await self._client()
        params: dict[str, Any] = {"all": bool(all_)}
        if filters:
            params["filters"] = json.dumps(filters)
        with _errors("list containers"):
            rows = await docker._query_json("containers/json", params=params)
        gate = asyncio.Semaphore(_LIST_CONCURRENCY)

        async def one(container_id: str) -> ContainerInfo | None:
            async with gate:
                return await self.inspect(container_id)  # None: removed meanwhile

        ids = [str(row["Id"]) for row in rows if isinstance(row, dict) and row.get("Id")]
        infos = await asyncio.gather(*(one(container_id) for container_id in ids))
        return [info for info in infos if info is not None]

    async def list(self, *, all: bool = True, managed_only: bool = False) -> builtins.list[ContainerInfo]:
        filters = {"label": [f"{LABEL_MANAGED}=1"]} if managed_only else None
        return await self._list(all_=all, filters=filters)

    async def logs(
        self,
        container: str,
        *,
        tail: int | None = None,
        follow: bool = False,
        timestamps: bool = False,
    ) -> AsyncIterator[str]:
        data = await self._inspect_raw(container)
        if data is None:
            raise NotFoundError(f"no such container: {container}")
        tty = bool((data.get("Config") or {}).get("Tty"))
        docker = await self._client()
        params: dict[str, Any] = {
            "stdout": True,
            "stderr": True,
            "follow": bool(follow),
            "timestamps": bool(timestamps),
            "tail": "all" if tail is None else str(max(0, int(tail))),
        }
        try:
            async for line in self._log_lines(docker, data, params, tty):
                yield line
        except DriverError:
            if self._closed:
                return  # the driver was closed under a follow
            raise

    async def _log_lines(
        self, docker: aiodocker.Docker, data: Mapping[str, Any], params: dict[str, Any], tty: bool
    ) -> AsyncIterator[str]:
        with _errors(f"logs of container {data.get('Name', data['Id'])}"):
            async with self._stream(
                docker, f"containers/{data['Id']}/logs", "GET", params=params, timeout=_STREAM_TIMEOUT
            ) as response:
                content = response.content
                if tty:
                    buffer = bytearray()
                    async for chunk in content.iter_any():
                        buffer += chunk
                        for line in _lines(buffer):
                            yield line
                    for line in _lines(buffer, final=True):
                        yield line
                    return
                buffers = {1: bytearray(), 2: bytearray()}
                while True:
                    try:
                        header = await content.readexactly(8)
                        size = int.from_bytes(header[4:8], "big")
                        frame = await content.readexactly(size) if size else b""
                    except (asyncio.IncompleteReadError, aiohttp.ClientPayloadError):
                        break
                    buffer = buffers[2 if header[0] == 2 else 1]
                    buffer += frame
                    for line in _lines(buffer):
                        yield line
                for buffer in buffers.values():
                    for line in _lines(buffer, final=True):
                        yield line

    async def exec(
        self,
        container: str,
        cmd: Sequence[str],
        *,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
        timeout: float = 60,
    ) -> ExecResult:
        ref = _container_ref(container)
        argv = [str(a) for a in cmd]
        if not argv:
            raise InvalidError("exec needs a command")
        docker = await self._client()
        what = f"exec in container {container}"
        limit = self._exec_output_limit
        try:
            async with asyncio.timeout(timeout):
                with _errors(what):
                    execution = await docker.containers.container(ref).exec(
                        argv,
                        stdout=True,
                        stderr=True,
                        stdin=stdin is not None,
                        tty=False,
                        user=user or "",
                        environment=dict(env) if env else None,
                    )
                    out = bytearray()
                    err = bytearray()
                    truncated = False
                    async with execution.start(detach=False) as stream:
                        feeder = asyncio.create_task(self._feed_stdin(stream, stdin)) if stdin is not None else None
                        try:
                            while (message := await stream.read_out()) is not None:
                                target = err if message.stream == 2 else out
                                room = limit - len(target)
                                if len(message.data) > room:
                                    truncated = True
                                target += message.data[: max(room, 0)]
                        finally:
                            if feeder is not None:
                                if not feeder.done():
                                    feeder.cancel()
                                with contextlib.suppress(asyncio.CancelledError, Exception):
                                    await feeder
                    exit_code = await self._exec_exit_code(execution)
        except TimeoutError:
            raise DriverTimeoutError(
                f"{what}: {argv[0]} did not finish within {timeout:g} s (it may still run in the container)"
            ) from None
        return ExecResult(exit_code=exit_code, stdout=bytes(out), stderr=bytes(err), truncated=truncated)

    @staticmethod
    async def _feed_stdin(stream: Any, data: bytes) -> None:
        if data:
            await stream.write_in(data)
        # Half-close: the process sees the end of its input while its output is still read.
        # aiodocker's Stream has no call for it, so its response's transport is used.
        response = getattr(stream, "_resp", None)
        connection = getattr(response, "connection", None)
        transport = getattr(connection, "transport", None)
        if transport is not None and transport.can_write_eof():
            transport.write_eof()

    @staticmethod
    async def _exec_exit_code(execution: Any) -> int:
        for _ in range(100):  # the exec may be reported running for a moment after its output ends
            info = await execution.inspect()
            if not info.get("Running") and info.get("ExitCode") is not None:
                return int(info["ExitCode"])
            await asyncio.sleep(0.02)
        raise RuntimeFailedError("the Docker Engine did not report the exec's exit code")

    async def events(self, *, since: float | None = None) -> AsyncIterator[RuntimeEvent]:
        docker = await self._client()
        filters = {"type": ["container"], "label": [f"{LABEL_MANAGED}=1"], "event": list(MANAGED_ACTIONS)}
        params: dict[str, Any] = {"filters": json.dumps(filters)}
        if since is not None:
            params["since"] = f"{since:.9f}"
        try:
            with _errors("container events"):
                async with self._stream(docker, "events", "GET", params=params, timeout=_STREAM_TIMEOUT) as response:
                    while True:
                        line = await response.content.readline()
                        if not line:
                            break
                        line = line.strip()
                        if not line:
                            continue
                        try:
                            data = json.loads(line)
                        except ValueError:
                            log.warning("unreadable Docker event: %r", line[:200])
                            continue
                        event = _event(data) if isinstance(data, dict) else None
                        if event is not None:
                            yield event
        except DriverError:
            if self._closed:
                return  # the driver was closed under the stream: the end, not a failure
            raise
        if self._closed:
            return
        raise UnavailableError("the Docker Engine's event stream ended")

    # -- images

    async def list_images(self) -> builtins.list[ImageInfo]:
        docker = await self._client()
        with _errors("list images"):
            rows = await docker._query_json("images/json")
        return [_image_info(row) for row in rows if isinstance(row, dict)]

    async def inspect_image(self, ref: str) -> ImageInfo | None:
        check_image_ref(ref)
        docker = await self._client()
        try:
            with _errors(f"inspect image {ref}", not_found=ImageNotFoundError.CODE):
                data = await docker._query_json(f"images/{ref}/json")
        except ImageNotFoundError:
            return None
        return _image_info(data)

    async def _image_or_fail(self, ref: str, what: str) -> ImageInfo:
        info = await self.inspect_image(ref)
        if info is None:
            raise ImageNotFoundError(f"{what}: image {ref} is not there afterwards")
        return info

    async def pull(
        self,
        ref: str,
        *,
        auth: Mapping[str, str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> ImageInfo:
        check_image_ref(ref)
        what = f"pull {ref}"
        if auth and "/" not in ref:
            raise InvalidError(f"{what}: credentials need a reference that names its registry (host/name:tag)")
        docker = await self._client()
        try:
            with _errors(what, not_found=PullFailedError.CODE, stream_code=PullFailedError.CODE):
                stream = docker.images.pull(ref, auth=dict(auth) if auth else None, stream=True, timeout=None)
                async for message in stream:
                    if isinstance(message, dict):
                        await call_progress(progress, message)
        except RuntimeFailedError as exc:
            raise PullFailedError(exc.message) from None
        return await self._image_or_fail(normalize_image_ref(ref), what)

    async def import_image(
        self,
        source: ImageSource,
        *,
        repository: str | None = None,
        tag: str = "latest",
        changes: Sequence[str] | None = None,
    ) -> ImageInfo:
        if repository is not None:
            check_repository(repository, tag)
        prepared = await prepare_image_tar(source, spool_dir=self._spool_dir)
        docker = await self._client()
        headers = {"Content-Type": "application/x-tar"}
        try:
            if prepared.kind == "rootfs":
                params: dict[str, Any] = {"fromSrc": "-"}
                if repository is not None:
                    params.update(repo=repository, tag=tag)
                if changes:
                    params["changes"] = "\n".join(changes)
                what = "import root file system"
                with _errors(what, stream_code=InvalidError.CODE):
                    async with self._stream(
                        docker,
                        "images/create",
                        "POST",
                        params=params,
                        data=prepared.chunks(),
                        headers=headers,
                        chunked=True,
                        timeout=_STREAM_TIMEOUT,
                    ) as response:
                        messages = await self._read_json_stream(response, what)
                image_id = next(
                    (m["status"] for m in reversed(messages) if str(m.get("status", "")).startswith("sha256:")), None
                )
                if image_id is None:
                    raise RuntimeFailedError(f"{what}: the Docker Engine did not say which image it made")
                return await self._image_or_fail(f"{repository}:{tag}" if repository else image_id, what)
            what = "load image archive"
            with _errors(what, stream_code=InvalidError.CODE):
                async with self._stream(
                    docker,
                    "images/load",
                    "POST",
                    params={"quiet": True},
                    data=prepared.chunks(),
                    headers=headers,
                    chunked=True,
                    timeout=_STREAM_TIMEOUT,
                ) as response:
                    messages = await self._read_json_stream(response, what)
        except RuntimeFailedError as exc:
            # A 500 while reading an archive is the archive's fault far more often than the engine's.
            raise InvalidError(exc.message) from None
        finally:
            await prepared.aclose()
        loaded: builtins.list[str] = []
        for message in messages:
            text = str(message.get("stream", "")).strip()
            for prefix in ("Loaded image: ", "Loaded image ID: "):
                if text.startswith(prefix):
                    loaded.append(text[len(prefix) :].strip())
        if not loaded:
            raise InvalidError(f"{what}: the archive held no image")
        if len(loaded) > 1 and repository is not None:
            log.warning("the image archive held %d images; tagging the first as %s:%s", len(loaded), repository, tag)
        if repository is None:
            return await self._image_or_fail(loaded[0], what)
        with _errors(f"tag {loaded[0]} as {repository}:{tag}", not_found=ImageNotFoundError.CODE):
            await _call(docker, f"images/{loaded[0]}/tag", "POST", params={"repo": repository, "tag": tag})
        return await self._image_or_fail(f"{repository}:{tag}", what)

    @staticmethod
    async def _read_json_stream(response: aiohttp.ClientResponse, what: str) -> builtins.list[dict[str, Any]]:
        messages: builtins.list[dict[str, Any]] = []
        while line := await response.content.readline():
            line = line.strip()
            if not line:
                continue
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if not isinstance(data, dict):
                continue
            if data.get("error") or data.get("errorDetail"):
                detail = data.get("errorDetail") or {}
                message = (detail.get("message") if isinstance(detail, dict) else None) or data.get("error")
                raise InvalidError(f"{what}: {message}")
            messages.append(data)
        return messages

    async def export_image(self, ref: str) -> AsyncIterator[bytes]:
        check_image_ref(ref)
        if await self.inspect_image(ref) is None:
            raise ImageNotFoundError(f"no such image: {ref}")
        docker = await self._client()
        with _errors(f"export image {ref}", not_found=ImageNotFoundError.CODE):
            async with self._stream(docker, f"images/{ref}/get", "GET", timeout=_STREAM_TIMEOUT) as response:
                async for chunk in response.content.iter_chunked(_EXPORT_CHUNK):
                    yield chunk

    async def remove_image(self, ref: str, *, force: bool = False) -> None:
        check_image_ref(ref)
        docker = await self._client()
        try:
            with _errors(f"remove image {ref}", not_found=ImageNotFoundError.CODE):
                await _call(docker, f"images/{ref}", "DELETE", params={"force": bool(force)})
        except ImageNotFoundError:
            return

    async def commit(
        self,
        container: str,
        *,
        repository: str,
        tag: str = "latest",
        message: str | None = None,
    ) -> ImageInfo:
        ref = _container_ref(container)
        check_repository(repository, tag)
        docker = await self._client()
        params: dict[str, Any] = {"container": ref, "repo": repository, "tag": tag, "pause": True}
        if message:
            params["comment"] = message
        what = f"commit container {container}"
        with _errors(what):
            data = await docker._query_json(
                "commit", "POST", params=params, data={"Labels": _BLANK_DM_LABELS}, timeout=_STREAM_TIMEOUT
            )
        image_id = data.get("Id") if isinstance(data, dict) else None
        return await self._image_or_fail(str(image_id) if image_id else f"{repository}:{tag}", what)
