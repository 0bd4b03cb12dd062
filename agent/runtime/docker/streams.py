"""What comes out of the Docker driver's containers: log lines, exec output, lifecycle events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import aiodocker
import aiohttp

from agent.protocol.types import LABEL_MANAGED
from agent.runtime.docker.convert import engine_event, lines
from agent.runtime.docker.engine import STREAM_TIMEOUT, Engine, container_ref, engine_errors
from agent.runtime.docker.interactive import start_exec
from agent.runtime.driver import MANAGED_ACTIONS, ExecResult, ExecSession, RuntimeEvent, check_terminal_size
from agent.runtime.errors import (
    ConflictError,
    DriverError,
    DriverTimeoutError,
    InvalidError,
    NotFoundError,
    RuntimeFailedError,
    UnavailableError,
)

__all__ = ["StreamCalls"]

log = logging.getLogger("agent.runtime.docker")


class StreamCalls(Engine):
    """Logs, exec and the event stream."""

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
        with engine_errors(f"logs of container {data.get('Name', data['Id'])}"):
            async with self._stream(
                docker, f"containers/{data['Id']}/logs", "GET", params=params, timeout=STREAM_TIMEOUT
            ) as response:
                content = response.content
                if tty:
                    buffer = bytearray()
                    async for chunk in content.iter_any():
                        buffer += chunk
                        for line in lines(buffer):
                            yield line
                    for line in lines(buffer, final=True):
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
                    for line in lines(buffer):
                        yield line
                for buffer in buffers.values():
                    for line in lines(buffer, final=True):
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
        ref = container_ref(container)
        argv = [str(a) for a in cmd]
        if not argv:
            raise InvalidError("exec needs a command")
        docker = await self._client()
        what = f"exec in container {container}"
        limit = self._exec_output_limit
        try:
            async with asyncio.timeout(timeout):
                with engine_errors(what):
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

    async def exec_interactive(
        self,
        container: str,
        cmd: Sequence[str],
        *,
        tty: bool,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        cols: int = 80,
        rows: int = 24,
    ) -> ExecSession:
        ref = container_ref(container)
        argv = [str(a) for a in cmd]
        if not argv:
            raise InvalidError("exec needs a command")
        check_terminal_size(cols, rows)
        what = f"interactive exec in container {container}"
        data = await self._inspect_raw(ref)
        if data is None:
            raise NotFoundError(f"{what}: no such container")
        if not (data.get("State") or {}).get("Running"):
            raise ConflictError(f"{what}: the container is not running")
        docker = await self._client()
        return await start_exec(docker, ref, what, argv, tty=tty, user=user, env=env, workdir=workdir,
                                cols=cols, rows=rows, container_id=str(data.get("Id", "")))

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
            with engine_errors("container events"):
                async with self._stream(docker, "events", "GET", params=params, timeout=STREAM_TIMEOUT) as response:
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
                        event = engine_event(data) if isinstance(data, dict) else None
                        if event is not None:
                            yield event
        except DriverError:
            if self._closed:
                return  # the driver was closed under the stream: the end, not a failure
            raise
        if self._closed:
            return
        raise UnavailableError("the Docker Engine's event stream ended")

