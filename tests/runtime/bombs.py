"""Real gzip bombs: small files that expand to a tar of hundreds of MiB of zeros (issue 10, hole 10).

`write_gzip_bomb` streams the tar through one gzip member (nothing large in memory); `BOMB_EXPANDED`
is past the default ExpansionLimits' ratio floor, so the defaults refuse it."""

from __future__ import annotations

import io
import json
import tarfile
import zlib
from pathlib import Path

MIB = 1 << 20
BOMB_EXPANDED = 300 * MIB  # about 300 KiB compressed: a ratio near 1000
LAYER = "a" * 64


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 1_700_000_000
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def write_gzip_bomb(path: Path, expanded: int = BOMB_EXPANDED, *, save: bool = False, level: int = 9) -> int:
    """A gzip'd tar whose one big member is `expanded` bytes of zeros; `save`: shaped like a
    `docker save` archive (manifest.json first, then the layer). Returns the file's size."""
    comp = zlib.compressobj(level, zlib.DEFLATED, 31)
    with open(path, "wb") as out:
        if save:
            manifest = json.dumps([{"Config": f"{LAYER}.json", "RepoTags": None,
                                    "Layers": [f"{LAYER}/layer.tar"]}]).encode()
            buf = io.BytesIO(manifest + b"\0" * (-len(manifest) % 512))
            out.write(comp.compress(_header("manifest.json", len(manifest)) + buf.getvalue()))
        out.write(comp.compress(_header(f"{LAYER}/layer.tar" if save else "bin/zeros", expanded)))
        zeros = bytes(MIB)
        left = expanded
        while left:
            step = min(left, MIB)
            out.write(comp.compress(zeros[:step]))
            left -= step
        out.write(comp.compress(b"\0" * (-expanded % 512) + b"\0" * 1024))  # padding, end of archive
        out.write(comp.flush())
    return path.stat().st_size
