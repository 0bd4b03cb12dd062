"""The agent's instance and image commands: dmd's requests turned into runtime driver calls.

Every command is idempotent and keyed by DM's instance id (a container label), so dmd can
repeat any of them after a lost reply or a restart of either side. The state snapshot in
each hello lists every container (managed or not) and every image; container lifecycle
events are forwarded as they happen.

Public API::

    link, workloads = make_link(config)          # composed: driver, features, handlers, link
    status = await run_link(link, workloads)     # until stopped; events and features run meanwhile
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import logging
import lzma
import os
import shutil
import tarfile
import tempfile
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp

from agent import protocol as p
from agent.config import AgentConfig
from agent.features import Feature
from agent.handlers import BAD_REQUEST, HandlerError, HandlerRegistry
from agent.protocol.types import ContainerInfo
from agent.runtime.driver import RuntimeDriver
from agent.runtime.errors import DriverError, InvalidError, RuntimeFailedError
from agent.runtime.image_tar import check_expansion, prepare_image_tar
from agent.runtime.ownership import is_ours, ours_by_instance

if TYPE_CHECKING:
    from agent.link import AgentLink

log = logging.getLogger(__name__)
TRANSFER_TIMEOUT_S = 3600.0
TRANSFER_CHUNK = 1 << 20
PROGRESS_EVERY_S = 0.1  # a pull's byte counts, sent at most this often
F = TypeVar("F", bound=Feature)


def _ts(line: str) -> tuple[float | None, str]:
    """Split Docker's RFC 3339 timestamp prefix off a log line."""
    stamp, sep, rest = line.partition(" ")
    if not sep:
        return None, line
    try:
        # Docker gives nanoseconds; Python takes microseconds.
        head, _, frac = stamp.rstrip("Z").partition(".")
        when = dt.datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00")
    except ValueError:
        return None, line
    return when.timestamp(), rest



_NAME_ANNOTATIONS = ("org.opencontainers.image.ref.name", "io.containerd.image.name")


def _without_names(src: str, dst: str) -> None:
    """Copy a `docker save` archive (any compression) to an uncompressed tar without the image
    names written inside it: RepoTags in manifest.json, the legacy `repositories` file, and the
    name annotations of an OCI index.json. The caller tags the loaded image itself."""

    def unnamed(name: str, raw: bytes) -> bytes:
        try:
            doc = json.loads(raw)
        except ValueError:
            return raw  # left for the runtime to refuse with its own message
        if name == "repositories":
            return b"{}"
        if name == "manifest.json" and isinstance(doc, list):
            for entry in doc:
                if isinstance(entry, dict):
                    entry["RepoTags"] = None
        elif name == "index.json" and isinstance(doc, dict):
            for entry in doc.get("manifests") or []:
                annotations = entry.get("annotations") if isinstance(entry, dict) else None
                if isinstance(annotations, dict):
                    for key in _NAME_ANNOTATIONS:
                        annotations.pop(key, None)
        else:
            return raw
        return json.dumps(doc).encode()

    try:
        with tarfile.open(src, "r:*") as tin, tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) as tout:
            for member in tin:
                name = member.name
                while name.startswith("./"):
                    name = name[2:]
                body = tin.extractfile(member) if member.isfile() else None
                if body is not None and name in ("manifest.json", "index.json", "repositories"):
                    raw = unnamed(name, body.read(16 << 20))
                    member.size = len(raw)
                    body = io.BytesIO(raw)
                tout.addfile(member, body)
    except OSError as e:
        if e.errno is not None:  # the agent's disk, not the archive
            raise RuntimeFailedError(f"load image archive: cannot unpack it here: {e}") from None
        raise InvalidError(f"load image archive: the archive is corrupt: {e}") from None  # bad gzip/bzip2 data
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as e:
        raise InvalidError(f"load image archive: the archive is corrupt: {e}") from None


class Workloads:
    """The instance and image requests, the state snapshot, the runtime's events, and the
    features (ports, SSH, ...) that follow the containers."""

    def __init__(self, driver: RuntimeDriver, config: Callable[[], AgentConfig],
                 installation: Callable[[], str | None] = lambda: None,
                 features: Sequence[Feature] = ()) -> None:
        self.driver = driver
        self._config = config
        self._installation = installation
        self.features = list(features)

    def feature(self, cls: type[F]) -> F:
        """The feature of that class (tests and the composition look them up by type)."""
        for f in self.features:
            if isinstance(f, cls):
                return f
        raise LookupError(f"no {cls.__name__} feature")

    def _ours(self, c: ContainerInfo) -> bool:
        return is_ours(c, self._config().node_id, self._installation())

    def register(self, registry: HandlerRegistry) -> None:
        for kind, handler in (
            (p.InstanceEnsure, self.ensure),
            (p.InstanceRemove, self.remove),
            (p.InstanceRestart, self.restart),
            (p.InstanceInspect, self.inspect),
            (p.InstanceLogs, self.logs),
            (p.InstanceSync, self.sync),
            (p.ContainersList, self.containers),
            (p.ImagesList, self.images),
            (p.ImagePull, self.pull),
            (p.ImageImport, self.import_image),
            (p.ImageExport, self.export_image),
            (p.ImageRemove, self.remove_image),
            (p.ImageCommit, self.commit),
        ):
            registry.register(kind, self._translated(handler))
        inner = HandlerRegistry()
        for f in self.features:
            f.register(inner)
        for type_ in inner:
            entry = inner.entry(type_)
            assert entry is not None and entry.request is not None
            registry.register(entry.request, self._translated(entry.handler), timeout_s=entry.timeout_s)

    @staticmethod
    def _translated(handler: Callable[[Any], Awaitable[Any]]) -> Callable[[Any], Awaitable[Any]]:
        async def call(req: Any) -> Any:
            try:
                return await handler(req)
            except DriverError as e:
                raise HandlerError(e.code, e.message) from None

        return call

    async def snapshot(self) -> p.Snapshot:
        extra: dict[str, Any] = {}
        for f in self.features:
            extra.update(await f.report())
        listening = extra.get("listening")
        heard = p.Listening(**listening) if isinstance(listening, dict) else None
        try:
            containers = await self.driver.list(all=True)
            images = await self.driver.list_images()
        except DriverError as e:
            log.warning("cannot read the runtime's state: %s", e)
            return p.Snapshot(runtime_error=e.message, listening=heard)
        return p.Snapshot(containers=containers, images=images, listening=heard)

    async def facts(self) -> dict[str, Any]:
        """The host's facts, with what each feature adds (the port pools and the forwarding mode) and
        what the runtime driver can do (dmd refuses the rest before it asks)."""
        from agent.docker_info import node_facts

        config = self._config()
        facts = await node_facts(config.docker_host, public_address=config.public_address)
        for f in self.features:
            facts.update(f.facts())
        facts["capabilities"] = self.driver.capabilities().to_dict()
        return facts

    async def forward_events(self, link: AgentLink) -> None:
        """Send container lifecycle events to dmd while the agent runs (re-subscribing on errors);
        the features hear of them first (a started container has a new address, no sshd)."""
        while True:
            try:
                async for ev in self.driver.events():
                    if ev.node_id != self._config().node_id:
                        continue  # another node's container on a shared Engine
                    if ev.action in ("start", "restart", "die", "stop", "destroy"):
                        for f in self.features:
                            f.container_changed(ev.instance_id, ev.action)
                    await link.send_event(p.ContainerEvent(
                        instance_id=ev.instance_id, container_id=ev.container_id, action=ev.action,
                        exit_code=ev.exit_code))
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.info("runtime events stream ended: %s; subscribing again", e)
            await asyncio.sleep(2)

    async def run_features(self) -> None:
        """Every feature's background work, until cancelled."""
        await asyncio.gather(*(f.run() for f in self.features))

    async def close_features(self, *, node_deleted: bool) -> None:
        for f in self.features:
            try:
                await f.close(node_deleted=node_deleted)
            except Exception:  # one feature's failure must not keep the others' cleanup from running
                log.exception("closing the %s feature failed", f.name)

    # --- instances -------------------------------------------------------------------
    async def _find(self, instance_id: int) -> ContainerInfo | None:
        return (await self._all_ours()).get(instance_id)

    async def _all_ours(self) -> dict[int, ContainerInfo]:
        return await ours_by_instance(self.driver, self._config().node_id, self._installation())

    async def ensure(self, req: p.InstanceEnsure) -> p.ContainerReply:
        # Returns the existing container when there is one (looked for first unless dmd knows better).
        info = await self.driver.create(req.spec, fresh=req.fresh)
        if req.desired == "running" and info.state != "running":
            await self.driver.start(info.id)
        elif req.desired == "stopped" and info.state in ("running", "restarting", "paused"):
            await self.driver.stop(info.id)
        current = await self.driver.inspect(info.id)
        return p.ContainerReply(current or info)

    async def remove(self, req: p.InstanceRemove) -> p.Removed:
        found = await self._find(req.instance_id)
        if found is not None:
            await self.driver.remove(found.id, force=True)
        for f in self.features:
            f.forget(req.instance_id)
        return p.Removed(found is not None)

    async def _container_of(self, instance_id: int) -> ContainerInfo:
        found = await self._find(instance_id)
        if found is None:
            raise HandlerError(p.NOT_FOUND, f"instance {instance_id} has no container on this node")
        return found

    async def restart(self, req: p.InstanceRestart) -> p.ContainerReply:
        found = await self._container_of(req.instance_id)
        await self.driver.restart(found.id)
        current = await self.driver.inspect(found.id)
        return p.ContainerReply(current or found)

    async def inspect(self, req: p.InstanceInspect) -> p.MaybeContainer:
        return p.MaybeContainer(await self._find(req.instance_id))

    async def logs(self, req: p.InstanceLogs) -> p.LogLines:
        found = await self._container_of(req.instance_id)
        since = req.since
        lines: list[str] = []
        size, truncated, last_ts = 0, False, since
        async for raw in self.driver.logs(found.id, tail=req.tail, timestamps=True):
            when, text = _ts(raw)
            if since is not None and when is not None and when <= since:
                continue
            size += len(text.encode())
            if size > p.LOGS_MAX_BYTES:
                truncated = True
                lines = lines[len(lines) // 2:]  # keep the newest half
                size = sum(len(x.encode()) for x in lines)
            lines.append(text)
            last_ts = when if when is not None else last_ts
        return p.LogLines(lines, truncated, last_ts)

    async def sync(self, req: p.InstanceSync) -> p.SyncReply:
        keep = set(req.keep)
        removed = []
        mine = self._installation()
        for c in await self.driver.list(all=True, managed_only=True):
            # Only sweep containers provably of this installation.
            if mine is None or not self._ours(c):
                continue
            if c.instance_id is not None and c.instance_id not in keep:
                await self.driver.remove(c.id, force=True)
                removed.append(c.instance_id)
        return p.SyncReply(removed)

    async def containers(self, req: p.ContainersList) -> p.ContainerList:
        return p.ContainerList(await self.driver.list(all=True))

    # --- images -----------------------------------------------------------------------
    async def images(self, req: p.ImagesList) -> p.ImageList:
        return p.ImageList(await self.driver.list_images())

    async def pull(self, req: p.ImagePull) -> p.ImageReply:
        auth = {k: v for k, v in p.codec.encode(req.auth).items() if v is not None} if req.auth else None
        link = self._link
        last_bar = [0.0]

        async def progress(message: dict[str, Any]) -> None:
            if link is not None and req.progress_id:
                # Byte counts ("Downloading 5 MB/20 MB") at most every PROGRESS_EVERY_S: the Engine
                # writes one per half MiB, more than dmd takes from a link (dmd.agents.limits).
                if message.get("progressDetail"):
                    now = time.monotonic()
                    if now - last_bar[0] < PROGRESS_EVERY_S:
                        return
                    last_bar[0] = now
                fields = {k: v for k, v in message.items() if k in ("status", "id", "progress", "progressDetail")}
                try:
                    event: p.ImageProgress = p.codec.decode(p.ImageProgress, {"progress_id": req.progress_id, **fields})
                except p.DecodeError:
                    return  # a progress message of a shape we do not know: not worth failing the pull
                await link.send_event(event)

        image = await self.driver.pull(req.ref, auth=auth, progress=progress)
        return p.ImageReply(image)

    _link: AgentLink | None = None

    def attach(self, link: AgentLink) -> None:
        """Let long operations report progress as events on this link."""
        self._link = link

    def _blob_url(self, url: str) -> str:
        if url.startswith(("http://", "https://")):
            raise HandlerError(BAD_REQUEST, "blob URLs are paths on dmd's own server")
        return self._config().server.rstrip("/") + "/" + url.lstrip("/")

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._config().credential or ''}"}

    async def import_image(self, req: p.ImageImport) -> p.ImageReply:
        url = self._blob_url(req.url)
        repository = req.repository
        tag = req.tag or "latest"
        timeout = aiohttp.ClientTimeout(total=TRANSFER_TIMEOUT_S, sock_read=300)
        tmp = await asyncio.to_thread(tempfile.mkdtemp, prefix="dmc-import-")
        try:
            path = os.path.join(tmp, "image.tar")
            async with aiohttp.ClientSession(timeout=timeout) as session, \
                    session.get(url, headers=self._auth()) as r:
                if r.status != 200:
                    raise HandlerError("transfer_failed", f"dmd answered {r.status} for the image download")
                fh = await asyncio.to_thread(open, path, "wb")
                try:
                    async for chunk in r.content.iter_chunked(TRANSFER_CHUNK):
                        await asyncio.to_thread(fh.write, chunk)
                finally:
                    await asyncio.to_thread(fh.close)
            # Measured only here for save archives (unpacked below); the driver measures the rest.
            if (await prepare_image_tar(path, limits=None)).kind == "save":
                await check_expansion(path, self._config().expansion)  # before it is unpacked to disk
                # `docker load` would also apply the names written inside the archive, re-pointing
                # any tag on this node (another user's image, say) at the uploaded image.
                unnamed = os.path.join(tmp, "unnamed.tar")
                await asyncio.to_thread(_without_names, path, unnamed)
                await asyncio.to_thread(os.unlink, path)
                path = unnamed
            image = await self.driver.import_image(path, repository=repository, tag=tag)
        finally:
            await asyncio.to_thread(shutil.rmtree, tmp, True)
        return p.ImageReply(image)

    async def export_image(self, req: p.ImageExport) -> p.Exported:
        ref = req.ref
        url = self._blob_url(req.url)
        sent = 0

        async def body() -> AsyncIterator[bytes]:
            nonlocal sent
            async for chunk in self.driver.export_image(ref):
                sent += len(chunk)
                yield chunk

        timeout = aiohttp.ClientTimeout(total=TRANSFER_TIMEOUT_S, sock_read=300)
        headers = {**self._auth(), "Content-Type": "application/x-tar"}
        async with aiohttp.ClientSession(timeout=timeout) as session, \
                session.put(url, data=body(), headers=headers) as r:
            if r.status != 200:
                raise HandlerError("transfer_failed", f"dmd answered {r.status} for the image upload")
        return p.Exported(sent)

    async def remove_image(self, req: p.ImageRemove) -> p.Empty:
        await self.driver.remove_image(req.ref, force=req.force)
        return p.Empty()

    async def commit(self, req: p.ImageCommit) -> p.ImageReply:
        found = await self._container_of(req.instance_id)
        image = await self.driver.commit(found.id, repository=req.repository, tag=req.tag or "latest")
        return p.ImageReply(image)


def make_link(config: AgentConfig, driver: RuntimeDriver | None = None, *,
              ssh_host_key_path: str | None = None) -> tuple[AgentLink, Workloads]:
    """The agent, composed: the link, the instance and image requests on a runtime driver (Docker
    unless told otherwise), and the features that follow the containers (ports, SSH, streams).

    The node's SSH host key is read (made once) at ``ssh_host_key_path``, by default beside the
    config file; an agent without a config file and without a path gets one in memory. Read on
    the loop on purpose: a sub-kilobyte file, once per start."""
    from agent.access import hostkey
    from agent.access.agentssh import AgentSsh
    from agent.access.channels import Channels
    from agent.access.ssh import SshAccess
    from agent.file_copy import copy_handler
    from agent.link import AgentLink
    from agent.ports.manager import PortForwarding
    from agent.runtime.docker import DockerDriver
    from agent.streams import StreamHandlers

    registry = HandlerRegistry()
    link: AgentLink | None = None

    def current() -> AgentConfig:
        return link.config if link is not None else config

    def installation() -> str | None:
        return link.installation_id if link is not None else None

    runtime = driver or DockerDriver(config.docker_host, expansion=config.expansion)
    workloads = Workloads(runtime, current, installation)
    workloads.features = [
        PortForwarding(runtime, current, installation),
        SshAccess(runtime, workloads._find, find_all=workloads._all_ours),
        Channels(runtime),
        AgentSsh(runtime, hostkey.load_or_create(ssh_host_key_path or hostkey.host_key_path(config.path))),
    ]
    workloads.register(registry)
    streams = StreamHandlers(workloads._find)
    for feature in workloads.features:
        feature.register_streams(streams)
    streams.register("copy", copy_handler(runtime))  # files from the browser (agent/file_copy.py)
    link = AgentLink(config, handlers=registry, streams=streams, state_provider=workloads.snapshot,
                     facts_provider=workloads.facts)
    workloads.attach(link)
    return link, workloads


async def run_link(link: AgentLink, workloads: Workloads) -> int:
    """link.run(), with the runtime's events forwarded and the features' work running meanwhile."""
    pump = asyncio.create_task(workloads.forward_events(link))
    features = asyncio.create_task(workloads.run_features())
    try:
        return await link.run()
    finally:
        for task in (pump, features):
            task.cancel()
        await asyncio.gather(pump, features, return_exceptions=True)
        # Deleted node: its forwarding goes with it; else kernel rules stay (connections survive).
        await workloads.close_features(node_deleted=link.config.credential is None and link.installation_id is not None)
        await workloads.driver.close()
