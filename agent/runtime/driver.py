"""The container runtime driver interface: what the agent asks of Docker (and, later, others).

A driver turns DM's requests into one runtime's calls. Every driver keeps the same contract,
checked by one conformance suite (``tests/runtime/test_conformance.py``) that the Docker
driver passes against a real dockerd and the in-memory fake passes in milliseconds.

The contract, in short:

* Every container DM creates carries the labels ``dm.managed=1``, ``dm.instance=<id>`` and
  ``dm.node=<id>`` (:mod:`agent.runtime.ownership`). :meth:`RuntimeDriver.create` is
  idempotent by instance id: when a managed container with that instance id exists it is
  returned and no second one is made (this is how a lost "create" reply is detected). A name
  that is taken by another container is a ``conflict``. Containers without ``dm.managed=1``
  are reported with ``managed=False`` and never adopted.
* ``start``/``stop`` are idempotent; ``remove`` of a missing container is not an error;
  ``inspect`` of a missing container is ``None``; every other call on a missing container
  raises ``not_found``.
* Failures are :class:`~agent.runtime.errors.DriverError` with a short ``code`` and the
  runtime's own message. No other exception escapes a driver (cancellation aside).
* :meth:`RuntimeDriver.capabilities` says what the driver can do; what it cannot do it
  refuses with ``unsupported`` (and claims nothing it does not do).
* DM, not the runtime, owns host ports (no ``PortBindings``/publishing at all), restarts
  (restart policy ``no``), GPU assignment (by device) and the image catalogue (``create``
  never pulls).

Public API::

    driver: RuntimeDriver = DockerDriver("unix:///var/run/docker.sock")   # or FakeDriver()
    driver.capabilities().commit                             # True
    info = await driver.create(ContainerSpec(instance_id=7, node_id=1, name="dm-7-web",
                                             image="debian:12", cpus=2, memory_mb=4096))
    await driver.start(info.id)
    async for line in driver.logs(info.id, tail=100): ...
    result = await driver.exec(info.id, ["id", "-u"])       # ExecResult(exit_code, stdout, stderr)
    session = await driver.exec_interactive(info.id, ["/bin/sh"], tty=True, cols=120, rows=40)
    await session.write(b"echo hi; exit 3\n"); await session.read()   # (1, b"...hi...")
    await session.wait()                                     # 3
    async for event in driver.events(): ...                  # RuntimeEvent(action="die", ...)
    image = await driver.import_image("/tmp/rootfs.tar", repository="dm/base", tag="1")
"""

from __future__ import annotations

import abc
import builtins
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, ClassVar, Literal, TypeAlias

from agent.protocol.types import Capabilities, ContainerInfo, ContainerSpec, ImageInfo
from agent.runtime.errors import InvalidError, UnsupportedError
from agent.runtime.image_tar import ImageSource

__all__ = [
    "ARCHIVE_CHUNK",
    "DEFAULT_EXEC_OUTPUT_LIMIT",
    "MANAGED_ACTIONS",
    "MAX_TERMINAL_SIZE",
    "EventAction",
    "ExecResult",
    "ExecSession",
    "ProgressCallback",
    "RuntimeDriver",
    "RuntimeEvent",
    "call_progress",
    "check_archive_path",
    "check_terminal_size",
    "require",
]

EventAction = Literal["create", "start", "restart", "kill", "die", "stop", "oom", "pause", "unpause", "destroy"]
# The container events a driver reports (for managed containers only).
MANAGED_ACTIONS: tuple[EventAction, ...] = (
    "create",
    "start",
    "restart",
    "kill",
    "die",
    "stop",
    "oom",
    "pause",
    "unpause",
    "destroy",
)

DEFAULT_EXEC_OUTPUT_LIMIT = 16 * 1024 * 1024  # bytes per stream
ARCHIVE_CHUNK = 64 * 1024  # get_archive yields at most this much at a time (a stream's chunk)
MAX_ARCHIVE_PATH = 4096

ProgressCallback: TypeAlias = Callable[[dict[str, Any]], Awaitable[None] | None]


@dataclass(slots=True)
class RuntimeEvent:
    """A lifecycle event of a managed container."""

    action: EventAction
    container_id: str
    name: str | None = None
    instance_id: int | None = None
    node_id: int | None = None
    exit_code: int | None = None  # "die"
    time: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["time"] = self.time.isoformat() if self.time is not None else None
        return data


@dataclass(slots=True)
class ExecResult:
    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""
    truncated: bool = False  # output beyond the driver's limit was dropped

    @property
    def stdout_text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", "replace")

    def to_dict(self) -> dict[str, Any]:
        return {
            "exit_code": self.exit_code,
            "stdout": self.stdout_text,
            "stderr": self.stderr_text,
            "truncated": self.truncated,
        }


# Columns or rows of a terminal: more is refused (invalid) rather than handed to the runtime.
MAX_TERMINAL_SIZE = 4096


def check_terminal_size(cols: int, rows: int) -> None:
    """Raise :class:`InvalidError` unless 1 <= cols, rows <= MAX_TERMINAL_SIZE."""
    for name, value in (("cols", cols), ("rows", rows)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TERMINAL_SIZE:
            raise InvalidError(f"terminal {name} must be a whole number from 1 to {MAX_TERMINAL_SIZE}, got {value!r}")


class ExecSession(abc.ABC):
    """A process started by :meth:`RuntimeDriver.exec_interactive`, its input and output as they
    come. Reads and writes may run concurrently (one reader, one writer); every method raises
    only :class:`DriverError` (cancellation aside)."""

    @abc.abstractmethod
    async def read(self) -> tuple[int, bytes]:
        """The next output: ``(1, data)`` for stdout, ``(2, data)`` for stderr, ``(0, b"")`` once
        the output ended (and from then on). With a TTY all output is stdout."""

    @abc.abstractmethod
    async def write(self, data: bytes) -> None:
        """To the process's stdin (waits while the runtime does not take more)."""

    @abc.abstractmethod
    async def write_eof(self) -> None:
        """End of the process's stdin (reads go on). On a terminal nothing happens: the end of
        input is the terminal's business (ctrl-D), as with sshd; the Engine would close the
        terminal and the output still on its way would be lost."""

    @abc.abstractmethod
    async def resize(self, cols: int, rows: int) -> None:
        """The terminal's new size (nothing without a TTY); invalid outside 1..MAX_TERMINAL_SIZE."""

    @abc.abstractmethod
    async def wait(self) -> int:
        """The exit status, once the output ended (read it to the end first)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop: the process is killed if it still runs; the output ends. Idempotent."""


async def call_progress(progress: ProgressCallback | None, message: dict[str, Any]) -> None:
    if progress is None:
        return
    result = progress(message)
    if result is not None:
        await result


def require(capabilities: Capabilities, name: str, what: str) -> None:
    """Raise :class:`UnsupportedError` unless the boolean capability ``name`` is there."""
    if not capabilities.can(name):
        raise UnsupportedError(f"{what}: this runtime driver cannot do that (capability {name})")


def check_archive_path(path: str) -> None:
    """A path for put_archive / get_archive: absolute, no NUL, bounded (``invalid`` else).
    What it resolves to is the runtime's business: it is resolved inside the container."""
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path or len(path) > MAX_ARCHIVE_PATH:
        raise InvalidError(f"a path in the container must be absolute (and at most {MAX_ARCHIVE_PATH} "
                           f"characters): {path[:100]!r}")


async def _refuse_archive(driver: RuntimeDriver, container: str) -> AsyncIterator[bytes]:
    require(driver.capabilities(), "file_copy", f"copy files out of container {container}")
    raise UnsupportedError("copy files: not implemented by this driver (capability file_copy)")
    yield b""  # an async generator: the refusal comes when it is iterated, as a driver's would


class RuntimeDriver(abc.ABC):
    """The calls the agent makes on a container runtime. All methods are coroutines or
    async iterators, raise only :class:`DriverError`, and are safe to call concurrently."""

    name: ClassVar[str] = "abstract"

    @abc.abstractmethod
    def capabilities(self) -> Capabilities:
        """What this driver can do (see :class:`~agent.protocol.types.Capabilities`); it refuses the
        rest with ``unsupported``. Constant for a driver's life unless a test scripts it."""

    # -- lifecycle of the driver itself

    async def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections; iterators still running end."""

    async def __aenter__(self) -> RuntimeDriver:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def version(self) -> dict[str, Any]:
        """``{"name": "docker", "version": ..., "api_version": ..., ...}``."""

    # -- containers

    @abc.abstractmethod
    async def create(self, spec: ContainerSpec, *, fresh: bool = False) -> ContainerInfo:
        """Create (not start) the container, or return the managed container that already
        has ``spec.instance_id`` on ``spec.node_id`` (and, when the spec carries one, the same
        ``dm.installation`` label: two DM installations may share an Engine and number their
        instances alike). Raises invalid, image_not_found, conflict (name taken).

        ``fresh``: the caller knows the instance has no container, so none is looked for first;
        one made meanwhile under the spec's name (a request whose reply was lost) is still
        returned, found when the name turns out taken."""

    @abc.abstractmethod
    async def find_instance(self, instance_id: int, *, labels: Mapping[str, str] | None = None) -> ContainerInfo | None:
        """The managed container labelled with ``instance_id`` (and every one of ``labels``), if any."""

    @abc.abstractmethod
    async def start(self, container: str) -> None:
        """Start; a running container is left as it is."""

    @abc.abstractmethod
    async def stop(self, container: str, timeout: float = 10) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; a stopped container is fine."""

    @abc.abstractmethod
    async def restart(self, container: str, timeout: float = 10) -> None:
        """Stop (as :meth:`stop`) and start again."""

    @abc.abstractmethod
    async def remove(self, container: str, *, force: bool = False) -> None:
        """Remove; a missing container is not an error. A running one needs ``force``
        (else conflict)."""

    @abc.abstractmethod
    async def inspect(self, container: str) -> ContainerInfo | None:
        """By id, unique id prefix or name; None when there is no such container."""

    @abc.abstractmethod
    def logs(
        self,
        container: str,
        *,
        tail: int | None = None,
        follow: bool = False,
        timestamps: bool = False,
    ) -> AsyncIterator[str]:
        """Output lines (stdout and stderr, in order, without the newline). ``tail``: only the
        last n lines (None: all). ``follow``: keep going until the container stops."""

    @abc.abstractmethod
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
        """Run ``cmd`` (an argv, never a shell line) in a running container and wait for it.
        Raises conflict when the container is not running, timeout after ``timeout`` s."""

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
        """Start ``cmd`` (an argv) in a running container with stdin open, on a terminal of
        ``cols`` x ``rows`` when ``tty``, and return at once: its output is read as it comes.
        Raises conflict when the container is not running, invalid for an empty command or a
        terminal size outside 1..MAX_TERMINAL_SIZE, unsupported unless ``capabilities().exec_tty``.
        A command that cannot be started (not found) is reported by the runtime as output and
        an exit status (126/127), as with :meth:`exec`. The caller closes the session."""
        require(self.capabilities(), "exec_tty", f"interactive exec in container {container}")
        raise UnsupportedError(f"interactive exec in container {container}: not implemented by {self.name}")

    async def host_pid(self, container: str) -> int:
        """The host pid of a running container's main process, for the agent to reach the
        container's file system (``/proc/PID/root``) and network namespace (``/proc/PID/ns/net``).
        Raises conflict when the container is not running, not_found when there is none,
        unsupported when its processes are not visible to the agent (a runtime on another
        machine or in another pid namespace; the fake)."""
        raise UnsupportedError(f"container {container}: its processes are not visible to the agent ({self.name})")

    @abc.abstractmethod
    def events(self, *, since: float | None = None) -> AsyncIterator[RuntimeEvent]:
        """Lifecycle events of managed containers, from ``since`` (unix time; None: from now)
        on, until the driver is closed. The stream breaking raises unavailable."""

    # -- images

    @abc.abstractmethod
    async def inspect_image(self, ref: str) -> ImageInfo | None:
        """By reference or id; None when there is no such image."""

    @abc.abstractmethod
    async def pull(
        self,
        ref: str,
        *,
        auth: Mapping[str, str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> ImageInfo:
        """Pull from a registry, calling ``progress`` with each of the runtime's progress
        messages (``{"status": ..., "id": ..., "progressDetail": ...}``). Raises pull_failed."""

    @abc.abstractmethod
    async def import_image(
        self,
        source: ImageSource,
        *,
        repository: str | None = None,
        tag: str = "latest",
        changes: Sequence[str] | None = None,
    ) -> ImageInfo:
        """Import a ``docker save`` archive or a root file system tar (plain, gzip, bzip2 or
        xz), told apart by the archive's members. The image is tagged ``repository:tag`` when
        a repository is given. ``changes`` (Dockerfile lines such as ``CMD ["/bin/sh"]``)
        apply to root file systems only. Raises invalid for anything else."""

    @abc.abstractmethod
    def export_image(self, ref: str) -> AsyncIterator[bytes]:
        """The image as a ``docker save`` archive, in chunks."""

    @abc.abstractmethod
    async def remove_image(self, ref: str, *, force: bool = False) -> None:
        """Remove (untag) an image; a missing image is not an error. Refused (conflict)
        while a container uses it, unless ``force``."""

    @abc.abstractmethod
    async def commit(
        self,
        container: str,
        *,
        repository: str,
        tag: str = "latest",
        message: str | None = None,
    ) -> ImageInfo:
        """A new image from the container's file system. DM's own labels are blanked in the
        image, so containers made from it are not mistaken for the original instance."""

    @abc.abstractmethod
    async def list_images(self) -> builtins.list[ImageInfo]:
        """Every image (with its tags)."""

    @abc.abstractmethod
    async def list(self, *, all: bool = True, managed_only: bool = False) -> builtins.list[ContainerInfo]:
        """Containers (``all``: stopped ones too; ``managed_only``: only DM's)."""

    # -- files (Capabilities.file_copy)

    async def put_archive(self, container: str, path: str, chunks: AsyncIterator[bytes]) -> None:
        """Extract the tar read from ``chunks`` into the directory ``path`` (absolute, resolved
        inside the container), in chunks: never the whole archive in memory. Raises not_found
        (no such container or directory), invalid (not a tar, a file where a directory is)."""
        require(self.capabilities(), "file_copy", f"copy files into container {container}")
        raise UnsupportedError("copy files: not implemented by this driver (capability file_copy)")

    def get_archive(self, container: str, path: str) -> AsyncIterator[bytes]:
        """``path`` (a file or a folder, with everything under it) as a tar, in chunks of at most
        :data:`ARCHIVE_CHUNK` bytes; its members are named from ``path``'s last component.
        Raises not_found (no such container or path) when iterated."""
        return _refuse_archive(self, container)
