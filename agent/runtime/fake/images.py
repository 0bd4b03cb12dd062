"""The fake driver's image calls: pull from its fake registry, import, export (a real, small
`docker save` archive), remove, commit."""

from __future__ import annotations

import builtins
import hashlib
import io
import json
import secrets
import tarfile
from collections.abc import AsyncIterator, Mapping, Sequence

from agent.protocol.types import LABEL_INSTANCE, LABEL_MANAGED, LABEL_NODE, ImageInfo
from agent.runtime.driver import ProgressCallback, call_progress, require
from agent.runtime.errors import ConflictError, ImageNotFoundError, InvalidError, PullFailedError
from agent.runtime.fake.engine import FakeEngine
from agent.runtime.fake.records import FakeImage
from agent.runtime.image_tar import ImageSource, prepare_image_tar
from agent.runtime.refs import check_image_ref, check_repository, normalize_image_ref

__all__ = ["ImageCalls"]


class ImageCalls(FakeEngine):
    """Images in memory, a fake registry to pull from, real (tiny) save archives."""

    async def list_images(self) -> builtins.list[ImageInfo]:
        await self._enter("list_images")
        self._leave("list_images")
        return [image.info() for image in self._images.values()]

    async def inspect_image(self, ref: str) -> ImageInfo | None:
        await self._enter("inspect_image", ref)
        check_image_ref(ref)
        image = self._image(ref)
        self._leave("inspect_image")
        return image.info() if image is not None else None

    async def pull(
        self,
        ref: str,
        *,
        auth: Mapping[str, str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> ImageInfo:
        await self._enter("pull", ref)
        require(self._capabilities, "pull", f"pull {ref}")
        check_image_ref(ref)
        if auth and "/" not in ref:
            raise InvalidError(f"pull {ref}: credentials need a reference that names its registry (host/name:tag)")
        normalized = normalize_image_ref(ref)
        remote = self._remote.get(normalized)
        if remote is None:
            raise PullFailedError(
                f'pull {ref}: Get "https://{ref.split("/")[0]}/v2/": the fake registry has no such image'
            )
        name, _, tag = normalized.rpartition(":")
        layer = remote.id.removeprefix("sha256:")[:12]
        for message in (
            {"status": f"Pulling from {name}", "id": tag},
            {"status": "Pulling fs layer", "progressDetail": {}, "id": layer},
            {
                "status": "Downloading",
                "progressDetail": {"current": remote.size // 2, "total": remote.size},
                "id": layer,
            },
            {"status": "Download complete", "progressDetail": {}, "id": layer},
            {"status": "Pull complete", "progressDetail": {}, "id": layer},
            {"status": f"Digest: sha256:{hashlib.sha256(remote.id.encode()).hexdigest()}"},
            {"status": f"Status: Downloaded newer image for {normalized}"},
        ):
            await call_progress(progress, message)
        image = self._images.get(remote.id)
        if image is None:
            image = FakeImage(id=remote.id, tags=[], size=remote.size, labels=dict(remote.labels))
            self._images[image.id] = image
        self._tag(image, normalized)
        self._leave("pull")
        return image.info()

    async def import_image(
        self,
        source: ImageSource,
        *,
        repository: str | None = None,
        tag: str = "latest",
        changes: Sequence[str] | None = None,
    ) -> ImageInfo:
        await self._enter("import_image", repository, tag)
        require(self._capabilities, "image_import", "import image")
        if repository is not None:
            check_repository(repository, tag)
        prepared = await prepare_image_tar(source)
        data = await prepared.read_all()
        if prepared.kind == "rootfs":
            image = FakeImage(
                id="sha256:" + hashlib.sha256(data + secrets.token_bytes(8)).hexdigest(), tags=[], size=len(data)
            )
            image.cmd = []
            for change in changes or ():
                keyword, _, rest = change.strip().partition(" ")
                if keyword.upper() == "CMD":
                    try:
                        parsed = json.loads(rest)
                    except ValueError:
                        parsed = ["/bin/sh", "-c", rest]
                    image.cmd = [str(a) for a in parsed] if isinstance(parsed, list) else [str(parsed)]
                elif keyword.upper() == "LABEL" and "=" in rest:
                    key, _, value = rest.partition("=")
                    image.labels[key.strip()] = value.strip().strip('"')
            self._images[image.id] = image
        else:
            image = self._load(data)
        if repository is not None:
            self._tag(image, f"{repository}:{tag}")
        self._leave("import_image")
        return image.info()

    def _load(self, data: bytes) -> FakeImage:
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
                member = archive.extractfile("manifest.json")
                if member is None:
                    raise InvalidError("load image archive: manifest.json is not a file")
                manifest = json.loads(member.read())
                first = manifest[0]
                config_name = str(first["Config"])
                config_member = archive.extractfile(config_name)
                config = json.loads(config_member.read()) if config_member is not None else {}
        except KeyError as exc:
            raise InvalidError(
                f"load image archive: {exc.args[0]} is missing (only manifest.json archives load)"
            ) from None
        except (tarfile.TarError, ValueError, IndexError, TypeError) as exc:
            raise InvalidError(f"load image archive: {type(exc).__name__}: {exc}") from None
        image_id = "sha256:" + config_name.rsplit("/", 1)[-1].removesuffix(".json")
        image = self._images.get(image_id)
        if image is None:
            inner = config.get("config") or {}
            image = FakeImage(
                id=image_id,
                tags=[],
                size=len(data),
                labels=dict(inner.get("Labels") or {}),
                cmd=list(inner.get("Cmd") or []),
            )
            self._images[image.id] = image
        for ref in first.get("RepoTags") or []:
            self._tag(image, str(ref))
        return image

    async def export_image(self, ref: str) -> AsyncIterator[bytes]:
        await self._enter("export_image", ref)
        require(self._capabilities, "image_export", f"export image {ref}")
        check_image_ref(ref)
        image = self._image(ref)
        if image is None:
            raise ImageNotFoundError(f"export image {ref}: No such image: {ref}")
        self._leave("export_image")
        hex_id = image.id.removeprefix("sha256:")
        layer = hashlib.sha256(hex_id.encode()).hexdigest()
        config = {
            "architecture": "amd64",
            "os": "linux",
            "created": image.created.isoformat(),
            "config": {"Labels": image.labels, "Cmd": image.cmd},
        }
        tags = [t for t in image.tags if normalize_image_ref(ref) == t] or list(image.tags)
        manifest = [{"Config": f"{hex_id}.json", "RepoTags": tags, "Layers": [f"{layer}/layer.tar"]}]
        repositories: dict[str, dict[str, str]] = {}
        for t in tags:
            name, _, version = t.rpartition(":")
            repositories.setdefault(name, {})[version] = layer
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            empty_layer = io.BytesIO()
            with tarfile.open(fileobj=empty_layer, mode="w"):
                pass
            for name, payload in (
                (f"{layer}/layer.tar", empty_layer.getvalue()),
                (f"{hex_id}.json", json.dumps(config).encode()),
                ("manifest.json", json.dumps(manifest).encode()),
                ("repositories", json.dumps(repositories).encode()),
            ):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                info.mtime = 0
                archive.addfile(info, io.BytesIO(payload))
        data = buffer.getvalue()
        for start in range(0, len(data), 64 * 1024):
            yield data[start : start + 64 * 1024]

    async def remove_image(self, ref: str, *, force: bool = False) -> None:
        await self._enter("remove_image", ref)
        check_image_ref(ref)
        image = self._image(ref)
        if image is None:
            self._leave("remove_image")
            return
        by_tag = normalize_image_ref(ref) in image.tags
        users = [c for c in self._containers.values() if c.image_id == image.id]
        if by_tag and len(image.tags) > 1:
            image.tags.remove(normalize_image_ref(ref))
        elif users and not force:
            what = f'repository reference "{ref}"' if by_tag else image.id
            raise ConflictError(
                f"remove image {ref}: conflict: unable to remove {what} (must force) - "
                f"container {users[0].id[:12]} is using its referenced image {image.id[7:19]}"
            )
        elif not by_tag and len(image.tags) > 1 and not force:
            raise ConflictError(
                f"remove image {ref}: conflict: unable to delete {image.id[7:19]} (must be forced) - "
                "image is referenced in multiple repositories"
            )
        elif users:
            image.tags.clear()  # forced: untagged, kept for the containers that use it
        else:
            del self._images[image.id]
        self._leave("remove_image")

    async def commit(
        self,
        container: str,
        *,
        repository: str,
        tag: str = "latest",
        message: str | None = None,
    ) -> ImageInfo:
        await self._enter("commit", container, repository, tag)
        require(self._capabilities, "commit", f"commit container {container}")
        found = self._get(container)
        check_repository(repository, tag)
        labels = {**found.labels, LABEL_MANAGED: "", LABEL_INSTANCE: "", LABEL_NODE: ""}
        image = FakeImage(id="sha256:" + secrets.token_hex(32), tags=[], labels=labels, cmd=list(found.argv))
        self._images[image.id] = image
        self._tag(image, f"{repository}:{tag}")
        self._leave("commit")
        return image.info()
