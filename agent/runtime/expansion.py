"""How far a compressed image archive may expand, measured without keeping what it expands to.

The runtime expands an imported archive in full (a 1 MB gzip bomb became 1 GiB on a node's disk
in 4 s), so before it gets one, the archive is decompressed and counted: at most
``max_bytes`` in all, and at most ``max_ratio`` times the compressed size once past
``ratio_floor`` (small archives of zeros compress far better than any image). A file is measured
before it is handed on; a stream is measured as it flows and cut off at the limit. Every member
of a multi-member gzip (bzip2, xz) stream counts: the runtime reads them all.
"""

from __future__ import annotations

import asyncio
import bz2
import contextlib
import lzma
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from agent.runtime.errors import InvalidError

__all__ = ["CHUNK_SIZE", "DEFAULT_EXPANSION", "ExpansionGuard", "ExpansionLimits", "check_expansion", "compression_of",
           "guarded"]

CHUNK_SIZE = 1024 * 1024
_INFLATE_STEP = 1024 * 1024  # decompress at most this much per step (no bombs in memory)


@dataclass(frozen=True, slots=True)
class ExpansionLimits:
    """How far a compressed image archive may expand (see the module's docstring)."""

    max_bytes: int = 64 * 1024**3
    max_ratio: float = 100.0
    ratio_floor: int = 256 * 1024 * 1024


DEFAULT_EXPANSION = ExpansionLimits()


def compression_of(head: bytes) -> str | None:
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh"):
        return "bzip2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    return None


class ExpansionGuard:
    """Counts what a compressed archive expands to as its bytes are fed; raises InvalidError at
    the first step past the limits. Memory stays at one decompression step. Every member of a
    multi-member gzip (bzip2, xz) stream counts: the runtime expands them all."""

    def __init__(self, kind: str, limits: ExpansionLimits) -> None:
        self.kind = kind
        self.limits = limits
        self._dec: Any = self._new()
        self._done = False  # past the last member (only trailing bytes follow)
        self.compressed = 0
        self.expanded = 0

    def _new(self) -> Any:
        if self.kind == "gzip":
            return zlib.decompressobj(wbits=47)
        return bz2.BZ2Decompressor() if self.kind == "bzip2" else lzma.LZMADecompressor()

    def feed(self, data: bytes) -> None:
        self.compressed += len(data)
        try:
            while data and not self._done:
                data = self._member(data)
        except (zlib.error, OSError, EOFError, lzma.LZMAError) as exc:
            raise InvalidError(f"the {self.kind} data of the archive is corrupt: {exc}") from exc

    def _member(self, data: bytes) -> bytes:
        """Feed the current member; returns the bytes after its end (the next member's)."""
        dec = self._dec
        if self.kind == "gzip":
            self._count(dec.decompress(data, _INFLATE_STEP))
            while dec.unconsumed_tail:
                self._count(dec.decompress(dec.unconsumed_tail, _INFLATE_STEP))
        else:
            self._count(dec.decompress(data, _INFLATE_STEP))
            while not dec.eof and not dec.needs_input:
                self._count(dec.decompress(b"", _INFLATE_STEP))
        if not dec.eof:
            return b""
        rest: bytes = dec.unused_data
        if rest.strip(b"\0"):
            self._dec = self._new()  # another member follows
            return rest
        self._done = True  # zero padding, or nothing
        return b""

    def _count(self, piece: bytes) -> None:
        self.expanded += len(piece)
        lim = self.limits
        if self.expanded > lim.max_bytes:
            raise InvalidError(
                f"the compressed image archive expands to more than {lim.max_bytes} bytes; refused (a decompression "
                "bomb?). If it is a real image, raise import_max_expanded_bytes in the node's agent config")
        if self.expanded > lim.ratio_floor and self.expanded > lim.max_ratio * max(self.compressed, 1):
            raise InvalidError(
                f"the compressed image archive expands more than {lim.max_ratio:g} times its size "
                f"({self.compressed} bytes became over {self.expanded}); refused (a decompression bomb?). If it is "
                "a real image, raise import_max_ratio in the node's agent config")


def _measure_file(path: str, limits: ExpansionLimits) -> None:
    with open(path, "rb") as fh:
        kind = compression_of(fh.read(6))
        if kind is None:
            return
        fh.seek(0)
        guard = ExpansionGuard(kind, limits)
        while chunk := fh.read(CHUNK_SIZE):
            guard.feed(chunk)


async def check_expansion(path: str, limits: ExpansionLimits = DEFAULT_EXPANSION) -> None:
    """Raise InvalidError when the compressed archive at `path` expands past `limits` (in a
    thread: decompressing takes a while). Plain tars pass at once."""
    try:
        await asyncio.to_thread(_measure_file, path, limits)
    except OSError as exc:
        raise InvalidError(f"cannot read the image archive {path}: {exc.strerror or exc}") from exc


async def guarded(chunks: AsyncIterator[bytes], kind: str, limits: ExpansionLimits) -> AsyncIterator[bytes]:
    """The stream as it is, stopped (InvalidError) once what it expands to passes the limits."""
    guard = ExpansionGuard(kind, limits)
    try:
        async for chunk in chunks:
            await asyncio.to_thread(guard.feed, chunk)
            yield chunk
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
