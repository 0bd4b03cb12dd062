"""Paths resolved inside a container's root file system from the host, never escaping it.

The agent runs on the host as root; a container's file system is ``/proc/PID/root``. A path
the container controls (a symbolic link ``/tmp/x -> /etc``, ``..`` past its root, a link
swapped in while a path is walked) must never reach the host's files. Every path is resolved
by the kernel with ``openat2(2)`` and ``RESOLVE_IN_ROOT`` on a directory descriptor of
``/proc/PID/root``: absolute links and ``..`` stop at the container's root, atomically with
the walk. ``RESOLVE_NO_MAGICLINKS`` refuses ``/proc/*/root``-style links (the container's
``/proc`` would otherwise lead out). Every operation then acts on the resulting descriptor or
relative to the descriptor of the parent directory (``*at`` calls with ``dir_fd``).

Only regular files and directories are opened for I/O: a device node made inside the
container (``mknod`` is allowed there, the device cgroup stops the container from opening it)
would be opened by the agent, outside that cgroup. :meth:`Root.open_file` looks at what a
path is through an ``O_PATH`` descriptor (which opens nothing) before it opens it.

All calls block (file systems can be slow): callers run them in a thread. Linux 5.6+ only
(``openat2``); :func:`available` says whether this kernel has it.

Public API::

    root = Root.of_pid(pid)                      # raises OSError
    fd = root.open_file("/etc/hostname", os.O_RDONLY)   # a regular file's fd, in the container
    parent, name = root.parent("/tmp/new")       # O_PATH fd of /tmp (in root) and "new"
    os.mkdir(name, dir_fd=parent); os.close(parent)
    root.close()
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import posixpath
import stat

__all__ = ["Root", "available", "clean_path"]

SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437, "arm64": 437}.get(platform.machine())
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
MAX_PATH = 4096


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def _openat2(dirfd: int, path: bytes, flags: int, mode: int = 0) -> int:
    if SYS_OPENAT2 is None:
        raise OSError(errno.ENOSYS, f"openat2 is not known on {platform.machine()}")
    how = _OpenHow(flags | os.O_CLOEXEC, mode if flags & os.O_CREAT else 0, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    while True:
        fd = _syscall(ctypes.c_long(SYS_OPENAT2), ctypes.c_int(dirfd), ctypes.c_char_p(path), ctypes.byref(how),
                      ctypes.c_size_t(ctypes.sizeof(how)))
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err == errno.EAGAIN:  # a rename raced the walk: the kernel asks to try again
            continue
        raise OSError(err, os.strerror(err), path.decode("utf-8", "replace"))


def available() -> bool:
    """Whether this kernel resolves paths with openat2 (Linux 5.6+)."""
    try:
        os.close(_openat2(os.open("/", os.O_PATH | os.O_CLOEXEC), b".", os.O_PATH))
    except OSError:
        return False
    return True


def clean_path(path: bytes | str, cwd: bytes = b"/") -> bytes:
    """An absolute, normalised path in the container (``..`` taken lexically, as OpenSSH's
    client shows paths); OSError(EINVAL) for a NUL or an overlong path."""
    raw = path.encode("utf-8", "surrogateescape") if isinstance(path, str) else bytes(path)
    if b"\x00" in raw or len(raw) > MAX_PATH:
        raise OSError(errno.EINVAL, "invalid path")
    return posixpath.normpath(posixpath.join(cwd, raw)).replace(b"//", b"/") or b"/"


class Root:
    """A container's root directory (an open descriptor of ``/proc/PID/root``)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def of_pid(cls, pid: int) -> Root:
        return cls(os.open(f"/proc/{int(pid)}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    # --- resolving

    def resolve(self, path: bytes, flags: int = os.O_PATH) -> int:
        """A descriptor of ``path`` (symbolic links followed, inside the root)."""
        return _openat2(self.fd, clean_path(path), flags)

    def parent(self, path: bytes) -> tuple[int, bytes]:
        """The parent directory of ``path`` (resolved in the root; an O_PATH descriptor the caller
        closes) and the last component, not followed: for mkdir, remove, rename, lstat, readlink."""
        clean = clean_path(path)
        head, name = posixpath.split(clean)
        if not name:  # the root itself has no parent entry to act on
            raise OSError(errno.EINVAL, "not a path with a name", clean.decode("utf-8", "replace"))
        return _openat2(self.fd, head or b"/", os.O_PATH | os.O_DIRECTORY), name

    def lstat(self, path: bytes) -> os.stat_result:
        clean = clean_path(path)
        if clean == b"/":
            return os.stat(self.fd)
        parent, name = self.parent(clean)
        try:
            return os.stat(name, dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(parent)

    def stat(self, path: bytes) -> os.stat_result:
        fd = self.resolve(path)
        try:
            return os.stat(fd)
        finally:
            os.close(fd)

    def exists(self, path: bytes) -> bool:
        try:
            self.stat(path)
        except OSError:
            return False
        return True

    def read_small(self, path: bytes, limit: int = 1 << 20) -> bytes:
        """A small regular file's first ``limit`` bytes (/etc/passwd and the like)."""
        fd = self.open_file(path, os.O_RDONLY)
        try:
            chunks = []
            left = limit
            while left > 0 and (chunk := os.read(fd, min(left, 65536))):
                chunks.append(chunk)
                left -= len(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    # --- opening

    def open_dir(self, path: bytes) -> int:
        """A readable descriptor of a directory (for listing)."""
        return self.resolve(path, os.O_RDONLY | os.O_DIRECTORY)

    def open_file(self, path: bytes, flags: int, mode: int = 0o644) -> int:
        """A descriptor of a REGULAR file opened with ``flags`` (O_CREAT, O_EXCL, O_TRUNC, O_APPEND
        honoured). Anything else (a device, a FIFO, a socket, a directory) is refused before it
        is opened: see the module documentation."""
        access = flags & (os.O_RDONLY | os.O_WRONLY | os.O_RDWR)
        extra = flags & (os.O_TRUNC | os.O_APPEND)
        for _ in range(8):  # a file made or removed under us: look again
            if flags & os.O_CREAT and flags & os.O_EXCL:
                return self._create(path, access | extra, mode)
            try:
                probe = self.resolve(path)
            except FileNotFoundError:
                if not flags & os.O_CREAT:
                    raise
                try:
                    return self._create(path, access | extra, mode)
                except FileExistsError:
                    continue
            try:
                kind = os.stat(probe).st_mode
                if stat.S_ISDIR(kind):
                    raise IsADirectoryError(errno.EISDIR, "is a directory", path.decode("utf-8", "replace"))
                if not stat.S_ISREG(kind):
                    raise PermissionError(errno.EACCES, "not a regular file", path.decode("utf-8", "replace"))
                # Re-open the very inode the O_PATH descriptor holds (our own fd's link: nothing of
                # the container's is followed here).
                return os.open(f"/proc/self/fd/{probe}", access | extra | os.O_CLOEXEC | os.O_NOCTTY)
            finally:
                os.close(probe)
        raise OSError(errno.EAGAIN, "the file kept changing", path.decode("utf-8", "replace"))

    def _create(self, path: bytes, flags: int, mode: int) -> int:
        # O_EXCL: never opens what exists (a device put there meanwhile), never follows a final link.
        return _openat2(self.fd, clean_path(path), flags | os.O_CREAT | os.O_EXCL | os.O_NOCTTY, mode & 0o7777)

    def proc_path(self, fd: int) -> str:
        """The agent's own link to an open descriptor, for calls that take only a path (chmod,
        chown, utime, truncate on what an O_PATH descriptor holds)."""
        return f"/proc/self/fd/{int(fd)}"
