"""Large transfers between dmd and agents (image imports, exports, node-to-node copies).

Tarballs do not travel over the agent's message link (1 MiB messages). Instead dmd offers a
one-time URL, `/agent/blobs/<token>`, bound to one node: that node's agent GETs a file dmd
holds, or PUTs one dmd waits for. The agent authenticates with its node credential, as on
its WebSocket; the agent still only ever dials out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import StreamReader, web

from dmd.db import Database
from dmd.queries import nodes as node_svc

log = logging.getLogger("dmd.blobs")
BLOB_PATH = "/agent/blobs/{token}"
CHUNK = 1 << 20


@dataclass
class Blob:
    node_id: int
    mode: str  # "get": the agent downloads path; "put": the agent uploads into path
    path: Path
    expires: float
    done: asyncio.Event = field(default_factory=asyncio.Event)
    size: int = 0
    error: str | None = None


class BlobStore:
    def __init__(self, directory: Path, db: Database) -> None:
        self.dir = directory
        self.db = db  # where node credentials are checked
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._blobs: dict[str, Blob] = {}
        for stale in self.dir.glob("*.tar"):  # left over from a crash
            stale.unlink(missing_ok=True)

    async def free_bytes(self) -> int:
        """Free space where uploads are spooled (a method of its own: tests stand in a full disk)."""
        return (await asyncio.to_thread(shutil.disk_usage, self.dir)).free

    def new_path(self) -> Path:
        return self.dir / f"{secrets.token_hex(12)}.tar"

    def offer(self, node_id: int, mode: str, path: Path, ttl_s: float = 3600) -> str:
        token = secrets.token_urlsafe(24)
        self._blobs[token] = Blob(node_id, mode, path, time.time() + ttl_s)
        return token

    def url_path(self, token: str) -> str:
        return BLOB_PATH.format(token=token)

    def get(self, token: str) -> Blob | None:
        blob = self._blobs.get(token)
        if blob is not None and blob.expires < time.time():
            self._blobs.pop(token, None)
            return None
        return blob

    def close(self, token: str) -> None:
        self._blobs.pop(token, None)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        blob = self.get(token)
        auth = request.headers.get("Authorization", "")
        scheme, _, credential = auth.partition(" ")
        node = None
        if scheme.lower() == "bearer" and credential:
            async with self.db.read() as conn:
                node = await node_svc.by_credential(conn, credential.strip())
        if node is None:
            raise web.HTTPUnauthorized(text="unknown node credential")
        if blob is None or blob.node_id != node.id:
            raise web.HTTPNotFound(text="no such transfer for this node")
        if request.method == "GET" and blob.mode == "get":
            return web.FileResponse(blob.path, headers={"Content-Type": "application/x-tar"})
        if request.method == "PUT" and blob.mode == "put":
            try:
                blob.size = await write_stream(request.content, blob.path)
            except Exception as e:
                blob.error = str(e)
                raise
            finally:
                blob.done.set()
            return web.json_response({"bytes": blob.size})
        raise web.HTTPMethodNotAllowed(request.method, ["GET" if blob.mode == "get" else "PUT"])


async def write_stream(stream: StreamReader, path: Path, limit: int | None = None) -> int:
    """Copy a request body to a file, the writes in a thread so the loop never blocks."""
    size = 0
    fd = await asyncio.to_thread(os.open, path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    f = os.fdopen(fd, "wb")
    try:
        while True:
            chunk = await stream.read(CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if limit is not None and size > limit:
                raise ValueError(f"larger than {limit} bytes")
            await asyncio.to_thread(f.write, chunk)
    finally:
        await asyncio.to_thread(f.close)
    return size


def discard(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()

