"""Image archives: telling a ``docker save`` archive from a root file system tar, then streaming it.

Only tar headers are read to decide (member contents are skipped, never kept); gzip, bzip2
and xz archives are read through incremental decompression, so neither a huge archive nor a
zip bomb lands in memory.

Nor on disk: the runtime would expand a compressed archive in full, so before it gets one its
expansion is measured (decompressed and counted, nothing kept) against :class:`ExpansionLimits`:
at most ``max_bytes`` in all, and at most ``max_ratio`` times the compressed size once past
``ratio_floor`` (small archives of zeros compress far better than any image). A file is measured
before it is handed on; a stream is measured as it flows and cut off at the limit.

Public API::

    prepared = await prepare_image_tar("/tmp/image.tar")        # or an async stream of bytes
    prepared.kind                                               # "save" or "rootfs"
    async for chunk in prepared.chunks(): ...                   # the whole archive, once
"""

from __future__ import annotations

import asyncio
import builtins
import bz2
import contextlib
import lzma
import os
import re
import tempfile
import zlib
from collections.abc import AsyncIterable, AsyncIterator
from typing import IO, Literal, TypeAlias

from agent.runtime.errors import InvalidError
from agent.runtime.expansion import (
    CHUNK_SIZE,
    DEFAULT_EXPANSION,
    ExpansionGuard,
    ExpansionLimits,
    check_expansion,
    compression_of,
    guarded,
)

__all__ = ["CHUNK_SIZE", "DEFAULT_EXPANSION", "ExpansionGuard", "ExpansionLimits", "ImageSource", "ImageTarSniffer",
           "PreparedImageTar", "TarKind", "check_expansion", "prepare_image_tar"]

ImageSource: TypeAlias = "str | os.PathLike[str] | AsyncIterable[bytes]"

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
            self.compression = compression_of(head)
            if head.startswith(b"\x28\xb5\x2f\xfd"):
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
        limits: ExpansionLimits | None = None,
    ) -> None:
        self.kind: TarKind = kind
        self.compression = compression
        self._limits = limits
        self._path = path
        self._head = head or []
        self._spool = spool
        self._rest = rest
        self._used = False

    def chunks(self) -> AsyncIterator[bytes]:
        """The whole archive, once; a compressed stream is measured as it flows (see ExpansionLimits)."""
        if self._path is None and self.compression is not None and self._limits is not None:
            return guarded(self._chunks(), self.compression, self._limits)
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
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


async def prepare_image_tar(source: ImageSource, *, spool_dir: str | None = None,
                            limits: ExpansionLimits | None = DEFAULT_EXPANSION) -> PreparedImageTar:
    """Find out what ``source`` (a path or an async stream of bytes) holds, reading only tar
    headers; raise :class:`InvalidError` when it is neither a save archive nor a rootfs tar.
    A compressed archive is held to ``limits`` (None: not measured; the caller did)."""
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        try:
            file_kind, compression = await asyncio.to_thread(_sniff_file, path)
        except OSError as exc:
            raise InvalidError(f"cannot read the image archive {path}: {exc.strerror or exc}") from exc
        if compression is not None and limits is not None:
            await check_expansion(path, limits)
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
    return PreparedImageTar(kind, head=head, spool=spool, rest=rest, compression=sniffer.compression, limits=limits)
