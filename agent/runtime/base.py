"""The container runtime driver interface: what the agent asks of Docker (and, later, others).

A driver turns DM's requests into one runtime's calls. Every driver keeps the same contract,
checked by one conformance suite (``tests/runtime/test_conformance.py``) that the Docker
driver passes against a real dockerd and the in-memory fake passes in milliseconds.

The contract, in short:

* Every container DM creates carries the labels ``dm.managed=1``, ``dm.instance=<id>`` and
  ``dm.node=<id>``. :meth:`RuntimeDriver.create` is idempotent by instance id: when a managed
  container with that instance id exists it is returned and no second one is made (this is how
  a lost "create" reply is detected). A name that is taken by another container is a
  ``conflict``. Containers without ``dm.managed=1`` are reported with ``managed=False`` and
  never adopted.
* ``start``/``stop`` are idempotent; ``remove`` of a missing container is not an error;
  ``inspect`` of a missing container is ``None``; every other call on a missing container
  raises ``not_found``.
* Failures are :class:`DriverError` with a short ``code`` (``not_found``, ``image_not_found``,
  ``conflict``, ``invalid``, ``unavailable``, ``pull_failed``, ``timeout``, ``runtime_error``)
  and the runtime's own message. No other exception escapes a driver (cancellation aside).
* DM, not the runtime, owns host ports (no ``PortBindings``/publishing at all), restarts
  (restart policy ``no``), GPU assignment (by device) and the image catalogue (``create``
  never pulls).

Public API::

    driver: RuntimeDriver = DockerDriver("unix:///var/run/docker.sock")   # or FakeDriver()
    info = await driver.create(ContainerSpec(instance_id=7, node_id=1, name="dm-7-web",
                                             image="debian:12", cpus=2, memory_mb=4096))
    await driver.start(info.id)
    async for line in driver.logs(info.id, tail=100): ...
    result = await driver.exec(info.id, ["id", "-u"])       # ExecResult(exit_code, stdout, stderr)
    async for event in driver.events(): ...                  # RuntimeEvent(action="die", ...)
    image = await driver.import_image("/tmp/rootfs.tar", repository="dm/base", tag="1")
"""

from __future__ import annotations

import abc
import asyncio
import builtins
import bz2
import contextlib
import lzma
import os
import re
import tempfile
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import IO, Any, ClassVar, Literal, TypeAlias

from agent.protocol.types import (
    CONTAINER_STATES,
    LABEL_INSTALLATION,
    LABEL_INSTANCE,
    LABEL_MANAGED,
    LABEL_NODE,
    RESERVED_LABELS,
    ContainerInfo,
    ContainerSpec,
    ContainerState,
    GpuRequest,
    GpuVendor,
    ImageInfo,
    is_image_ref,
)

__all__ = [
    "CONTAINER_STATES",
    "LABEL_INSTALLATION",
    "LABEL_INSTANCE",
    "LABEL_MANAGED",
    "LABEL_NODE",
    "MANAGED_ACTIONS",
    "RESERVED_LABELS",
    "ConflictError",
    "ContainerInfo",
    "ContainerSpec",
    "ContainerState",
    "DriverError",
    "DriverTimeoutError",
    "ExecResult",
    "GpuRequest",
    "GpuVendor",
    "ImageInfo",
    "ImageNotFoundError",
    "ImageSource",
    "ImageTarSniffer",
    "InvalidError",
    "NotFoundError",
    "PreparedImageTar",
    "ProgressCallback",
    "PullFailedError",
    "RuntimeDriver",
    "RuntimeEvent",
    "RuntimeFailedError",
    "TarKind",
    "UnavailableError",
    "error_for",
    "identity_labels",
    "is_ours",
    "labels_for",
    "normalize_image_ref",
    "ours_by_instance",
    "parse_time",
    "prepare_image_tar",
]

# --------------------------------------------------------------------------- labels

RestartPolicy = Literal["no", "on-failure", "always", "unless-stopped"]
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


def identity_labels(spec: ContainerSpec) -> dict[str, str]:
    """The labels that say a container is this spec's: its node and its DM installation."""
    out = {LABEL_NODE: str(spec.node_id)}
    installation = spec.labels.get(LABEL_INSTALLATION)
    if installation:
        out[LABEL_INSTALLATION] = installation
    return out


def labels_for(instance_id: int, node_id: int, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The labels of a DM container: the spec's own, then DM's ids (which win)."""
    labels = dict(extra or {})
    labels[LABEL_MANAGED] = "1"
    labels[LABEL_INSTANCE] = str(instance_id)
    labels[LABEL_NODE] = str(node_id)
    return labels


def is_ours(c: ContainerInfo, node_id: int, installation: str | None) -> bool:
    """A managed container of this node in this DM installation (before dmd has said which
    installation it is, ``installation`` is None and any installation's counts)."""
    if not c.managed or c.node_id != node_id:
        return False
    return installation is None or c.labels.get(LABEL_INSTALLATION) == installation


async def ours_by_instance(driver: RuntimeDriver, node_id: int,
                           installation: str | None) -> dict[int, ContainerInfo]:
    """This node's containers of this installation by instance id; a running one wins where an
    instance has several."""
    out: dict[int, ContainerInfo] = {}
    for c in await driver.list(all=True, managed_only=True):
        if c.instance_id is not None and is_ours(c, node_id, installation) and (
                c.instance_id not in out or c.state == "running"):
            out[c.instance_id] = c
    return out


def _label_int(labels: Mapping[str, str], key: str) -> int | None:
    value = labels.get(key)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


# --------------------------------------------------------------------------- errors


class DriverError(RuntimeError):
    """A runtime failure DM understands: a short ``code`` and the runtime's ``message``.

    Raise the subclasses (or :func:`error_for`), so that ``except NotFoundError`` works;
    code that only reports an error reads ``code`` and ``message``.
    """

    CODE: ClassVar[str] = "runtime_error"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class _CodedError(DriverError):
    def __init__(self, message: str) -> None:
        super().__init__(self.CODE, message)


class NotFoundError(_CodedError):
    """No such container."""

    CODE = "not_found"


class ImageNotFoundError(_CodedError):
    """No such image (``create`` never pulls)."""

    CODE = "image_not_found"


class ConflictError(_CodedError):
    """Name taken, container running, image in use, container not running for exec, ..."""

    CODE = "conflict"


class InvalidError(_CodedError):
    """The request is wrong (bad spec, bad archive, bad reference)."""

    CODE = "invalid"


class UnavailableError(_CodedError):
    """The runtime cannot be reached."""

    CODE = "unavailable"


class PullFailedError(_CodedError):
    """A registry pull failed (unreachable registry, denied, ...)."""

    CODE = "pull_failed"


class DriverTimeoutError(_CodedError):
    """The runtime did not answer or finish in time."""

    CODE = "timeout"


class RuntimeFailedError(_CodedError):
    """The runtime failed for a reason of its own (engine 5xx)."""

    CODE = "runtime_error"


_ERRORS: dict[str, type[_CodedError]] = {
    cls.CODE: cls
    for cls in (
        NotFoundError,
        ImageNotFoundError,
        ConflictError,
        InvalidError,
        UnavailableError,
        PullFailedError,
        DriverTimeoutError,
        RuntimeFailedError,
    )
}


def error_for(code: str, message: str) -> DriverError:
    """The :class:`DriverError` subclass for ``code`` (a plain DriverError for unknown codes)."""
    cls = _ERRORS.get(code)
    return cls(message) if cls is not None else DriverError(code, message)


# --------------------------------------------------------------------------- specs and results

def validate_spec(spec: ContainerSpec) -> None:
    """Raise :class:`InvalidError` for a spec no runtime should be given."""
    problems = spec.problems()
    if problems:
        raise InvalidError("; ".join(problems))


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


ProgressCallback: TypeAlias = Callable[[dict[str, Any]], Awaitable[None] | None]
ImageSource: TypeAlias = "str | os.PathLike[str] | AsyncIterable[bytes]"

DEFAULT_EXEC_OUTPUT_LIMIT = 16 * 1024 * 1024  # bytes per stream


# --------------------------------------------------------------------------- the interface


class RuntimeDriver(abc.ABC):
    """The calls the agent makes on a container runtime. All methods are coroutines or
    async iterators, raise only :class:`DriverError`, and are safe to call concurrently."""

    name: ClassVar[str] = "abstract"

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
    async def create(self, spec: ContainerSpec) -> ContainerInfo:
        """Create (not start) the container, or return the managed container that already
        has ``spec.instance_id`` on ``spec.node_id`` (and, when the spec carries one, the same
        ``dm.installation`` label: two DM installations may share an Engine and number their
        instances alike). Raises invalid, image_not_found, conflict (name taken)."""

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


# --------------------------------------------------------------------------- helpers for drivers

_TS_RE = re.compile(r"^(?P<base>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(?P<frac>\d+))?(?P<tz>Z|[+-]\d\d:?\d\d)?$")


def parse_time(value: object) -> datetime | None:
    """An engine timestamp (RFC 3339 with nanoseconds, or unix seconds) as an aware datetime;
    None for Docker's "never" (year 1) and for anything unreadable."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        if value <= 0:
            return None
        return datetime.fromtimestamp(value, UTC)
    if not isinstance(value, str):
        return None
    m = _TS_RE.match(value.strip())
    if m is None:
        return None
    frac = (m.group("frac") or "")[:6].ljust(6, "0")
    tz = m.group("tz") or "Z"
    tz = "+00:00" if tz == "Z" else tz
    try:
        parsed = datetime.fromisoformat(f"{m.group('base')}.{frac}{tz}")
    except ValueError:
        return None
    if parsed.year <= 1:
        return None
    return parsed.astimezone(UTC)


def normalize_image_ref(ref: str) -> str:
    """``busybox`` -> ``busybox:latest``; references with a tag or digest stay as they are."""
    last = ref.rsplit("/", 1)[-1]
    if ":" in last or "@" in last:
        return ref
    return f"{ref}:latest"


def container_labels(info: Mapping[str, str] | None) -> tuple[dict[str, str], bool, int | None, int | None]:
    """(labels, managed, instance_id, node_id) from a container's labels."""
    labels = dict(info or {})
    managed = labels.get(LABEL_MANAGED) == "1"
    if not managed:
        return labels, False, None, None
    return labels, True, _label_int(labels, LABEL_INSTANCE), _label_int(labels, LABEL_NODE)


async def call_progress(progress: ProgressCallback | None, message: dict[str, Any]) -> None:
    if progress is None:
        return
    result = progress(message)
    if result is not None:
        await result


# --------------------------------------------------------------------------- image archives

TarKind = Literal["save", "rootfs"]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX64_JSON = re.compile(r"^[0-9a-f]{64}\.json$")
_SAVE_MARKERS = ("manifest.json", "repositories")
_SAVE_SHAPED_TOP = ("blobs", "index.json", "oci-layout")
_MAX_META_MEMBER = 1024 * 1024  # GNU long names and pax headers we read
_INFLATE_STEP = 1024 * 1024  # decompress at most this much per step (no zip bombs in memory)


class _Decompressor:
    """One of zlib (gzip), bz2, lzma behind one incremental interface."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._zlib = zlib.decompressobj(wbits=47) if kind == "gzip" else None
        self._bz2 = bz2.BZ2Decompressor() if kind == "bzip2" else None
        self._lzma = lzma.LZMADecompressor() if kind == "xz" else None

    def decompress(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        try:
            if self._zlib is not None:
                chunk = self._zlib.decompress(data, _INFLATE_STEP)
                out.append(chunk)
                while self._zlib.unconsumed_tail:
                    out.append(self._zlib.decompress(self._zlib.unconsumed_tail, _INFLATE_STEP))
                return out
            dec = self._bz2 if self._bz2 is not None else self._lzma
            assert dec is not None
            if dec.eof:
                return out
            out.append(dec.decompress(data, _INFLATE_STEP))
            while not dec.eof and not dec.needs_input:
                out.append(dec.decompress(b"", _INFLATE_STEP))
            return out
        except (zlib.error, OSError, EOFError, lzma.LZMAError) as exc:
            raise InvalidError(f"the {self.kind} data of the archive is corrupt: {exc}") from exc


class ImageTarSniffer:
    """Tells a ``docker save`` archive from a root file system tar by reading tar headers only.

    Feed the archive's bytes in order; :meth:`feed` returns the kind as soon as it is
    certain (a top-level ``manifest.json`` or ``repositories`` means ``save``; any top-level
    member a save archive never has means ``rootfs``), else None. Member contents are skipped,
    never kept. :meth:`finish` decides at the end of the data or raises :class:`InvalidError`.
    Gzip, bzip2 and xz compressed archives are read through incremental decompression.
    """

    def __init__(self) -> None:
        self.kind: TarKind | None = None
        self.compression: str | None = None
        self._started = False
        self._decompressor: _Decompressor | None = None
        self._buf = bytearray()
        self._skip = 0  # bytes of member data (and padding) still to skip
        self._meta_left = 0  # bytes of a GNU long name / pax header still to collect
        self._meta_type = b""
        self._meta = bytearray()
        self._meta_pad = 0
        self._next_name: str | None = None
        self._members = 0
        self._ended = False
        self._first: str | None = None

    @property
    def skip_pending(self) -> int:
        """Member bytes the sniffer will skip next: a reader of an uncompressed file may seek
        past them and call :meth:`skipped`."""
        return self._skip if self._decompressor is None else 0

    def skipped(self, count: int) -> None:
        self._skip -= min(count, self._skip)

    def feed(self, data: bytes) -> TarKind | None:
        if self.kind is not None or self._ended or not data:
            return self.kind
        if not self._started:
            self._started = True
            head = bytes(data[:6])
            if head.startswith(b"\x1f\x8b"):
                self.compression = "gzip"
            elif head.startswith(b"BZh"):
                self.compression = "bzip2"
            elif head.startswith(b"\xfd7zXZ\x00"):
                self.compression = "xz"
            elif head.startswith(b"\x28\xb5\x2f\xfd"):
                raise InvalidError("zstd-compressed archives are not supported; send a plain, gzip, bzip2 or xz tar")
            if self.compression is not None:
                self._decompressor = _Decompressor(self.compression)
        if self._decompressor is not None:
            for piece in self._decompressor.decompress(bytes(data)):
                self._parse(piece)
                if self.kind is not None or self._ended:
                    break
        else:
            self._parse(data)
        return self.kind

    def finish(self) -> TarKind:
        """The kind, now that all the data was fed (raises InvalidError when neither)."""
        if self.kind is not None:
            return self.kind
        if not self._started:
            raise InvalidError("the image archive is empty")
        if self._members == 0:
            raise InvalidError("the data is not a tar archive (or it holds no files)")
        raise InvalidError(
            "the archive looks like a `docker save` archive but has no manifest.json or repositories "
            f"file (first member {self._first!r}); it is neither an image archive nor a root file system"
        )

    # -- tar parsing

    def _parse(self, data: bytes) -> None:
        view = memoryview(data)
        pos = 0
        while pos < len(view) and self.kind is None and not self._ended:
            if self._skip:
                step = min(self._skip, len(view) - pos)
                self._skip -= step
                pos += step
                continue
            if self._meta_left or self._meta_pad:
                if self._meta_left:
                    step = min(self._meta_left, len(view) - pos)
                    self._meta += view[pos : pos + step]
                    self._meta_left -= step
                    pos += step
                    if self._meta_left == 0:
                        self._finish_meta()
                    continue
                step = min(self._meta_pad, len(view) - pos)
                self._meta_pad -= step
                pos += step
                continue
            need = 512 - len(self._buf)
            take = min(need, len(view) - pos)
            self._buf += view[pos : pos + take]
            pos += take
            if len(self._buf) == 512:
                header = bytes(self._buf)
                self._buf.clear()
                self._header(header)

    def _header(self, block: bytes) -> None:
        if block == b"\0" * 512:
            self._ended = True
            return
        if not _checksum_ok(block):
            if self._members == 0:
                raise InvalidError("the data is not a tar archive (bad header checksum)")
            raise InvalidError(f"the tar archive is corrupt after {self._members} members (bad header checksum)")
        self._members += 1
        size = _tar_size(block[124:136])
        typeflag = block[156:157]
        padded = (size + 511) // 512 * 512
        if typeflag in (b"L", b"x"):
            if size > _MAX_META_MEMBER:
                raise InvalidError("the tar archive has an oversized long-name header")
            self._meta_type = typeflag
            self._meta = bytearray()
            self._meta_left = size
            self._meta_pad = padded - size
            if size == 0:
                self._finish_meta()
            return
        if typeflag in (b"g", b"K"):
            self._skip = padded
            return
        name = self._next_name
        self._next_name = None
        if name is None:
            name = _cstr(block[0:100])
            if block[257:262] == b"ustar":
                prefix = _cstr(block[345:500])
                if prefix:
                    name = f"{prefix}/{name}"
        # Hard links, symlinks, devices and directories carry no data whatever the size says.
        has_data = typeflag in (b"0", b"\0", b"7", b"")
        self._skip = padded if has_data else 0
        self._classify(name)

    def _finish_meta(self) -> None:
        raw = bytes(self._meta)
        self._meta = bytearray()
        if self._meta_type == b"L":
            self._next_name = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
            return
        # pax: records "<len> key=value\n"
        pos = 0
        while pos < len(raw):
            space = raw.find(b" ", pos)
            if space < 0:
                break
            try:
                length = int(raw[pos:space])
            except ValueError:
                break
            if length <= 0:
                break
            record = raw[space + 1 : pos + length - 1]
            key, _, value = record.partition(b"=")
            if key == b"path":
                self._next_name = value.decode("utf-8", "replace")
            pos += length

    def _classify(self, name: str) -> None:
        path = name
        while path.startswith("./"):
            path = path[2:]
        path = path.strip("/")
        if path in ("", "."):
            return
        if self._first is None:
            self._first = path
        top = path.split("/", 1)[0]
        if path in _SAVE_MARKERS:
            self.kind = "save"
        elif not (_HEX64.match(top) or _HEX64_JSON.match(top) or top in _SAVE_SHAPED_TOP):
            self.kind = "rootfs"


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _tar_size(raw: bytes) -> int:
    if raw and raw[0] & 0x80:  # base-256 (GNU) for sizes over 8 GiB
        return int.from_bytes(bytes([raw[0] & 0x7F]) + raw[1:], "big")
    text = raw.split(b"\0", 1)[0].strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError as exc:
        raise InvalidError("the tar archive has a corrupt size field") from exc


def _checksum_ok(block: bytes) -> bool:
    text = block[148:156].split(b"\0", 1)[0].strip()
    try:
        stored = int(text, 8)
    except ValueError:
        return False
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    signed = sum((b - 256 if b > 127 else b) for b in block[:148]) + 8 * 32
    signed += sum((b - 256 if b > 127 else b) for b in block[156:])
    return stored in (unsigned, signed)


CHUNK_SIZE = 1024 * 1024
_MEMORY_SPOOL = 16 * 1024 * 1024  # beyond this, bytes read ahead of the decision go to a temporary file


class PreparedImageTar:
    """An image archive whose kind is known, ready to be streamed to the runtime exactly once.

    Bytes read ahead to decide the kind are replayed first (kept in memory up to 16 MiB,
    then in a temporary file), then the rest of the source follows without being kept.
    """

    def __init__(
        self,
        kind: TarKind,
        *,
        path: str | None = None,
        head: builtins.list[bytes] | None = None,
        spool: IO[bytes] | None = None,
        rest: AsyncIterator[bytes] | None = None,
        compression: str | None = None,
    ) -> None:
        self.kind: TarKind = kind
        self.compression = compression
        self._path = path
        self._head = head or []
        self._spool = spool
        self._rest = rest
        self._used = False

    async def chunks(self) -> AsyncIterator[bytes]:
        if self._used:
            raise InvalidError("the image archive was already sent")
        self._used = True
        try:
            if self._path is not None:
                fh = await asyncio.to_thread(open, self._path, "rb")
                try:
                    while chunk := await asyncio.to_thread(fh.read, CHUNK_SIZE):
                        yield chunk
                finally:
                    await asyncio.to_thread(fh.close)
                return
            for chunk in self._head:
                yield chunk
            self._head = []
            if self._spool is not None:
                await asyncio.to_thread(self._spool.seek, 0)
                while chunk := await asyncio.to_thread(self._spool.read, CHUNK_SIZE):
                    yield chunk
            if self._rest is not None:
                async for chunk in self._rest:
                    if chunk:
                        yield bytes(chunk)
        finally:
            await self.aclose()

    async def read_all(self, limit: int = 512 * 1024 * 1024) -> bytes:
        """The whole archive in memory (for the fake driver and small archives only)."""
        out = bytearray()
        async for chunk in self.chunks():
            out += chunk
            if len(out) > limit:
                raise InvalidError(f"the image archive is larger than {limit} bytes")
        return bytes(out)

    async def aclose(self) -> None:
        self._head = []
        spool, self._spool = self._spool, None
        if spool is not None:
            await asyncio.to_thread(spool.close)
        rest, self._rest = self._rest, None
        if rest is not None:
            aclose = getattr(rest, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()


def _sniff_file(path: str) -> tuple[TarKind, str | None]:
    sniffer = ImageTarSniffer()
    with open(path, "rb") as fh:
        while True:
            skip = sniffer.skip_pending
            if skip:
                fh.seek(skip, os.SEEK_CUR)
                sniffer.skipped(skip)
            chunk = fh.read(64 * 1024 if sniffer.compression else 512 * 8)
            if not chunk:
                return sniffer.finish(), sniffer.compression
            if sniffer.feed(chunk) is not None:
                return sniffer.finish(), sniffer.compression


async def prepare_image_tar(source: ImageSource, *, spool_dir: str | None = None) -> PreparedImageTar:
    """Find out what ``source`` (a path or an async stream of bytes) holds, reading only tar
    headers; raise :class:`InvalidError` when it is neither a save archive nor a rootfs tar."""
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        try:
            file_kind, compression = await asyncio.to_thread(_sniff_file, path)
        except OSError as exc:
            raise InvalidError(f"cannot read the image archive {path}: {exc.strerror or exc}") from exc
        return PreparedImageTar(file_kind, path=path, compression=compression)

    iterator = aiter(source)
    sniffer = ImageTarSniffer()
    head: builtins.list[bytes] = []
    held = 0
    spool: IO[bytes] | None = None
    decided: TarKind | None = None
    try:
        async for raw in iterator:
            if not raw:
                continue
            chunk = bytes(raw)
            if spool is None and held + len(chunk) <= _MEMORY_SPOOL:
                head.append(chunk)
                held += len(chunk)
            else:
                if spool is None:
                    new_spool: IO[bytes] = await asyncio.to_thread(tempfile.TemporaryFile, dir=spool_dir)
                    spool = new_spool
                    for part in head:
                        await asyncio.to_thread(new_spool.write, part)
                    head = []
                await asyncio.to_thread(spool.write, chunk)
            decided = sniffer.feed(chunk)
            if decided is not None:
                break
        rest: AsyncIterator[bytes] | None = iterator if decided is not None else None
        kind: TarKind = decided if decided is not None else sniffer.finish()
    except BaseException:
        if spool is not None:
            spool.close()
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
        raise
    return PreparedImageTar(kind, head=head, spool=spool, rest=rest, compression=sniffer.compression)


# --------------------------------------------------------------------------- references and locks

# A container name or id (with Docker's optional leading "/").
_CONTAINER_REF_RE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}$")
# An image reference as the Engine API accepts it in a URL path: [host[:port]/]path[:tag][@digest],
# or an id ("sha256:<hex>" or a hex prefix). Every path segment starts with a letter or digit, so
# ".." and the like can never reach the Engine's URL.
_REPOSITORY_RE = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]+)?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def is_container_ref(ref: object) -> bool:
    """Whether ``ref`` can name a container (an id, an id prefix or a name)."""
    return isinstance(ref, str) and bool(_CONTAINER_REF_RE.match(ref))


def check_image_ref(ref: object) -> str:
    """``ref`` when it is a well-formed image reference or id, else :class:`InvalidError`."""
    if not is_image_ref(ref):
        raise InvalidError(f"{ref!r} is not a valid image reference")
    return ref


def check_repository(repository: str, tag: str) -> None:
    """Raise :class:`InvalidError` unless ``repository:tag`` is a valid image name to tag with."""
    if not isinstance(repository, str) or len(repository) > 255 or not _REPOSITORY_RE.match(repository):
        raise InvalidError(
            f"{repository!r} is not a valid repository name (lower case letters, digits and . _ - separators, "
            "path components joined by /)"
        )
    if not isinstance(tag, str) or not _TAG_RE.match(tag):
        raise InvalidError(f"{tag!r} is not a valid tag")


class KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[object, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: object) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


def pick_instance_container(found: Sequence[ContainerInfo]) -> ContainerInfo | None:
    """The container to treat as an instance's when (wrongly) several carry its id:
    a running one first, then the newest."""
    if not found:
        return None

    def rank(info: ContainerInfo) -> tuple[int, float]:
        created = info.created_at.timestamp() if info.created_at else 0.0
        return (1 if info.state == "running" else 0, created)

    return max(found, key=rank)
