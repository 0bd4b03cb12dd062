"""SFTP (and OpenSSH's scp, which speaks SFTP) served from a container's file system by the agent.

The image needs no sftp-server: asyncssh's SFTP protocol runs in the agent, and every path is
resolved INSIDE the container's root by :mod:`agent.access.inroot` (``openat2`` with
``RESOLVE_IN_ROOT``): a symbolic link in the container that points at ``/etc`` reaches the
container's ``/etc``, never the host's. Only regular files and directories are opened.

Every file system call runs in a worker thread: a slow disk never stalls the agent's loop. For
root the threads are the loop's default ones; for another login they are threads of the session
that act as that user (:mod:`agent.access.fsuser`: its uid, gid and groups from the container's
``/etc/passwd`` and ``/etc/group``), so the kernel checks every access as it would for a
process of that user, and what it makes is that user's.

Public API::

    server = ContainerSftp(chan, context)   # the factory asyncssh calls per SFTP channel
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import posixpath
import stat
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncssh
from asyncssh import SFTPAttrs, SFTPName, SFTPVFSAttrs

from agent.access import fsuser
from agent.access.inroot import Root, clean_path

__all__ = ["ContainerSftp", "FsContext", "IdNames", "realpath_in_root"]

T = TypeVar("T")
MAX_READ = 1 << 20  # bytes per read request (asyncssh's own requests are 256 KiB at most)
MAX_LINKS = 40  # symbolic links followed by realpath, as the kernel's limit
DIR_BATCH = 512  # directory entries read per trip to the worker thread


@dataclass(frozen=True, slots=True)
class IdNames:
    """User and group names of the container (its /etc/passwd and /etc/group), for listings."""

    users: dict[int, str] = field(default_factory=dict)
    groups: dict[int, str] = field(default_factory=dict)

    def user(self, uid: int | None) -> str:
        return "" if uid is None else self.users.get(uid, str(uid))

    def group(self, gid: int | None) -> str:
        return "" if gid is None else self.groups.get(gid, str(gid))


@dataclass(frozen=True, slots=True)
class FsContext:
    """What an SFTP session needs of its instance: the root, where relative paths start, whose
    new files are, and the names of ids."""

    root: Root
    home: bytes = b"/"
    user: tuple[int, int, tuple[int, ...]] | None = None  # (uid, gid, groups) to act as; None: root
    names: IdNames = field(default_factory=IdNames)


def realpath_in_root(root: Root, path: bytes, cwd: bytes = b"/") -> bytes:
    """``path`` with its symbolic links resolved inside the root (what the client shows and
    uses as its working directory); a missing part ends the resolution (the rest is kept)."""
    pending = list(reversed(clean_path(path, cwd).split(b"/")))
    resolved = b"/"
    links = 0
    while pending:
        part = pending.pop()
        if part in (b"", b"."):
            continue
        if part == b"..":
            resolved = posixpath.dirname(resolved) or b"/"
            continue
        candidate = posixpath.join(resolved, part)
        try:
            info = root.lstat(candidate)
        except FileNotFoundError:
            resolved = candidate
            continue
        if not stat.S_ISLNK(info.st_mode):
            resolved = candidate
            continue
        links += 1
        if links > MAX_LINKS:
            raise OSError(errno.ELOOP, "too many levels of symbolic links")
        parent, name = root.parent(candidate)
        try:
            target = os.readlink(name, dir_fd=parent)
        finally:
            os.close(parent)
        if target.startswith(b"/"):
            resolved = b"/"
        pending.extend(reversed(target.split(b"/")))
    return resolved


class _File:
    """An open regular file of the container (its descriptor)."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd


class ContainerSftp(asyncssh.SFTPServer):
    """asyncssh's SFTP server on a container's root (see the module documentation)."""

    def __init__(self, chan: asyncssh.SSHServerChannel[Any], context: FsContext) -> None:
        super().__init__(chan)
        self._ctx = context
        self._root = context.root
        self._files: set[_File] = set()
        self._pool = None if context.user is None else fsuser.user_executor(*context.user)
        self._listings: set[tuple[int, Any]] = set()  # (directory fd, scandir iterator) still open

    # --- plumbing

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._pool is None:
            return await asyncio.to_thread(fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args))

    def _path(self, path: bytes) -> bytes:
        return clean_path(path, self._ctx.home)

    def _attrs(self, result: os.stat_result) -> SFTPAttrs:
        attrs = SFTPAttrs.from_local(result)
        attrs.owner = self._ctx.names.user(result.st_uid)
        attrs.group = self._ctx.names.group(result.st_gid)
        return attrs

    def format_user(self, uid: int | None) -> str:
        return self._ctx.names.user(uid)

    def format_group(self, gid: int | None) -> str:
        return self._ctx.names.group(gid)

    # --- paths

    async def realpath(self, path: bytes) -> bytes:
        return await self._run(realpath_in_root, self._root, path, self._ctx.home)

    async def stat(self, path: bytes) -> SFTPAttrs:
        def work() -> SFTPAttrs:
            return self._attrs(self._root.stat(self._path(path)))

        return await self._run(work)

    async def lstat(self, path: bytes) -> SFTPAttrs:
        def work() -> SFTPAttrs:
            return self._attrs(self._root.lstat(self._path(path)))

        return await self._run(work)

    async def setstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        def work() -> None:
            fd = self._root.resolve(self._path(path))
            try:
                _apply_attrs(self._root.proc_path(fd), attrs, regular=stat.S_ISREG(os.stat(fd).st_mode))
            finally:
                os.close(fd)

        await self._run(work)

    def lsetstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        raise asyncssh.SFTPOpUnsupported("lsetstat is not supported")

    async def statvfs(self, path: bytes) -> SFTPVFSAttrs:
        def work() -> SFTPVFSAttrs:
            fd = self._root.resolve(self._path(path))
            try:
                return SFTPVFSAttrs.from_local(os.statvfs(fd))
            finally:
                os.close(fd)

        return await self._run(work)

    async def scandir(self, path: bytes) -> AsyncIterator[SFTPName]:
        def start() -> tuple[int, Iterator[os.DirEntry[str]]]:
            fd = self._root.open_dir(self._path(path))
            try:
                # The entries' stat() acts relative to this very descriptor: it stays open with them.
                return fd, os.scandir(fd)
            except BaseException:
                os.close(fd)
                raise

        def batch(entries: Any) -> list[SFTPName]:
            names: list[SFTPName] = []
            for entry in entries:
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:  # removed while listed
                    continue
                names.append(SFTPName(os.fsencode(entry.name), attrs=self._attrs(info)))
                if len(names) >= DIR_BATCH:
                    break
            return names

        def head() -> list[SFTPName]:
            fd = self._root.resolve(self._path(path))
            try:
                here = self._attrs(os.stat(fd))
            finally:
                os.close(fd)
            parent = self._attrs(self._root.stat(posixpath.dirname(self._path(path)) or b"/"))
            return [SFTPName(b".", attrs=here), SFTPName(b"..", attrs=parent)]

        first = await self._run(head)
        listing = await self._run(start)
        self._listings.add(listing)
        try:
            for name in first:
                yield name
            while names := await self._run(batch, listing[1]):
                for name in names:
                    yield name
        finally:
            if listing in self._listings:
                self._listings.discard(listing)
                await self._run(_close_listing, listing)

    async def mkdir(self, path: bytes, attrs: SFTPAttrs) -> None:
        mode = 0o777 if attrs.permissions is None else attrs.permissions & 0o7777

        def work() -> None:
            parent, name = self._root.parent(self._path(path))
            try:
                os.mkdir(name, mode, dir_fd=parent)
            finally:
                os.close(parent)

        await self._run(work)

    async def _by_name(self, path: bytes, action: Callable[[bytes, int], None]) -> None:
        def work() -> None:
            parent, name = self._root.parent(self._path(path))
            try:
                action(name, parent)
            finally:
                os.close(parent)

        await self._run(work)

    async def remove(self, path: bytes) -> None:
        await self._by_name(path, lambda name, parent: os.unlink(name, dir_fd=parent))

    async def rmdir(self, path: bytes) -> None:
        await self._by_name(path, lambda name, parent: os.rmdir(name, dir_fd=parent))

    async def readlink(self, path: bytes) -> bytes:
        result: list[bytes] = []
        await self._by_name(path, lambda name, parent: result.append(os.readlink(name, dir_fd=parent)))
        return result[0]

    async def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        if b"\x00" in oldpath or len(oldpath) > 4096:
            raise asyncssh.SFTPFailure("invalid link target")

        def make(name: bytes, parent: int) -> None:
            # The link's text is the container's business: it is only ever followed in the root.
            os.symlink(oldpath, name, dir_fd=parent)

        await self._by_name(newpath, make)

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPOpUnsupported("hard links are not supported")

    async def _rename(self, oldpath: bytes, newpath: bytes, *, replace: bool) -> None:
        def work() -> None:
            old_parent, old_name = self._root.parent(self._path(oldpath))
            try:
                new_parent, new_name = self._root.parent(self._path(newpath))
                try:
                    if not replace:  # SFTP v3 rename: never over an existing name
                        try:
                            os.stat(new_name, dir_fd=new_parent, follow_symlinks=False)
                        except FileNotFoundError:
                            pass
                        else:
                            raise asyncssh.SFTPFailure(f"{newpath.decode('utf-8', 'replace')} already exists")
                    os.rename(old_name, new_name, src_dir_fd=old_parent, dst_dir_fd=new_parent)
                finally:
                    os.close(new_parent)
            finally:
                os.close(old_parent)

        await self._run(work)

    async def rename(self, oldpath: bytes, newpath: bytes) -> None:
        await self._rename(oldpath, newpath, replace=False)

    async def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        await self._rename(oldpath, newpath, replace=True)

    # --- files

    async def open(self, path: bytes, pflags: int, attrs: SFTPAttrs) -> _File:
        if pflags & asyncssh.FXF_READ and pflags & asyncssh.FXF_WRITE:
            flags = os.O_RDWR
        elif pflags & asyncssh.FXF_WRITE:
            flags = os.O_WRONLY
        else:
            flags = os.O_RDONLY
        for bit, flag in ((asyncssh.FXF_APPEND, os.O_APPEND), (asyncssh.FXF_CREAT, os.O_CREAT),
                          (asyncssh.FXF_TRUNC, os.O_TRUNC), (asyncssh.FXF_EXCL, os.O_EXCL)):
            if pflags & bit:
                flags |= flag
        mode = 0o666 if attrs.permissions is None else attrs.permissions & 0o7777

        def work() -> _File:
            return _File(self._root.open_file(self._path(path), flags, mode))

        opened = await self._run(work)
        self._files.add(opened)
        return opened

    async def close(self, file_obj: object) -> None:
        assert isinstance(file_obj, _File)
        if file_obj in self._files:
            self._files.discard(file_obj)
            await self._run(os.close, file_obj.fd)

    async def read(self, file_obj: object, offset: int, size: int) -> bytes:
        assert isinstance(file_obj, _File)
        return await self._run(os.pread, file_obj.fd, min(size, MAX_READ), offset)

    async def write(self, file_obj: object, offset: int, data: bytes) -> int:
        assert isinstance(file_obj, _File)

        def work() -> int:
            view = memoryview(data)
            done = 0
            while done < len(view):
                done += os.pwrite(file_obj.fd, view[done:], offset + done)
            return done

        return await self._run(work)

    async def fstat(self, file_obj: object) -> SFTPAttrs:
        assert isinstance(file_obj, _File)

        def work() -> SFTPAttrs:
            return self._attrs(os.fstat(file_obj.fd))

        return await self._run(work)

    async def fsetstat(self, file_obj: object, attrs: SFTPAttrs) -> None:
        assert isinstance(file_obj, _File)
        await self._run(_apply_attrs, file_obj.fd, attrs, True)

    async def fstatvfs(self, file_obj: object) -> SFTPVFSAttrs:
        assert isinstance(file_obj, _File)

        def work() -> SFTPVFSAttrs:
            return SFTPVFSAttrs.from_local(os.statvfs(file_obj.fd))

        return await self._run(work)

    async def fsync(self, file_obj: object) -> None:
        assert isinstance(file_obj, _File)
        await self._run(os.fsync, file_obj.fd)

    async def exit(self) -> None:
        files, self._files = list(self._files), set()
        listings, self._listings = list(self._listings), set()

        def work() -> None:
            for opened in files:
                os.close(opened.fd)
            for listing in listings:
                _close_listing(listing)

        await self._run(work)
        if self._pool is not None:
            await asyncio.to_thread(self._pool.shutdown, True)


def _close_listing(listing: tuple[int, Any]) -> None:
    fd, entries = listing
    entries.close()
    os.close(fd)


def _apply_attrs(target: int | str, attrs: SFTPAttrs, regular: bool) -> None:
    """Set what ``attrs`` carries on an open descriptor or on the agent's own /proc/self/fd link."""
    if attrs.size is not None:
        if not regular:
            raise asyncssh.SFTPFailure("only a regular file has a size to set")
        os.truncate(target, attrs.size)
    if attrs.uid is not None and attrs.gid is not None:
        os.chown(target, attrs.uid, attrs.gid)
    if attrs.permissions is not None:
        os.chmod(target, stat.S_IMODE(attrs.permissions))
    if attrs.atime is not None and attrs.mtime is not None:
        os.utime(target, (attrs.atime, attrs.mtime))
