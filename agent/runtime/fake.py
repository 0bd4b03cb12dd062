"""A scriptable in-memory runtime driver with the Docker driver's contract, for fast tests.

It passes the same conformance suite as :class:`~agent.runtime.docker.DockerDriver` and adds
hooks a test needs to provoke what a real engine does rarely:

    fake = FakeDriver()
    fake.add_image("debian:12")                              # local images
    fake.add_remote_image("registry.local/app:1")            # what pull can fetch
    fake.register_program(["serve"], program)                # what a command does when run
    fake.fail_next("create", after=True)                     # create, then "lose" the reply
    fake.fail_next("start", times=2, code="unavailable")     # fail the next two starts
    fake.delay_next("stop", 0.5)                             # a slow engine
    fake.exit("dm-7-web", 137, oom=True)                     # the container dies (oom)
    fake.add_container("someone-elses", "debian:12")         # an unmanaged container
    fake.payloads[container_id]                              # the Engine API body DM would send
    fake.calls                                               # [("create", ("dm-7-web",)), ...]

Commands run *programs*: coroutines ``async def program(proc: FakeProcess) -> int`` that write
output and return an exit code. ``echo``, ``true``, ``false``, ``cat``, ``sleep``, ``env``
and ``printenv`` are built in; a container command nobody registered idles until it is
stopped; an exec command nobody registered exits 127.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import hashlib
import io
import itertools
import json
import secrets
import tarfile
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent.runtime.base import (
    DEFAULT_EXEC_OUTPUT_LIMIT,
    LABEL_INSTANCE,
    LABEL_MANAGED,
    LABEL_NODE,
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
    NotFoundError,
    ProgressCallback,
    PullFailedError,
    RuntimeDriver,
    RuntimeEvent,
    UnavailableError,
    call_progress,
    check_image_ref,
    check_repository,
    container_labels,
    error_for,
    identity_labels,
    is_container_ref,
    normalize_image_ref,
    pick_instance_container,
    prepare_image_tar,
)
from agent.runtime.payload import container_create_payload

__all__ = ["FakeDriver", "FakeProcess", "FakeProgram"]

STOP_EXIT_CODE = 143  # 128 + SIGTERM, as an init-wrapped process reports it
KILL_EXIT_CODE = 137  # 128 + SIGKILL


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return secrets.token_hex(32)


class FakeProcess:
    """What a fake program sees: its argv, environment and stdin, and where it writes."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], stdin: bytes, sink: Callable[[int, bytes], None]):
        self.argv = list(argv)
        self.env = dict(env)
        self.stdin = stdin
        self._sink = sink

    def write(self, data: str | bytes, stream: int = 1) -> None:
        """Raw output on stdout (1) or stderr (2)."""
        self._sink(2 if stream == 2 else 1, data.encode() if isinstance(data, str) else bytes(data))

    def print(self, *parts: object, stream: int = 1) -> None:
        """One line of output."""
        self.write(" ".join(str(p) for p in parts) + "\n", stream)


FakeProgram = Callable[[FakeProcess], Awaitable[int | None]]


async def _echo(proc: FakeProcess) -> int:
    args = proc.argv[1:]
    newline = True
    if args and args[0] == "-n":
        newline, args = False, args[1:]
    proc.write(" ".join(args) + ("\n" if newline else ""))
    return 0


async def _true(proc: FakeProcess) -> int:
    return 0


async def _false(proc: FakeProcess) -> int:
    return 1


async def _cat(proc: FakeProcess) -> int:
    proc.write(proc.stdin)
    return 0


async def _sleep(proc: FakeProcess) -> int:
    try:
        seconds = float(proc.argv[1]) if len(proc.argv) > 1 else 0.0
    except ValueError:
        proc.print(f"sleep: invalid number '{proc.argv[1]}'", stream=2)
        return 1
    await asyncio.sleep(seconds)
    return 0


async def _env(proc: FakeProcess) -> int:
    names = proc.argv[1:]
    if proc.argv[0].endswith("printenv") and names:
        missing = 0
        for name in names:
            if name in proc.env:
                proc.print(proc.env[name])
            else:
                missing = 1
        return missing
    for key, value in proc.env.items():
        proc.print(f"{key}={value}")
    return 0


async def _idle(proc: FakeProcess) -> int:
    await asyncio.Event().wait()
    return 0  # pragma: no cover - only ever cancelled


async def _missing(proc: FakeProcess) -> int:
    proc.print(f"exec: {proc.argv[0]!r}: executable file not found in $PATH", stream=2)
    return 127


BUILTINS: dict[str, FakeProgram] = {
    "echo": _echo,
    "true": _true,
    "false": _false,
    "cat": _cat,
    "sleep": _sleep,
    "env": _env,
    "printenv": _env,
}


@dataclass
class _Script:
    method: str
    remaining: int
    error: DriverError | None = None
    delay: float = 0.0
    after: bool = False


@dataclass
class _Image:
    id: str
    tags: builtins.list[str]
    size: int = 1024
    created: datetime = field(default_factory=_now)
    labels: dict[str, str] = field(default_factory=dict)
    cmd: builtins.list[str] = field(default_factory=lambda: ["sh"])
    env: builtins.list[str] = field(
        default_factory=lambda: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    )

    def info(self) -> ImageInfo:
        return ImageInfo(
            id=self.id, repo_tags=list(self.tags), size=self.size, created=self.created, labels=dict(self.labels)
        )


@dataclass
class _Container:
    id: str
    name: str
    image: str
    image_id: str
    argv: builtins.list[str]
    env: dict[str, str]
    labels: dict[str, str]
    cpus: float | None = None
    memory_mb: int | None = None
    state: ContainerState = "created"
    exit_code: int | None = None
    error: str | None = None
    oom_killed: bool = False
    created_at: datetime = field(default_factory=_now)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    ip_address: str | None = None
    task: asyncio.Task[None] | None = None
    log: builtins.list[tuple[datetime, str]] = field(default_factory=list)
    partial: dict[int, bytearray] = field(default_factory=lambda: {1: bytearray(), 2: bytearray()})
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    pending_exit: tuple[int, bool] | None = None

    def info(self) -> ContainerInfo:
        labels, managed, instance_id, node_id = container_labels(self.labels)
        return ContainerInfo(
            id=self.id,
            name=self.name,
            image=self.image,
            state=self.state,
            instance_id=instance_id,
            node_id=node_id,
            managed=managed,
            exit_code=self.exit_code if self.state in ("exited", "dead") else None,
            error=self.error,
            oom_killed=self.oom_killed,
            created_at=self.created_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            labels=labels,
            ip_address=self.ip_address if self.state in ("running", "paused") else None,
            image_id=self.image_id,
            cpus=self.cpus,
            memory_mb=self.memory_mb,
        )

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


class FakeDriver(RuntimeDriver):
    """In-memory :class:`RuntimeDriver`; see the module documentation for its scripting hooks."""

    name = "fake"

    def __init__(self, *, exec_output_limit: int = DEFAULT_EXEC_OUTPUT_LIMIT) -> None:
        self.available = True
        self.calls: builtins.list[tuple[str, tuple[Any, ...]]] = []
        self.payloads: dict[str, dict[str, Any]] = {}
        self._exec_output_limit = exec_output_limit
        self._containers: dict[str, _Container] = {}
        self._images: dict[str, _Image] = {}
        self._remote: dict[str, _Image] = {}
        self._scripts: builtins.list[_Script] = []
        self._programs: builtins.list[tuple[Callable[[builtins.list[str]], bool], FakeProgram]] = []
        self._subscribers: builtins.list[asyncio.Queue[RuntimeEvent | None]] = []
        self._history: deque[RuntimeEvent] = deque(maxlen=10_000)
        self._ips = itertools.count(2)
        self._closed = False

    # -- scripting

    def fail_next(
        self,
        method: str,
        *,
        times: int = 1,
        code: str = UnavailableError.CODE,
        message: str | None = None,
        after: bool = False,
    ) -> None:
        """Make the next ``times`` calls of ``method`` raise ``code``; with ``after=True`` the
        call does its work first and then raises (a reply lost on the way back)."""
        error = error_for(code, message or f"{method}: scripted failure ({code})")
        self._scripts.append(_Script(method, times, error=error, after=after))

    def delay_next(self, method: str, seconds: float, *, times: int = 1) -> None:
        """Make the next ``times`` calls of ``method`` wait ``seconds`` before they act."""
        self._scripts.append(_Script(method, times, delay=seconds))

    def register_program(
        self, match: Sequence[str] | Callable[[builtins.list[str]], bool], program: FakeProgram
    ) -> None:
        """Run ``program`` for commands equal to ``match`` (an argv) or for which it is true."""
        if callable(match):
            predicate = match
        else:
            wanted = [str(a) for a in match]

            def predicate(argv: builtins.list[str]) -> bool:
                return argv == wanted

        self._programs.insert(0, (predicate, program))

    def add_image(
        self,
        ref: str,
        *,
        labels: Mapping[str, str] | None = None,
        size: int = 1024,
        cmd: Sequence[str] | None = None,
    ) -> ImageInfo:
        """A local image tagged ``ref`` (the tag moves here if another image had it)."""
        ref = normalize_image_ref(check_image_ref(ref))
        image = _Image(
            id="sha256:" + hashlib.sha256(f"{ref}:{secrets.token_hex(8)}".encode()).hexdigest(),
            tags=[],
            size=size,
            labels=dict(labels or {}),
            cmd=list(cmd) if cmd is not None else ["sh"],
        )
        self._images[image.id] = image
        self._tag(image, ref)
        return image.info()

    def add_remote_image(self, ref: str, *, labels: Mapping[str, str] | None = None, size: int = 4096) -> None:
        """An image that :meth:`pull` can fetch."""
        ref = normalize_image_ref(check_image_ref(ref))
        self._remote[ref] = _Image(
            id="sha256:" + hashlib.sha256(ref.encode()).hexdigest(), tags=[], size=size, labels=dict(labels or {})
        )

    def add_container(
        self,
        name: str,
        image: str,
        *,
        labels: Mapping[str, str] | None = None,
        command: Sequence[str] | None = None,
        running: bool = False,
    ) -> ContainerInfo:
        """A container made outside DM (no DM labels unless given)."""
        found = self._image(image)
        if found is None:
            raise ImageNotFoundError(f"No such image: {image}")
        container = _Container(
            id=_new_id(),
            name=name,
            image=image,
            image_id=found.id,
            argv=list(command) if command is not None else list(found.cmd),
            env={},
            labels={**found.labels, **(labels or {})},
        )
        self._containers[container.id] = container
        if running:
            self._run(container)
        return container.info()

    def exit(self, container: str, exit_code: int = 0, *, oom: bool = False) -> None:
        """Make a running container's process end now with ``exit_code`` (an OOM kill with
        ``oom=True``), as if it had done so by itself."""
        found = self._find(container)
        if found is None or found.state != "running" or found.task is None:
            raise ConflictError(f"container {container} is not running")
        found.pending_exit = (exit_code, oom)
        found.task.cancel()

    # -- plumbing

    async def _enter(self, method: str, *args: Any) -> None:
        self.calls.append((method, args))
        if self._closed:
            raise UnavailableError("the fake driver is closed")
        delay = 0.0
        for script in self._scripts:
            if script.method == method and script.delay and script.remaining > 0:
                script.remaining -= 1
                delay += script.delay
        if delay:
            await asyncio.sleep(delay)
        if not self.available:
            raise UnavailableError(f"{method}: cannot reach the fake engine")
        self._raise_scripted(method, after=False)

    def _leave(self, method: str) -> None:
        self._raise_scripted(method, after=True)

    def _raise_scripted(self, method: str, *, after: bool) -> None:
        for script in self._scripts:
            if script.method == method and script.error is not None and script.after == after and script.remaining > 0:
                script.remaining -= 1
                self._scripts = [s for s in self._scripts if s.remaining > 0]
                raise script.error
        self._scripts = [s for s in self._scripts if s.remaining > 0]

    def _find(self, ref: str) -> _Container | None:
        if not is_container_ref(ref):
            return None
        ref = ref.lstrip("/")
        if ref in self._containers:
            return self._containers[ref]
        for container in self._containers.values():
            if container.name == ref:
                return container
        matches = [c for c in self._containers.values() if c.id.startswith(ref)]
        return matches[0] if len(matches) == 1 else None

    def _get(self, ref: str) -> _Container:
        found = self._find(ref)
        if found is None:
            raise NotFoundError(f"No such container: {ref}")
        return found

    def _image(self, ref: str) -> _Image | None:
        if not isinstance(ref, str):
            return None
        normalized = normalize_image_ref(ref)
        for image in self._images.values():
            if normalized in image.tags:
                return image
        wanted = ref.removeprefix("sha256:")
        if len(wanted) >= 4 and all(c in "0123456789abcdef" for c in wanted):
            matches = [i for i in self._images.values() if i.id.removeprefix("sha256:").startswith(wanted)]
            if len(matches) == 1:
                return matches[0]
        return None

    def _tag(self, image: _Image, ref: str) -> None:
        ref = normalize_image_ref(ref)
        for other in self._images.values():
            if ref in other.tags and other is not image:
                other.tags.remove(ref)
        if ref not in image.tags:
            image.tags.append(ref)

    def _emit(self, container: _Container, action: EventAction, exit_code: int | None = None) -> None:
        _, managed, instance_id, node_id = container_labels(container.labels)
        if not managed:
            return
        event = RuntimeEvent(
            action=action,
            container_id=container.id,
            name=container.name,
            instance_id=instance_id,
            node_id=node_id,
            exit_code=exit_code,
            time=_now(),
        )
        self._history.append(event)
        for queue in self._subscribers:
            queue.put_nowait(event)

    def _program(self, argv: builtins.list[str], default: FakeProgram) -> FakeProgram:
        for predicate, program in self._programs:
            if predicate(argv):
                return program
        if argv:
            builtin = BUILTINS.get(argv[0].rsplit("/", 1)[-1])
            if builtin is not None:
                return builtin
        return default

    def _log_sink(self, container: _Container) -> Callable[[int, bytes], None]:
        def sink(stream: int, data: bytes) -> None:
            buffer = container.partial[stream]
            buffer += data
            added = False
            while (end := buffer.find(b"\n")) >= 0:
                line = bytes(buffer[:end]).rstrip(b"\r").decode("utf-8", "replace")
                del buffer[: end + 1]
                container.log.append((_now(), line))
                added = True
            if added:
                container.notify()

        return sink

    def _run(self, container: _Container) -> None:
        container.state = "running"
        container.started_at = _now()
        container.finished_at = None
        container.exit_code = None
        container.error = None
        container.oom_killed = False
        container.pending_exit = None
        number = next(self._ips)
        container.ip_address = f"172.17.{number // 250}.{number % 250 + 2}"
        program = self._program(container.argv, _idle)
        proc = FakeProcess(container.argv, container.env, b"", self._log_sink(container))
        container.task = asyncio.get_running_loop().create_task(
            self._supervise(container, program, proc), name=f"fake-container-{container.name}"
        )
        container.task.add_done_callback(functools.partial(self._task_done, container))
        self._emit(container, "start")
        container.notify()

    async def _supervise(self, container: _Container, program: FakeProgram, proc: FakeProcess) -> None:
        failure: Exception | None = None
        try:
            code = await program(proc)
            result = (int(code or 0), False)
        except asyncio.CancelledError:
            result = container.pending_exit or (STOP_EXIT_CODE, False)
        except Exception as exc:  # a failing program is a crashing process
            failure, result = exc, (1, False)
        for stream, buffer in container.partial.items():
            if buffer:
                proc.write(b"\n", stream)
        if failure is not None:
            proc.print(f"{type(failure).__name__}: {failure}", stream=2)
        self._finish(container, asyncio.current_task(), *result)

    def _task_done(self, container: _Container, task: asyncio.Task[None]) -> None:
        # A program cancelled before it ran never reaches its own handler.
        exit_code, oom = container.pending_exit or (STOP_EXIT_CODE, False)
        self._finish(container, task, exit_code, oom)

    def _finish(self, container: _Container, task: asyncio.Task[Any] | None, exit_code: int, oom: bool) -> None:
        if container.task is not task or container.state != "running":
            return
        container.state = "exited"
        container.exit_code = exit_code
        container.oom_killed = oom
        container.finished_at = _now()
        container.ip_address = None
        container.task = None
        if oom:
            self._emit(container, "oom")
        self._emit(container, "die", exit_code)
        container.notify()

    async def _halt(self, container: _Container, exit_code: int) -> bool:
        task = container.task
        if container.state != "running" or task is None:
            return False
        container.pending_exit = (exit_code, False)
        self._emit(container, "kill")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return True

    # -- driver: containers

    async def version(self) -> dict[str, Any]:
        await self._enter("version")
        return {"name": self.name, "version": "0", "api_version": "fake", "os": "linux", "arch": "fake"}

    async def create(self, spec: ContainerSpec) -> ContainerInfo:
        await self._enter("create", spec.name)
        payload = container_create_payload(spec)  # validates the spec
        existing = await self._find_instance(spec.instance_id, identity_labels(spec))
        if existing is not None:
            self._leave("create")
            return existing
        image = self._image(spec.image)
        if image is None:
            raise ImageNotFoundError(f"create container {spec.name}: No such image: {spec.image}")
        taken = self._find(spec.name)
        if taken is not None and taken.name == spec.name:
            raise ConflictError(
                f'create container {spec.name}: Conflict. The container name "/{spec.name}" is already in use '
                f'by container "{taken.id}". You have to remove (or rename) that container to be able to reuse '
                "that name."
            )
        env = dict(e.split("=", 1) for e in image.env if "=" in e)
        env.update(dict(e.split("=", 1) for e in payload["Env"]))
        container = _Container(
            id=_new_id(),
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
        program = self._program(argv, _missing)
        try:
            async with asyncio.timeout(timeout):
                code = await program(proc)
        except TimeoutError:
            raise DriverTimeoutError(
                f"exec in container {container}: {argv[0]} did not finish within {timeout:g} s"
            ) from None
        self._leave("exec")
        return ExecResult(int(code or 0), bytes(out[1]), bytes(out[2]), truncated)

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

    # -- driver: images

    async def list_images(self) -> builtins.list[ImageInfo]:
        await self._enter("list_images")
        self._leave("list_images")
        return [image.info() for image in self._images.values()]

    async def inspect_image(self, ref: str) -> ImageInfo | None:
        await self._enter("inspect_image", ref)
        check_image_ref(ref)
        image = self._image(ref)
        self._leave("inspect_image")
        return image.info() if image is not None else None

    async def pull(
        self,
        ref: str,
        *,
        auth: Mapping[str, str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> ImageInfo:
        await self._enter("pull", ref)
        check_image_ref(ref)
        if auth and "/" not in ref:
            raise InvalidError(f"pull {ref}: credentials need a reference that names its registry (host/name:tag)")
        normalized = normalize_image_ref(ref)
        remote = self._remote.get(normalized)
        if remote is None:
            raise PullFailedError(
                f'pull {ref}: Get "https://{ref.split("/")[0]}/v2/": the fake registry has no such image'
            )
        name, _, tag = normalized.rpartition(":")
        layer = remote.id.removeprefix("sha256:")[:12]
        for message in (
            {"status": f"Pulling from {name}", "id": tag},
            {"status": "Pulling fs layer", "progressDetail": {}, "id": layer},
            {
                "status": "Downloading",
                "progressDetail": {"current": remote.size // 2, "total": remote.size},
                "id": layer,
            },
            {"status": "Download complete", "progressDetail": {}, "id": layer},
            {"status": "Pull complete", "progressDetail": {}, "id": layer},
            {"status": f"Digest: sha256:{hashlib.sha256(remote.id.encode()).hexdigest()}"},
            {"status": f"Status: Downloaded newer image for {normalized}"},
        ):
            await call_progress(progress, message)
        image = self._images.get(remote.id)
        if image is None:
            image = _Image(id=remote.id, tags=[], size=remote.size, labels=dict(remote.labels))
            self._images[image.id] = image
        self._tag(image, normalized)
        self._leave("pull")
        return image.info()

    async def import_image(
        self,
        source: ImageSource,
        *,
        repository: str | None = None,
        tag: str = "latest",
        changes: Sequence[str] | None = None,
    ) -> ImageInfo:
        await self._enter("import_image", repository, tag)
        if repository is not None:
            check_repository(repository, tag)
        prepared = await prepare_image_tar(source)
        data = await prepared.read_all()
        if prepared.kind == "rootfs":
            image = _Image(
                id="sha256:" + hashlib.sha256(data + secrets.token_bytes(8)).hexdigest(), tags=[], size=len(data)
            )
            image.cmd = []
            for change in changes or ():
                keyword, _, rest = change.strip().partition(" ")
                if keyword.upper() == "CMD":
                    try:
                        parsed = json.loads(rest)
                    except ValueError:
                        parsed = ["/bin/sh", "-c", rest]
                    image.cmd = [str(a) for a in parsed] if isinstance(parsed, list) else [str(parsed)]
                elif keyword.upper() == "LABEL" and "=" in rest:
                    key, _, value = rest.partition("=")
                    image.labels[key.strip()] = value.strip().strip('"')
            self._images[image.id] = image
        else:
            image = self._load(data)
        if repository is not None:
            self._tag(image, f"{repository}:{tag}")
        self._leave("import_image")
        return image.info()

    def _load(self, data: bytes) -> _Image:
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
                member = archive.extractfile("manifest.json")
                if member is None:
                    raise InvalidError("load image archive: manifest.json is not a file")
                manifest = json.loads(member.read())
                first = manifest[0]
                config_name = str(first["Config"])
                config_member = archive.extractfile(config_name)
                config = json.loads(config_member.read()) if config_member is not None else {}
        except KeyError as exc:
            raise InvalidError(
                f"load image archive: {exc.args[0]} is missing (only manifest.json archives load)"
            ) from None
        except (tarfile.TarError, ValueError, IndexError, TypeError) as exc:
            raise InvalidError(f"load image archive: {type(exc).__name__}: {exc}") from None
        image_id = "sha256:" + config_name.rsplit("/", 1)[-1].removesuffix(".json")
        image = self._images.get(image_id)
        if image is None:
            inner = config.get("config") or {}
            image = _Image(
                id=image_id,
                tags=[],
                size=len(data),
                labels=dict(inner.get("Labels") or {}),
                cmd=list(inner.get("Cmd") or []),
            )
            self._images[image.id] = image
        for ref in first.get("RepoTags") or []:
            self._tag(image, str(ref))
        return image

    async def export_image(self, ref: str) -> AsyncIterator[bytes]:
        await self._enter("export_image", ref)
        check_image_ref(ref)
        image = self._image(ref)
        if image is None:
            raise ImageNotFoundError(f"export image {ref}: No such image: {ref}")
        self._leave("export_image")
        hex_id = image.id.removeprefix("sha256:")
        layer = hashlib.sha256(hex_id.encode()).hexdigest()
        config = {
            "architecture": "amd64",
            "os": "linux",
            "created": image.created.isoformat(),
            "config": {"Labels": image.labels, "Cmd": image.cmd},
        }
        tags = [t for t in image.tags if normalize_image_ref(ref) == t] or list(image.tags)
        manifest = [{"Config": f"{hex_id}.json", "RepoTags": tags, "Layers": [f"{layer}/layer.tar"]}]
        repositories: dict[str, dict[str, str]] = {}
        for t in tags:
            name, _, version = t.rpartition(":")
            repositories.setdefault(name, {})[version] = layer
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            empty_layer = io.BytesIO()
            with tarfile.open(fileobj=empty_layer, mode="w"):
                pass
            for name, payload in (
                (f"{layer}/layer.tar", empty_layer.getvalue()),
                (f"{hex_id}.json", json.dumps(config).encode()),
                ("manifest.json", json.dumps(manifest).encode()),
                ("repositories", json.dumps(repositories).encode()),
            ):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                info.mtime = 0
                archive.addfile(info, io.BytesIO(payload))
        data = buffer.getvalue()
        for start in range(0, len(data), 64 * 1024):
            yield data[start : start + 64 * 1024]

    async def remove_image(self, ref: str, *, force: bool = False) -> None:
        await self._enter("remove_image", ref)
        check_image_ref(ref)
        image = self._image(ref)
        if image is None:
            self._leave("remove_image")
            return
        by_tag = normalize_image_ref(ref) in image.tags
        users = [c for c in self._containers.values() if c.image_id == image.id]
        if by_tag and len(image.tags) > 1:
            image.tags.remove(normalize_image_ref(ref))
        elif users and not force:
            what = f'repository reference "{ref}"' if by_tag else image.id
            raise ConflictError(
                f"remove image {ref}: conflict: unable to remove {what} (must force) - "
                f"container {users[0].id[:12]} is using its referenced image {image.id[7:19]}"
            )
        elif not by_tag and len(image.tags) > 1 and not force:
            raise ConflictError(
                f"remove image {ref}: conflict: unable to delete {image.id[7:19]} (must be forced) - "
                "image is referenced in multiple repositories"
            )
        elif users:
            image.tags.clear()  # forced: untagged, kept for the containers that use it
        else:
            del self._images[image.id]
        self._leave("remove_image")

    async def commit(
        self,
        container: str,
        *,
        repository: str,
        tag: str = "latest",
        message: str | None = None,
    ) -> ImageInfo:
        await self._enter("commit", container, repository, tag)
        found = self._get(container)
        check_repository(repository, tag)
        labels = {**found.labels, LABEL_MANAGED: "", LABEL_INSTANCE: "", LABEL_NODE: ""}
        image = _Image(id="sha256:" + secrets.token_hex(32), tags=[], labels=labels, cmd=list(found.argv))
        self._images[image.id] = image
        self._tag(image, f"{repository}:{tag}")
        self._leave("commit")
        return image.info()
