"""The fake driver's container calls: the Docker driver's contract, in memory."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from agent.protocol.types import LABEL_INSTANCE, LABEL_MANAGED, ContainerInfo, ContainerSpec
from agent.runtime.driver import ExecResult, ExecSession, RuntimeEvent, check_terminal_size, require
from agent.runtime.errors import ConflictError, DriverTimeoutError, ImageNotFoundError, InvalidError
from agent.runtime.fake.engine import FakeEngine
from agent.runtime.fake.interactive import FakeExecSession
from agent.runtime.fake.programs import KILL_EXIT_CODE, STOP_EXIT_CODE, FakeProcess, missing
from agent.runtime.fake.records import FakeContainer, new_id
from agent.runtime.ownership import identity_labels, pick_instance_container
from agent.runtime.payload import container_create_payload
from agent.runtime.validate import check_supported

__all__ = ["ContainerCalls"]


class ContainerCalls(FakeEngine):
    """Containers, their logs, exec and events, in memory."""

    async def version(self) -> dict[str, Any]:
        await self._enter("version")
        return {"name": self.name, "version": "0", "api_version": "fake", "os": "linux", "arch": "fake"}

    async def create(self, spec: ContainerSpec, *, fresh: bool = False) -> ContainerInfo:
        await self._enter("create", spec.name)
        payload = container_create_payload(spec)  # validates the spec
        check_supported(spec, self._capabilities)
        existing = None if fresh else await self._find_instance(spec.instance_id, identity_labels(spec))
        if existing is not None:
            self._leave("create")
            return existing
        image = self._image(spec.image)
        if image is None:
            raise ImageNotFoundError(f"create container {spec.name}: No such image: {spec.image}")
        taken = self._find(spec.name)
        if taken is not None and taken.name == spec.name:
            if fresh and (adopted := await self._find_instance(spec.instance_id, identity_labels(spec))) is not None:
                self._leave("create")
                return adopted  # a create whose reply was lost made it under this name
            raise ConflictError(
                f'create container {spec.name}: Conflict. The container name "/{spec.name}" is already in use '
                f'by container "{taken.id}". You have to remove (or rename) that container to be able to reuse '
                "that name."
            )
        env = dict(e.split("=", 1) for e in image.env if "=" in e)
        env.update(dict(e.split("=", 1) for e in payload["Env"]))
        container = FakeContainer(
            id=new_id(),
            name=spec.name,
            image=spec.image,
            image_id=image.id,
            argv=list(spec.command) if spec.command is not None else list(image.cmd),
            env=env,
            labels={**image.labels, **payload["Labels"]},
            cpus=spec.cpus,
            memory_mb=spec.memory_mb,
        )
        self._containers[container.id] = container
        self.payloads[container.id] = payload
        self._emit(container, "create")
        self._leave("create")
        return container.info()

    async def _find_instance(self, instance_id: int, labels: Mapping[str, str] | None = None) -> ContainerInfo | None:
        found = [
            c.info()
            for c in self._containers.values()
            if c.labels.get(LABEL_MANAGED) == "1" and c.labels.get(LABEL_INSTANCE) == str(int(instance_id))
            and all(c.labels.get(k) == v for k, v in (labels or {}).items())
        ]
        return pick_instance_container(found)

    async def find_instance(self, instance_id: int, *, labels: Mapping[str, str] | None = None) -> ContainerInfo | None:
        await self._enter("find_instance", instance_id)
        result = await self._find_instance(instance_id, labels)
        self._leave("find_instance")
        return result

    async def start(self, container: str) -> None:
        await self._enter("start", container)
        found = self._get(container)
        if found.state != "running":
            self._run(found)
        self._leave("start")

    async def stop(self, container: str, timeout: float = 10) -> None:
        await self._enter("stop", container)
        found = self._get(container)
        if await self._halt(found, STOP_EXIT_CODE):
            self._emit(found, "stop")
        self._leave("stop")

    async def restart(self, container: str, timeout: float = 10) -> None:
        await self._enter("restart", container)
        found = self._get(container)
        await self._halt(found, STOP_EXIT_CODE)
        self._run(found)
        self._emit(found, "restart")
        self._leave("restart")

    async def remove(self, container: str, *, force: bool = False) -> None:
        await self._enter("remove", container)
        found = self._find(container)
        if found is None:
            self._leave("remove")
            return
        if found.state == "running":
            if not force:
                raise ConflictError(
                    f"remove container {container}: You cannot remove a running container {found.id}. "
                    "Stop the container before attempting removal or force remove"
                )
            await self._halt(found, KILL_EXIT_CODE)
        self._containers.pop(found.id, None)
        self.payloads.pop(found.id, None)
        found.state = "removing"
        self._emit(found, "destroy")
        found.notify()
        self._leave("remove")

    async def inspect(self, container: str) -> ContainerInfo | None:
        await self._enter("inspect", container)
        found = self._find(container)
        self._leave("inspect")
        return found.info() if found is not None else None

    async def list(self, *, all: bool = True, managed_only: bool = False) -> builtins.list[ContainerInfo]:
        await self._enter("list")
        result = [
            c.info()
            for c in self._containers.values()
            if (all or c.state == "running") and (not managed_only or c.labels.get(LABEL_MANAGED) == "1")
        ]
        self._leave("list")
        return result

    async def logs(
        self,
        container: str,
        *,
        tail: int | None = None,
        follow: bool = False,
        timestamps: bool = False,
    ) -> AsyncIterator[str]:
        await self._enter("logs", container)
        if follow:
            require(self._capabilities, "logs_follow", f"follow the logs of container {container}")
        found = self._get(container)
        self._leave("logs")
        position = 0 if tail is None else max(0, len(found.log) - max(0, tail))
        while True:
            while position < len(found.log):
                when, line = found.log[position]
                position += 1
                yield f"{when.strftime('%Y-%m-%dT%H:%M:%S.%f')}000Z {line}" if timestamps else line
            if not follow or found.state != "running" or self._closed:
                return
            await found.changed.wait()

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
        await self._enter("exec", container, tuple(cmd))
        require(self._capabilities, "exec", f"exec in container {container}")
        found = self._get(container)
        argv = [str(a) for a in cmd]
        if not argv:
            raise InvalidError("exec needs a command")
        if found.state != "running":
            raise ConflictError(f"exec in container {container}: Container {found.id} is not running")
        out = {1: bytearray(), 2: bytearray()}
        truncated = False

        def sink(stream: int, data: bytes) -> None:
            nonlocal truncated
            room = self._exec_output_limit - len(out[stream])
            if len(data) > room:
                truncated = True
            out[stream] += data[: max(room, 0)]

        proc = FakeProcess(argv, {**found.env, **(env or {})}, stdin or b"", sink)
        program = self._program(argv, missing)
        try:
            async with asyncio.timeout(timeout):
                code = await program(proc)
        except TimeoutError:
            raise DriverTimeoutError(
                f"exec in container {container}: {argv[0]} did not finish within {timeout:g} s"
            ) from None
        self._leave("exec")
        return ExecResult(int(code or 0), bytes(out[1]), bytes(out[2]), truncated)

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
        await self._enter("exec_interactive", container, tuple(cmd))
        require(self._capabilities, "exec_tty", f"interactive exec in container {container}")
        found = self._get(container)
        argv = [str(a) for a in cmd]
        if not argv:
            raise InvalidError("exec needs a command")
        check_terminal_size(cols, rows)
        if found.state != "running":
            raise ConflictError(f"interactive exec in container {container}: Container {found.id} is not running")
        session = FakeExecSession(self._program(argv, missing), argv, {**found.env, **(env or {})}, tty=tty,
                                  size=(cols, rows))
        self.sessions.append(session)
        self._leave("exec_interactive")
        return session

    async def events(self, *, since: float | None = None) -> AsyncIterator[RuntimeEvent]:
        await self._enter("events")
        self._leave("events")
        queue: asyncio.Queue[RuntimeEvent | None] = asyncio.Queue()
        self._subscribers.append(queue)
        past = [e for e in self._history if since is not None and e.time is not None and e.time.timestamp() >= since]
        try:
            for event in past:
                yield event
            while True:
                item = await queue.get()
                if item is None:
                    return
                yield item
        finally:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(queue)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for queue in self._subscribers:
            queue.put_nowait(None)
        tasks = [c.task for c in self._containers.values() if c.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for container in self._containers.values():
            container.notify()

