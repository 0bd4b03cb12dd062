"""Build (once) and cache the local test images, through the Docker Engine API only.

No registry can be reached from the test machines, so the tests use images made here, each a
root file system imported with ``POST /images/create?fromSrc=-``:

* ``dm-test/busybox:latest``: Debian's static busybox (package ``busybox-static``) with its
  applets linked in.
* ``dm-test/openssh:bookworm``: a Debian bookworm ``debootstrap --variant=minbase`` with
  ``openssh-server``, for the SSH access tests. It holds no SSH host keys (the agent generates
  them, so every container gets its own). The root file system tarball is cached as
  ``/var/cache/dm-test/openssh-bookworm-rootfs.tar``, so a rebuild of the image does not
  bootstrap again (delete the tarball for a fresh bootstrap); a bootstrapped tree already in
  ``/var/cache/dm-test/openssh-root`` is used instead of a new debootstrap.

An image that exists already is kept (``--rebuild`` replaces it).

    python -m tests.runtime.images [--rebuild] [--only busybox|openssh] [--docker-host unix:///var/run/docker.sock]

``scripts/test-images.sh`` installs busybox-static and debootstrap when they are missing and
runs this.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator

import aiodocker
import aiohttp

BUSYBOX_REF = "dm-test/busybox:latest"
BUSYBOX_BINARY = "/bin/busybox"
DEFAULT_HOST = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")

OPENSSH_REF = "dm-test/openssh:bookworm"
CACHE_DIR = "/var/cache/dm-test"
OPENSSH_ROOTFS_TAR = f"{CACHE_DIR}/openssh-bookworm-rootfs.tar"
OPENSSH_ROOT_DIR = f"{CACHE_DIR}/openssh-root"  # a tree bootstrapped earlier (by hand or by us)
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBOOTSTRAP_TIMEOUT_S = 900

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


# --------------------------------------------------------------------------- openssh (Debian bookworm)

# Left out of the image: every container must generate its own host keys (the agent does), and
# the apt caches, documentation and device nodes only make the import slower.
_OPENSSH_DROP_PREFIXES = (
    "var/cache/apt/",
    "var/lib/apt/lists/",
    "usr/share/doc/",
    "usr/share/man/",
    "usr/share/info/",
    "usr/share/locale/",
    "dev/",
    "proc/",
    "sys/",
    "tmp/",
    "run/",
)


def _keep_member(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    name = info.name
    while name.startswith("./"):
        name = name[2:]
    if name.startswith("etc/ssh/ssh_host_"):
        return None
    if any(name.startswith(prefix) for prefix in _OPENSSH_DROP_PREFIXES):
        return None
    return info


def _bootstrapped(root: str) -> bool:
    return os.path.isfile(os.path.join(root, "usr/sbin/sshd")) and os.path.isfile(os.path.join(root, "bin/sh"))


def debootstrap_openssh(target: str) -> None:
    """``debootstrap --variant=minbase --include=openssh-server bookworm`` into ``target``."""
    if shutil.which("debootstrap") is None:
        raise BuildError("debootstrap is missing: apt-get install debootstrap (scripts/test-images.sh does)")
    if os.geteuid() != 0:
        raise BuildError("debootstrap needs root")
    print(f"test-images: bootstrapping Debian bookworm with openssh-server into {target}", file=sys.stderr)
    try:
        done = subprocess.run(  # test tooling: a one-time bootstrap of the test image's files
            ["debootstrap", "--variant=minbase", "--include=openssh-server", "bookworm", target, DEBIAN_MIRROR],
            capture_output=True, text=True, timeout=DEBOOTSTRAP_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"debootstrap did not finish within {DEBOOTSTRAP_TIMEOUT_S} s") from exc
    if done.returncode != 0 or not _bootstrapped(target):
        tail = (done.stdout + done.stderr)[-3000:]
        raise BuildError(f"debootstrap failed (exit {done.returncode}); is {DEBIAN_MIRROR} reachable?\n{tail}")


def openssh_rootfs_tar(cache: str = OPENSSH_ROOTFS_TAR, tree: str = OPENSSH_ROOT_DIR) -> str:
    """The path of the cached root file system tarball, made first when it is missing: from the
    bootstrapped ``tree`` when there is one, else from a fresh debootstrap (removed afterwards)."""
    if os.path.isfile(cache):
        return cache
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    scratch: str | None = None
    try:
        if _bootstrapped(tree):
            root = tree
        else:
            scratch = tempfile.mkdtemp(prefix="openssh-root.", dir=os.path.dirname(cache))
            root = os.path.join(scratch, "root")
            debootstrap_openssh(root)
        partial = f"{cache}.partial"
        # Written aside and renamed, so an interrupted run never leaves a truncated cache.
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            for entry in sorted(os.listdir(root)):
                tar.add(os.path.join(root, entry), arcname=entry, filter=_keep_member)
        os.replace(partial, cache)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return cache


async def _file_chunks(path: str, size: int = 1 << 20) -> AsyncIterator[bytes]:
    fh = await asyncio.to_thread(open, path, "rb")
    try:
        while chunk := await asyncio.to_thread(fh.read, size):
            yield chunk
    finally:
        await asyncio.to_thread(fh.close)


# --------------------------------------------------------------------------- import


async def _connect(docker_host: str, total_s: float) -> aiodocker.Docker:
    timeout = aiohttp.ClientTimeout(total=total_s, sock_connect=10)
    try:
        docker = aiodocker.Docker(url=docker_host, timeout=timeout)
    except ValueError as exc:
        raise BuildError(f"cannot use Docker host {docker_host!r}: {exc}") from exc
    try:
        await docker.version()
    except (aiodocker.DockerError, aiohttp.ClientError, OSError) as exc:
        await docker.close()
        raise BuildError(
            f"the Docker Engine at {docker_host} is not reachable ({exc}); start it with scripts/ensure-services.sh"
        ) from exc
    return docker


async def _import_rootfs(docker: aiodocker.Docker, ref: str, data: bytes | AsyncIterator[bytes], cmd: str) -> str:
    repo, _, tag = ref.rpartition(":")
    params = {"fromSrc": "-", "repo": repo, "tag": tag, "changes": f"CMD {cmd}"}
    async with docker._query(
        "images/create", "POST", params=params, data=data, headers={"Content-Type": "application/x-tar"}
    ) as response:
        answer = await response.text()
    if '"error' in answer:
        raise BuildError(f"the Docker Engine refused the root file system of {ref}: {answer.strip()}")
    image_id = await _image_id(docker, ref)
    if image_id is None:
        raise BuildError(f"{ref} is missing right after it was imported: {answer.strip()}")
    return image_id


async def ensure_busybox(docker_host: str = DEFAULT_HOST, *, rebuild: bool = False) -> str:
    """The id of ``dm-test/busybox:latest``, built first when it is missing."""
    docker = await _connect(docker_host, 120)
    try:
        if not rebuild:
            existing = await _image_id(docker, BUSYBOX_REF)
            if existing is not None:
                return existing
        rootfs = await asyncio.to_thread(busybox_rootfs_tar)
        return await _import_rootfs(docker, BUSYBOX_REF, rootfs, '["/bin/sh"]')
    finally:
        await docker.close()


async def ensure_openssh(docker_host: str = DEFAULT_HOST, *, rebuild: bool = False) -> str:
    """The id of ``dm-test/openssh:bookworm``, built first when it is missing (from the cached
    root file system tarball, bootstrapped first when that is missing too)."""
    docker = await _connect(docker_host, 900)
    try:
        if not rebuild:
            existing = await _image_id(docker, OPENSSH_REF)
            if existing is not None:
                return existing
        path = await asyncio.to_thread(openssh_rootfs_tar)
        return await _import_rootfs(docker, OPENSSH_REF, _file_chunks(path), '["/bin/bash"]')
    finally:
        await docker.close()


IMAGES = {"busybox": (BUSYBOX_REF, ensure_busybox), "openssh": (OPENSSH_REF, ensure_openssh)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rebuild", action="store_true", help="replace the image even when it exists")
    parser.add_argument("--only", choices=sorted(IMAGES), action="append", help="build only this image")
    parser.add_argument("--docker-host", default=DEFAULT_HOST)
    args = parser.parse_args(argv)
    for name in args.only or list(IMAGES):
        ref, ensure = IMAGES[name]
        started = time.monotonic()
        try:
            image_id = asyncio.run(ensure(args.docker_host, rebuild=args.rebuild))
        except BuildError as exc:
            print(f"test-images: FAILED: {exc}", file=sys.stderr)
            return 2
        print(f"test-images: {ref} {image_id} ({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
