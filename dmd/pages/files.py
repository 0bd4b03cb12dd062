"""Files from the browser: upload one file into a running instance, download a file or a folder
(as tar), through a byte stream of kind "copy" to its agent (no port on the node, no copy held
in dmd: both ways go through in chunks).

* ``POST /instances/{id}/files?dir=/root&name=notes.txt`` — the body is the file itself
  (terminal.js sends it with ``fetch``: its exact size in Content-Length and the session's CSRF
  token in ``X-CSRF-Token``, checked by the identity middleware before the body is read). dmd
  wraps it into a one-member tar as it arrives (the tar header needs the size first: that is why
  the body is the raw file, not a multipart form) and the agent extracts it into ``dir``. At most
  ``file_upload_max_bytes`` (413 beyond, before anything is read); the name is one path component
  (no ``/``, no ``..``, no NUL). Answers JSON.
* ``GET /instances/{id}/files?path=/root/data`` — ``path`` as a tar (the Engine's archive:
  a folder with everything under it), streamed with Content-Disposition ``attachment``.

Who may: the users who may use the instance (its owner or an administrator), as for its terminal.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import tarfile
import time
import urllib.parse

from aiohttp import web

from agent import protocol as p
from dmd.errors import ApiError, BadRequest, NotFound, TooLarge
from dmd.pages.render import current_identity, dm_of, login_required, path_id
from dmd.pages.terminal import instance_stream, json_error
from dmd.usecases.streams import stream_failed

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

CHUNK = 64 * 1024
MAX_PATH = 4096
MAX_NAME = 255
BLOCK = tarfile.BLOCKSIZE


class LengthRequired(ApiError):
    status, code = 411, "length_required"


def container_path(value: str | None, what: str) -> str:
    """An absolute path in the container: normalised, no NUL, bounded."""
    if not value or not value.startswith("/") or "\0" in value or len(value) > MAX_PATH:
        raise BadRequest(f"{what} must be an absolute path in the instance (at most {MAX_PATH} characters)",
                         code="invalid", field=what)
    return posixpath.normpath(value).replace("//", "/")


def file_name(value: str | None) -> str:
    """The uploaded file's name: one path component, so the file lands in the chosen directory
    and nowhere else."""
    name = (value or "").strip()
    if (not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name
            or len(name.encode()) > MAX_NAME or not name.isprintable()):
        raise BadRequest("the file name must be one name (no '/', not '..', printable, at most 255 bytes)",
                         code="invalid", field="name")
    return name


def tar_header(name: str, size: int) -> bytes:
    """The header of a one-file tar (PAX: any UTF-8 name, any size), owned by root, mode 0644."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, int(time.time())
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


def tar_trailer(size: int) -> bytes:
    """The padding of the file's last block and the end-of-archive blocks."""
    return b"\0" * ((BLOCK - size % BLOCK) % BLOCK) + b"\0" * (2 * BLOCK)


@routes.post("/instances/{id}/files")
@login_required
async def upload(request: web.Request) -> web.StreamResponse:
    ident = current_identity(request)
    try:
        iid = path_id(request)
        if iid is None:  # malformed: no such instance, as every page says
            raise NotFound("no such instance")
        into = container_path(request.query.get("dir"), "dir")
        name = file_name(request.query.get("name"))
        size = request.content_length
        if size is None:
            raise LengthRequired("send the file with its Content-Length")
        limit = dm_of(request).config.file_upload_max_bytes
        if size > limit:
            raise TooLarge(f"the file is larger than the {limit} bytes an upload may have")
        async with contextlib.AsyncExitStack() as stack:
            stream = await stack.enter_async_context(
                instance_stream(request, ident, p.StreamOpen("copy", iid, copy=p.CopyParams("in", into)), "files"))
            session = stack.pop_all()
    except ApiError as e:
        return json_error(e)
    async with session:
        try:
            await stream.write(tar_header(name, size))
            sent = 0
            async for chunk in request.content.iter_chunked(CHUNK):
                sent += len(chunk)
                if sent > size:
                    break
                await stream.write(chunk)
            if sent != size:
                # The extraction sees a broken tar and fails (what it wrote so far may stay).
                await stream.close(p.StreamEnd("error", "the upload did not carry its Content-Length"))
                return json_error(BadRequest("the body's length is not its Content-Length", code="incomplete_body"))
            await stream.write(tar_trailer(size))
            await stream.write_eof()
            end = await stream.wait_closed()
        except p.StreamClosed:
            end = await stream.wait_closed()
    if end.code != "closed":
        return json_error(stream_failed(end, f"copy into {into}"))
    return web.json_response({"path": posixpath.join(into, name), "size": size})


def disposition(path: str) -> str:
    """``attachment`` named after the path's last component, plus .tar (RFC 6266: an ASCII
    fallback and the UTF-8 name)."""
    base = posixpath.basename(path.rstrip("/")) or "root"
    ascii_name = "".join(c if c.isascii() and c.isprintable() and c not in '"\\;' else "_" for c in base)
    return (f'attachment; filename="{ascii_name}.tar"; '
            f"filename*=UTF-8''{urllib.parse.quote(base + '.tar', safe='')}")


@routes.get("/instances/{id}/files")
@login_required
async def download(request: web.Request) -> web.StreamResponse:
    ident = current_identity(request)
    iid = path_id(request)
    if iid is None:  # malformed: no such instance, as every page says
        raise NotFound("no such instance")
    path = container_path(request.query.get("path"), "path")
    opening = p.StreamOpen("copy", iid, copy=p.CopyParams("out", path))
    async with instance_stream(request, ident, opening, "files") as stream:
        first = await stream.read()
        if not first:
            end = await stream.wait_closed()
            if end.code != "closed":
                raise stream_failed(end, f"copy {path} out")
        resp = web.StreamResponse(headers={
            "Content-Type": "application/x-tar", "Content-Disposition": disposition(path), "Cache-Control": "no-store",
        })
        await resp.prepare(request)
        chunk = first
        while chunk:
            await resp.write(chunk)
            chunk = await stream.read()
        if stream.end is not None and stream.end.code != "closed":
            # Too late for a status: cut the reply short, so the browser marks the download failed.
            log.warning("download of %s from instance %s broke off: %s %s", ascii(path[:200]), iid,
                        stream.end.code, stream.end.reason)
            if request.transport is not None:
                request.transport.close()
            return resp
        await resp.write_eof()
        return resp


def setup(app: web.Application) -> None:
    app.router.add_routes(routes)
