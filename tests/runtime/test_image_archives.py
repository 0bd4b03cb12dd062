"""Telling a `docker save` archive from a root file system tar by its headers, while streaming."""

from __future__ import annotations

import asyncio
import bz2
import gzip
import io
import json
import lzma
import os
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.runtime.errors import InvalidError
from agent.runtime.image_tar import ImageTarSniffer, prepare_image_tar

HEX = "a" * 64


def make_tar(members: list[tuple[str, bytes | None]], fmt: int = tarfile.USTAR_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def save_archive(layer: bytes = b"x" * 3000) -> bytes:
    """The shape of Docker 20.10's `docker save`: layer folders first, manifest.json at the end."""
    return make_tar(
        [
            (f"{HEX}/", None),
            (f"{HEX}/VERSION", b"1.0"),
            (f"{HEX}/json", b"{}"),
            (f"{HEX}/layer.tar", layer),
            ("b" * 64 + ".json", b"{}"),
            ("manifest.json", json.dumps([{"Config": "b" * 64 + ".json"}]).encode()),
            ("repositories", b"{}"),
        ]
    )


def oci_archive() -> bytes:
    """Docker 25+ `docker save`: an OCI layout with index.json and manifest.json after the blobs."""
    return make_tar(
        [
            ("blobs/", None),
            ("blobs/sha256/", None),
            ("blobs/sha256/" + "c" * 64, b"layer"),
            ("index.json", b"{}"),
            ("manifest.json", b"[]"),
            ("oci-layout", b"{}"),
        ]
    )


def rootfs(first: str = "./") -> bytes:
    return make_tar([(first, None), ("./bin/", None), ("./bin/sh", b"\x7fELF"), ("./etc/hostname", b"x")])


def sniff(data: bytes, step: int = 100) -> str:
    sniffer = ImageTarSniffer()
    for start in range(0, len(data), step):
        if sniffer.feed(data[start : start + step]) is not None:
            break
    return sniffer.finish()


@pytest.mark.parametrize("step", [1, 7, 512, 100_000])
def test_kinds_in_any_chunking(step: int) -> None:
    assert sniff(save_archive(), step) == "save"
    assert sniff(oci_archive(), step) == "save"
    assert sniff(rootfs(), step) == "rootfs"


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lzma.compress])
def test_compressed(compress) -> None:
    assert sniff(compress(save_archive())) == "save"
    assert sniff(compress(rootfs())) == "rootfs"


def test_rootfs_is_decided_at_its_first_real_member() -> None:
    data = rootfs("bin/") + b"\0" * 10_000_000  # the rest is never looked at
    sniffer = ImageTarSniffer()
    assert sniffer.feed(data[:1024]) == "rootfs"


def test_long_names_gnu_and_pax() -> None:
    long_dir = HEX + "/" + "d" * 150
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        # A long name under a layer folder stays save-shaped; the manifest then decides.
        data = make_tar([(long_dir, b"x"), ("manifest.json", b"[]")], fmt)
        assert sniff(data) == "save"
        data = make_tar([("usr/" + "e" * 200, b"x")], fmt)
        assert sniff(data) == "rootfs"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello world, this is not an archive" * 40, "not a tar"),
        (b"\0" * 1024, "not a tar"),
        (make_tar([(f"{HEX}/layer.tar", b"abc")]), "neither"),
        (b"\x28\xb5\x2f\xfd" + b"\0" * 100, "zstd"),
        (gzip.compress(b"not a tar inside" * 100), "not a tar"),
        (b"\x1f\x8b" + b"garbage" * 50, "corrupt"),
    ],
)
def test_neither(data: bytes, message: str) -> None:
    with pytest.raises(InvalidError, match=message):
        sniff(data)


def test_corrupt_after_good_members() -> None:
    data = bytearray(make_tar([(f"{HEX}/", None), (f"{HEX}/json", b"{}"), ("manifest.json", b"[]")]))
    data[512 + 148 : 512 + 150] = b"99"  # the second header's checksum (a folder has no data blocks)
    with pytest.raises(InvalidError, match="corrupt"):
        sniff(bytes(data))


async def stream(data: bytes, size: int = 1 << 20) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_prepared_stream_replays_every_byte_through_a_spool() -> None:
    # 20 MiB before the manifest: more than is kept in memory, so a temporary file is used.
    data = save_archive(os.urandom(20 * 1024 * 1024))
    prepared = await prepare_image_tar(stream(data))
    assert prepared.kind == "save"
    assert prepared._spool is not None
    assert await prepared.read_all() == data
    with pytest.raises(InvalidError, match="already"):
        await prepared.read_all()


async def test_prepared_stream_rootfs_reads_ahead_only_a_little() -> None:
    data = rootfs() + b"\0" * (8 * 1024 * 1024)
    pulled = 0

    async def counting() -> AsyncIterator[bytes]:
        nonlocal pulled
        async for chunk in stream(data, 64 * 1024):
            pulled += len(chunk)
            yield chunk

    prepared = await prepare_image_tar(counting())
    assert prepared.kind == "rootfs"
    assert pulled == 64 * 1024
    assert await prepared.read_all() == data


async def test_prepared_file_seeks_past_member_data(tmp_path: Path) -> None:
    path = tmp_path / "save.tar"
    path.write_bytes(save_archive(b"y" * (5 * 1024 * 1024)))
    prepared = await prepare_image_tar(path)
    assert prepared.kind == "save"
    assert await prepared.read_all() == await asyncio.to_thread(path.read_bytes)
    with pytest.raises(InvalidError, match="cannot read"):
        await prepare_image_tar(tmp_path / "missing.tar")
