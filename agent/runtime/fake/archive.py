"""The fake driver's files: put_archive / get_archive on a small in-memory file system per
container (``FakeContainer.files``). Simple on purpose: archives are held in memory here; the
Docker driver streams them."""

from __future__ import annotations

import io
import posixpath
import tarfile
from collections.abc import AsyncIterator

from agent.runtime.driver import ARCHIVE_CHUNK, check_archive_path, require
from agent.runtime.errors import InvalidError, NotFoundError
from agent.runtime.fake.engine import FakeEngine

__all__ = ["ArchiveCalls"]


class ArchiveCalls(FakeEngine):
    async def put_archive(self, container: str, path: str, chunks: AsyncIterator[bytes]) -> None:
        await self._enter("put_archive", container, path)
        require(self._capabilities, "file_copy", f"copy files into container {container}")
        check_archive_path(path)
        files = self._get(container).files
        into = posixpath.normpath(path)
        if into not in files or files[into] is not None:
            raise NotFoundError(f"copy into {path} of container {container}: Could not find the directory")
        body = bytearray()
        async for chunk in chunks:
            body += chunk
        try:
            with tarfile.open(fileobj=io.BytesIO(bytes(body)), mode="r:") as archive:
                members = [(m, archive.extractfile(m).read() if m.isfile() else None)  # type: ignore[union-attr]
                           for m in archive.getmembers()]
        except tarfile.TarError as exc:
            raise InvalidError(f"copy into {path} of container {container}: not a tar archive: {exc}") from None
        for member, data in members:
            name = posixpath.normpath(member.name)
            if name.startswith(("/", "..")) or name == ".":
                continue  # the engine keeps every member inside the target; the fake drops strays
            target = posixpath.join(into, name)
            parent = posixpath.dirname(target)
            while parent not in files:
                files[parent] = None
                parent = posixpath.dirname(parent)
            if member.isdir():
                if files.get(target, None) is not None:
                    raise InvalidError(f"copy into {path}: cannot overwrite non-directory {target} with directory")
                files[target] = None
            elif member.isfile():
                if target in files and files[target] is None:
                    raise InvalidError(f"copy into {path}: cannot overwrite directory {target} with non-directory")
                files[target] = data or b""
        self._leave("put_archive")

    async def get_archive(self, container: str, path: str) -> AsyncIterator[bytes]:
        await self._enter("get_archive", container, path)
        require(self._capabilities, "file_copy", f"copy files out of container {container}")
        check_archive_path(path)
        files = self._get(container).files
        top = posixpath.normpath(path)
        if top not in files:
            raise NotFoundError(f"copy {path} out of container {container}: Could not find the file {path}")
        base = posixpath.basename(top) or "."
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w") as archive:
            for name in sorted(n for n in files if n == top or n.startswith(top.rstrip("/") + "/")):
                data = files[name]
                info = tarfile.TarInfo(base + name[len(top):])
                if data is None:
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    archive.addfile(info)
                else:
                    info.size, info.mode = len(data), 0o644
                    archive.addfile(info, io.BytesIO(data))
        self._leave("get_archive")
        body = out.getvalue()
        for start in range(0, len(body), ARCHIVE_CHUNK):
            yield body[start:start + ARCHIVE_CHUNK]
