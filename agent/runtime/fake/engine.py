"""The fake driver's state and scripting hooks, and the containers' programs run as tasks."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import functools
import hashlib
import itertools
import secrets
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from agent.protocol.types import LEGACY_CAPABILITIES, Capabilities, ContainerInfo, ImageInfo
from agent.runtime.driver import DEFAULT_EXEC_OUTPUT_LIMIT, EventAction, RuntimeDriver, RuntimeEvent
from agent.runtime.errors import ConflictError, ImageNotFoundError, NotFoundError, UnavailableError, error_for
from agent.runtime.fake.interactive import FakeExecSession
from agent.runtime.fake.programs import BUILTINS, STOP_EXIT_CODE, FakeProcess, FakeProgram, idle
from agent.runtime.fake.records import FakeContainer, FakeImage, Script, new_id, now
from agent.runtime.ownership import container_labels
from agent.runtime.refs import check_image_ref, is_container_ref, normalize_image_ref

__all__ = ["CAPABILITIES", "FakeEngine"]

# Everything the fake does: what the Docker driver does today (what agents did before they reported
# capabilities, exec on a terminal and file copy). Tests switch parts off with FakeDriver(capabilities=...)
# or set_capabilities(...).
CAPABILITIES = dataclasses.replace(LEGACY_CAPABILITIES, exec_tty=True, file_copy=True)


class FakeEngine(RuntimeDriver):
    """The fake's state, scripting and plumbing, shared by its container and image calls."""

    def __init__(
        self, *, exec_output_limit: int = DEFAULT_EXEC_OUTPUT_LIMIT, capabilities: Capabilities = CAPABILITIES
    ) -> None:
        self.available = True
        self._capabilities = capabilities
        self.calls: builtins.list[tuple[str, tuple[Any, ...]]] = []
        self.payloads: dict[str, dict[str, Any]] = {}
        self.sessions: builtins.list[FakeExecSession] = []  # every exec_interactive, in order
        self._exec_output_limit = exec_output_limit
        self._containers: dict[str, FakeContainer] = {}
        self._images: dict[str, FakeImage] = {}
        self._remote: dict[str, FakeImage] = {}
        self._scripts: builtins.list[Script] = []
        self._programs: builtins.list[tuple[Callable[[builtins.list[str]], bool], FakeProgram]] = []
        self._subscribers: builtins.list[asyncio.Queue[RuntimeEvent | None]] = []
        self._history: deque[RuntimeEvent] = deque(maxlen=10_000)
        self._ips = itertools.count(2)
        self._closed = False

    def capabilities(self) -> Capabilities:
        return self._capabilities

    # -- scripting

    def set_capabilities(self, **changes: Any) -> Capabilities:
        """Change what the fake claims, and so what it refuses (``unsupported``): e.g.
        ``set_capabilities(commit=False, gpu_vendors=("nvidia",))``."""
        self._capabilities = dataclasses.replace(self._capabilities, **changes)
        return self._capabilities

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
        self._scripts.append(Script(method, times, error=error, after=after))

    def delay_next(self, method: str, seconds: float, *, times: int = 1) -> None:
        """Make the next ``times`` calls of ``method`` wait ``seconds`` before they act."""
        self._scripts.append(Script(method, times, delay=seconds))

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
        image = FakeImage(
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
        self._remote[ref] = FakeImage(
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
        container = FakeContainer(
            id=new_id(),
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

    def _find(self, ref: str) -> FakeContainer | None:
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

    def _get(self, ref: str) -> FakeContainer:
        found = self._find(ref)
        if found is None:
            raise NotFoundError(f"No such container: {ref}")
        return found

    def _image(self, ref: str) -> FakeImage | None:
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

    def _tag(self, image: FakeImage, ref: str) -> None:
        ref = normalize_image_ref(ref)
        for other in self._images.values():
            if ref in other.tags and other is not image:
                other.tags.remove(ref)
        if ref not in image.tags:
            image.tags.append(ref)

    def _emit(self, container: FakeContainer, action: EventAction, exit_code: int | None = None) -> None:
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
            time=now(),
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

    def _log_sink(self, container: FakeContainer) -> Callable[[int, bytes], None]:
        def sink(stream: int, data: bytes) -> None:
            buffer = container.partial[stream]
            buffer += data
            added = False
            while (end := buffer.find(b"\n")) >= 0:
                line = bytes(buffer[:end]).rstrip(b"\r").decode("utf-8", "replace")
                del buffer[: end + 1]
                container.log.append((now(), line))
                added = True
            if added:
                container.notify()

        return sink

    def _run(self, container: FakeContainer) -> None:
        container.state = "running"
        container.started_at = now()
        container.finished_at = None
        container.exit_code = None
        container.error = None
        container.oom_killed = False
        container.pending_exit = None
        number = next(self._ips)
        container.ip_address = f"172.17.{number // 250}.{number % 250 + 2}"
        program = self._program(container.argv, idle)
        proc = FakeProcess(container.argv, container.env, b"", self._log_sink(container))
        container.task = asyncio.get_running_loop().create_task(
            self._supervise(container, program, proc), name=f"fake-container-{container.name}"
        )
        container.task.add_done_callback(functools.partial(self._task_done, container))
        self._emit(container, "start")
        container.notify()

    async def _supervise(self, container: FakeContainer, program: FakeProgram, proc: FakeProcess) -> None:
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

    def _task_done(self, container: FakeContainer, task: asyncio.Task[None]) -> None:
        # A program cancelled before it ran never reaches its own handler.
        exit_code, oom = container.pending_exit or (STOP_EXIT_CODE, False)
        self._finish(container, task, exit_code, oom)

    def _finish(self, container: FakeContainer, task: asyncio.Task[Any] | None, exit_code: int, oom: bool) -> None:
        if container.task is not task or container.state != "running":
            return
        container.state = "exited"
        container.exit_code = exit_code
        container.oom_killed = oom
        container.finished_at = now()
        container.ip_address = None
        container.task = None
        if oom:
            self._emit(container, "oom")
        self._emit(container, "die", exit_code)
        container.notify()

    async def _halt(self, container: FakeContainer, exit_code: int) -> bool:
        task = container.task
        if container.state != "running" or task is None:
            return False
        container.pending_exit = (exit_code, False)
        self._emit(container, "kill")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return True

