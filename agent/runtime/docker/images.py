"""The Docker driver's image calls: inspect, pull, import (save archive or root file system), export,
remove, commit."""

from __future__ import annotations

import builtins
import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import aiohttp

from agent.protocol.types import LABEL_INSTANCE, LABEL_MANAGED, LABEL_NODE, ImageInfo
from agent.runtime.docker.convert import image_info
from agent.runtime.docker.engine import STREAM_TIMEOUT, Engine, call, container_ref, engine_errors
from agent.runtime.driver import ProgressCallback, call_progress
from agent.runtime.errors import (
    ImageNotFoundError,
    InvalidError,
    PullFailedError,
    RuntimeFailedError,
)
from agent.runtime.image_tar import ImageSource, prepare_image_tar
from agent.runtime.refs import check_image_ref, check_repository, normalize_image_ref

__all__ = ["ImageCalls"]

log = logging.getLogger("agent.runtime.docker")

_EXPORT_CHUNK = 256 * 1024
# DM's labels are blanked (not removable: Docker merges a container's labels into a commit).
_BLANK_DM_LABELS = {LABEL_MANAGED: "", LABEL_INSTANCE: "", LABEL_NODE: ""}


class ImageCalls(Engine):
    """Images: list, inspect, pull, import, export, remove, commit."""

    async def list_images(self) -> builtins.list[ImageInfo]:
        docker = await self._client()
        with engine_errors("list images"):
            rows = await docker._query_json("images/json")
        return [image_info(row) for row in rows if isinstance(row, dict)]

    async def inspect_image(self, ref: str) -> ImageInfo | None:
        check_image_ref(ref)
        docker = await self._client()
        try:
            with engine_errors(f"inspect image {ref}", not_found=ImageNotFoundError.CODE):
                data = await docker._query_json(f"images/{ref}/json")
        except ImageNotFoundError:
            return None
        return image_info(data)

    async def _image_or_fail(self, ref: str, what: str) -> ImageInfo:
        info = await self.inspect_image(ref)
        if info is None:
            raise ImageNotFoundError(f"{what}: image {ref} is not there afterwards")
        return info

    async def pull(
        self,
        ref: str,
        *,
        auth: Mapping[str, str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> ImageInfo:
        check_image_ref(ref)
        what = f"pull {ref}"
        if auth and "/" not in ref:
            raise InvalidError(f"{what}: credentials need a reference that names its registry (host/name:tag)")
        docker = await self._client()
        try:
            with engine_errors(what, not_found=PullFailedError.CODE, stream_code=PullFailedError.CODE):
                stream = docker.images.pull(ref, auth=dict(auth) if auth else None, stream=True, timeout=None)
                async for message in stream:
                    if isinstance(message, dict):
                        await call_progress(progress, message)
        except RuntimeFailedError as exc:
            raise PullFailedError(exc.message) from None
        return await self._image_or_fail(normalize_image_ref(ref), what)

    async def import_image(
        self,
        source: ImageSource,
        *,
        repository: str | None = None,
        tag: str = "latest",
        changes: Sequence[str] | None = None,
    ) -> ImageInfo:
        if repository is not None:
            check_repository(repository, tag)
        prepared = await prepare_image_tar(source, spool_dir=self._spool_dir, limits=self._expansion)
        docker = await self._client()
        headers = {"Content-Type": "application/x-tar"}
        try:
            if prepared.kind == "rootfs":
                params: dict[str, Any] = {"fromSrc": "-"}
                if repository is not None:
                    params.update(repo=repository, tag=tag)
                if changes:
                    params["changes"] = "\n".join(changes)
                what = "import root file system"
                with engine_errors(what, stream_code=InvalidError.CODE):
                    async with self._stream(
                        docker,
                        "images/create",
                        "POST",
                        params=params,
                        data=prepared.chunks(),
                        headers=headers,
                        chunked=True,
                        timeout=STREAM_TIMEOUT,
                    ) as response:
                        messages = await self._read_json_stream(response, what)
                image_id = next(
                    (m["status"] for m in reversed(messages) if str(m.get("status", "")).startswith("sha256:")), None
                )
                if image_id is None:
                    raise RuntimeFailedError(f"{what}: the Docker Engine did not say which image it made")
                return await self._image_or_fail(f"{repository}:{tag}" if repository else image_id, what)
            what = "load image archive"
            with engine_errors(what, stream_code=InvalidError.CODE):
                async with self._stream(
                    docker,
                    "images/load",
                    "POST",
                    params={"quiet": True},
                    data=prepared.chunks(),
                    headers=headers,
                    chunked=True,
                    timeout=STREAM_TIMEOUT,
                ) as response:
                    messages = await self._read_json_stream(response, what)
        except RuntimeFailedError as exc:
            # A 500 while reading an archive is the archive's fault far more often than the engine's.
            raise InvalidError(exc.message) from None
        finally:
            await prepared.aclose()
        loaded: builtins.list[str] = []
        for message in messages:
            text = str(message.get("stream", "")).strip()
            for prefix in ("Loaded image: ", "Loaded image ID: "):
                if text.startswith(prefix):
                    loaded.append(text[len(prefix) :].strip())
        if not loaded:
            raise InvalidError(f"{what}: the archive held no image")
        if len(loaded) > 1 and repository is not None:
            log.warning("the image archive held %d images; tagging the first as %s:%s", len(loaded), repository, tag)
        if repository is None:
            return await self._image_or_fail(loaded[0], what)
        with engine_errors(f"tag {loaded[0]} as {repository}:{tag}", not_found=ImageNotFoundError.CODE):
            await call(docker, f"images/{loaded[0]}/tag", "POST", params={"repo": repository, "tag": tag})
        return await self._image_or_fail(f"{repository}:{tag}", what)

    @staticmethod
    async def _read_json_stream(response: aiohttp.ClientResponse, what: str) -> builtins.list[dict[str, Any]]:
        messages: builtins.list[dict[str, Any]] = []
        while line := await response.content.readline():
            line = line.strip()
            if not line:
                continue
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if not isinstance(data, dict):
                continue
            if data.get("error") or data.get("errorDetail"):
                detail = data.get("errorDetail") or {}
                message = (detail.get("message") if isinstance(detail, dict) else None) or data.get("error")
                raise InvalidError(f"{what}: {message}")
            messages.append(data)
        return messages

    async def export_image(self, ref: str) -> AsyncIterator[bytes]:
        check_image_ref(ref)
        if await self.inspect_image(ref) is None:
            raise ImageNotFoundError(f"no such image: {ref}")
        docker = await self._client()
        with engine_errors(f"export image {ref}", not_found=ImageNotFoundError.CODE):
            async with self._stream(docker, f"images/{ref}/get", "GET", timeout=STREAM_TIMEOUT) as response:
                async for chunk in response.content.iter_chunked(_EXPORT_CHUNK):
                    yield chunk

    async def remove_image(self, ref: str, *, force: bool = False) -> None:
        check_image_ref(ref)
        docker = await self._client()
        try:
            with engine_errors(f"remove image {ref}", not_found=ImageNotFoundError.CODE):
                await call(docker, f"images/{ref}", "DELETE", params={"force": bool(force)})
        except ImageNotFoundError:
            return

    async def commit(
        self,
        container: str,
        *,
        repository: str,
        tag: str = "latest",
        message: str | None = None,
    ) -> ImageInfo:
        ref = container_ref(container)
        check_repository(repository, tag)
        docker = await self._client()
        params: dict[str, Any] = {"container": ref, "repo": repository, "tag": tag, "pause": True}
        if message:
            params["comment"] = message
        what = f"commit container {container}"
        with engine_errors(what):
            data = await docker._query_json(
                "commit", "POST", params=params, data={"Labels": _BLANK_DM_LABELS}, timeout=STREAM_TIMEOUT
            )
        image_id = data.get("Id") if isinstance(data, dict) else None
        return await self._image_or_fail(str(image_id) if image_id else f"{repository}:{tag}", what)
