"""Build (once) and cache the local test images, through the Docker Engine API only.

No registry can be reached from the test machines, so the runtime tests use an image made
here: ``dm-test/busybox:latest``, a root file system holding Debian's static busybox (package
``busybox-static``) with its applets linked in, imported with ``POST /images/create?fromSrc=-``.
An image that exists already is kept (``--rebuild`` replaces it).

    python -m tests.runtime.images [--rebuild] [--docker-host unix:///var/run/docker.sock]

``scripts/test-images.sh`` installs busybox-static when it is missing and runs this.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import struct
import subprocess
import sys
import tarfile
import time

import aiodocker
import aiohttp

BUSYBOX_REF = "dm-test/busybox:latest"
BUSYBOX_BINARY = "/bin/busybox"
DEFAULT_HOST = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = "root:x:0:\ndaemon:x:1:\nvideo:x:44:\nrender:x:993:\nnogroup:x:65534:\n"


class BuildError(RuntimeError):
    """The image cannot be built here; the message says why and what to do."""


def is_static_elf(path: str) -> bool:
    """True for an ELF executable without a program interpreter (statically linked)."""
    with open(path, "rb") as fh:
        ident = fh.read(64)
        if ident[:4] != b"\x7fELF":
            return False
        is64 = ident[4] == 2
        endian = "<" if ident[5] == 1 else ">"
        if is64:
            (phoff,) = struct.unpack_from(endian + "Q", ident, 0x20)
            phentsize, phnum = struct.unpack_from(endian + "HH", ident, 0x36)
        else:
            (phoff,) = struct.unpack_from(endian + "I", ident, 0x1C)
            phentsize, phnum = struct.unpack_from(endian + "HH", ident, 0x2A)
        for i in range(phnum):
            fh.seek(phoff + i * phentsize)
            (p_type,) = struct.unpack(endian + "I", fh.read(4))
            if p_type == 3:  # PT_INTERP: needs a dynamic loader
                return False
    return True


def busybox_rootfs_tar(binary: str = BUSYBOX_BINARY) -> bytes:
    """A root file system tar: busybox, its applets as symlinks, /etc/passwd and /etc/group."""
    if not os.path.isfile(binary):
        raise BuildError(f"{binary} is missing: install Debian's busybox-static (apt-get install busybox-static)")
    if not is_static_elf(binary):
        raise BuildError(f"{binary} is not statically linked: install busybox-static instead of busybox")
    applets = subprocess.run(  # test tooling: the host's busybox lists its applets
        [binary, "--list-full"], check=True, capture_output=True, text=True, timeout=30
    ).stdout.split()
    buffer = io.BytesIO()
    now = int(time.time())

    def add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        info.mode = mode
        info.mtime = now
        tar.addfile(info)

    def add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = mode
        info.mtime = now
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "home", "dev", "proc", "sys", "var"):
            add_dir(tar, name, 0o700 if name == "root" else 0o755)
        add_dir(tar, "tmp", 0o1777)
        with open(binary, "rb") as fh:
            add_file(tar, "bin/busybox", fh.read(), 0o755)
        for applet in applets:
            applet = applet.strip("/")
            if applet in ("bin/busybox", "") or "/" not in applet:
                continue
            link = tarfile.TarInfo(applet)
            link.type = tarfile.SYMTYPE
            link.linkname = "/bin/busybox"
            link.mtime = now
            tar.addfile(link)
        add_file(tar, "etc/passwd", PASSWD.encode())
        add_file(tar, "etc/group", GROUP.encode())
    return buffer.getvalue()


async def _image_id(docker: aiodocker.Docker, ref: str) -> str | None:
    try:
        data = await docker.images.inspect(ref)
    except aiodocker.DockerError as exc:
        if exc.status == 404:
            return None
        raise
    return str(data["Id"])


async def ensure_busybox(docker_host: str = DEFAULT_HOST, *, rebuild: bool = False) -> str:
    """The id of ``dm-test/busybox:latest``, built first when it is missing."""
    timeout = aiohttp.ClientTimeout(total=120, sock_connect=10)
    try:
        docker = aiodocker.Docker(url=docker_host, timeout=timeout)
    except ValueError as exc:
        raise BuildError(f"cannot use Docker host {docker_host!r}: {exc}") from exc
    try:
        try:
            await docker.version()
        except (aiodocker.DockerError, aiohttp.ClientError, OSError) as exc:
            raise BuildError(
                f"the Docker Engine at {docker_host} is not reachable ({exc}); start it with scripts/ensure-services.sh"
            ) from exc
        if not rebuild:
            existing = await _image_id(docker, BUSYBOX_REF)
            if existing is not None:
                return existing
        rootfs = await asyncio.to_thread(busybox_rootfs_tar)
        repo, _, tag = BUSYBOX_REF.rpartition(":")
        params = {"fromSrc": "-", "repo": repo, "tag": tag, "changes": 'CMD ["/bin/sh"]'}
        async with docker._query(
            "images/create", "POST", params=params, data=rootfs, headers={"Content-Type": "application/x-tar"}
        ) as response:
            answer = await response.text()
        if '"error' in answer:
            raise BuildError(f"the Docker Engine refused the busybox root file system: {answer.strip()}")
        image_id = await _image_id(docker, BUSYBOX_REF)
        if image_id is None:
            raise BuildError(f"{BUSYBOX_REF} is missing right after it was imported: {answer.strip()}")
        return image_id
    finally:
        await docker.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rebuild", action="store_true", help="replace the image even when it exists")
    parser.add_argument("--docker-host", default=DEFAULT_HOST)
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        image_id = asyncio.run(ensure_busybox(args.docker_host, rebuild=args.rebuild))
    except BuildError as exc:
        print(f"test-images: FAILED: {exc}", file=sys.stderr)
        return 2
    print(f"test-images: {BUSYBOX_REF} {image_id} ({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
