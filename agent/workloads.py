"""The agent's instance and image commands: dmd's requests turned into runtime driver calls.

Every command is idempotent and keyed by DM's instance id (a container label), so dmd can
repeat any of them after a lost reply or a restart of either side. The state snapshot in
each hello lists every container (managed or not) and every image; container lifecycle
events are forwarded as they happen.

Public API::

    workloads = Workloads(DockerDriver(config.docker_host), lambda: link.config)
    workloads.register(registry)                 # the handlers, on the link's registry
    link = AgentLink(config, handlers=registry, state_provider=workloads.snapshot)
    pump = asyncio.create_task(workloads.forward_events(link))
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
import zlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import aiohttp

from agent import protocol as p
from agent.config import AgentConfig
from agent.handlers import BAD_REQUEST, HandlerError, HandlerRegistry
from agent.runtime.driver import RuntimeDriver
from agent.runtime.errors import DriverError, InvalidError, RuntimeFailedError
from agent.runtime.image_tar import prepare_image_tar
from agent.runtime.ownership import is_ours, ours_by_instance
from agent.runtime.spec import ContainerInfo, ContainerSpec

if TYPE_CHECKING:
    from agent.link import AgentLink

log = logging.getLogger(__name__)
TRANSFER_TIMEOUT_S = 3600.0
TRANSFER_CHUNK = 1 << 20
SSH_SUPERVISE_S = 15.0  # how soon a dead sshd comes back


def _int(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise HandlerError(BAD_REQUEST, f"{key} must be an integer")
    return value


def _str(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise HandlerError(BAD_REQUEST, f"{key} must be a non-empty string")
    return value


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
    def __init__(self, driver: RuntimeDriver, config: Callable[[], AgentConfig],
                 installation: Callable[[], str | None] = lambda: None) -> None:
        from agent.access.ssh import SshAccess
        from agent.ports.manager import PortForwarding

        self.driver = driver
        self._config = config
        self._installation = installation
        # DM's own access to instances: port maps forwarded by the agent, SSH keys it injects.
        self.ports = PortForwarding(driver, config, installation)
        self.ssh = SshAccess(driver, self._find, find_all=self._all_ours)
        self._hooks: set[asyncio.Task[Any]] = set()

    def _ours(self, c: ContainerInfo) -> bool:
        return is_ours(c, self._config().node_id, self._installation())

    def register(self, registry: HandlerRegistry) -> None:
        for type_, handler, limit in (
            (p.INSTANCE_ENSURE, self.ensure, 300.0),
            (p.INSTANCE_REMOVE, self.remove, 120.0),
            (p.INSTANCE_RESTART, self.restart, 120.0),
            (p.INSTANCE_INSPECT, self.inspect, 30.0),
            (p.INSTANCE_LOGS, self.logs, 30.0),
            (p.INSTANCE_SYNC, self.sync, 120.0),
            (p.CONTAINERS_LIST, self.containers, 60.0),
            (p.IMAGES_LIST, self.images, 60.0),
            (p.IMAGE_PULL, self.pull, TRANSFER_TIMEOUT_S),
            (p.IMAGE_IMPORT, self.import_image, TRANSFER_TIMEOUT_S),
            (p.IMAGE_EXPORT, self.export_image, TRANSFER_TIMEOUT_S),
            (p.IMAGE_REMOVE, self.remove_image, 300.0),
            (p.IMAGE_COMMIT, self.commit, TRANSFER_TIMEOUT_S),
            (p.PORTS_APPLY, self.ports.handle_apply, 60.0),
            (p.INSTANCE_ACCESS, self.ssh.handle_access, 60.0),
        ):
            registry.register(type_, self._translated(handler), timeout_s=limit)

    @staticmethod
    def _translated(
        handler: Callable[[dict[str, Any]], Any],
    ) -> Callable[[dict[str, Any]], Any]:
        async def call(data: dict[str, Any]) -> dict[str, Any]:
            try:
                result: dict[str, Any] = await handler(data)
                return result
            except DriverError as e:
                raise HandlerError(e.code, e.message) from None

        return call

    async def snapshot(self) -> dict[str, Any]:
        try:
            containers = await self.driver.list(all=True)
            images = await self.driver.list_images()
        except DriverError as e:
            log.warning("cannot read the runtime's state: %s", e)
            return {"runtime_error": e.message, "listening": await self.ports.listening()}
        return {"containers": [c.to_dict() for c in containers], "images": [i.to_dict() for i in images],
                "listening": await self.ports.listening()}

    async def facts(self) -> dict[str, Any]:
        """The host's facts, with the port pools and the forwarding mode, and what the runtime
        driver can do (dmd refuses the rest before it asks)."""
        from agent.docker_info import node_facts

        config = self._config()
        facts = await node_facts(config.docker_host, public_address=config.public_address)
        facts["ports"] = self.ports.facts()
        facts["capabilities"] = self.driver.capabilities().to_dict()
        return facts

    def _container_changed(self, instance_id: int | None, action: str) -> None:
        """A container started or stopped: its forwarding target moved, its sshd needs starting."""
        self.ports.on_container_event(instance_id, action)  # debounced by the manager itself
        task = asyncio.get_running_loop().create_task(self.ssh.on_container_event(instance_id, action))
        self._hooks.add(task)
        task.add_done_callback(self._hook_done)

    def _hook_done(self, task: asyncio.Task[Any]) -> None:
        self._hooks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("reacting to a container event failed: %s", task.exception())

    async def forward_events(self, link: AgentLink) -> None:
        """Send container lifecycle events to dmd while the agent runs (re-subscribing on errors)."""
        while True:
            try:
                async for ev in self.driver.events():
                    if ev.node_id != self._config().node_id:
                        continue  # another node's container on a shared Engine
                    if ev.action in ("start", "restart", "die", "stop", "destroy"):
                        self._container_changed(ev.instance_id, ev.action)
                    await link.send_event("container", {
                        "instance_id": ev.instance_id, "container_id": ev.container_id, "action": ev.action,
                        "exit_code": ev.exit_code,
                    })
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.info("runtime events stream ended: %s; subscribing again", e)
            await asyncio.sleep(2)

    # --- instances -------------------------------------------------------------------
    async def _find(self, instance_id: int) -> ContainerInfo | None:
        return (await self._all_ours()).get(instance_id)

    async def _all_ours(self) -> dict[int, ContainerInfo]:
        return await ours_by_instance(self.driver, self._config().node_id, self._installation())

    async def ensure(self, data: dict[str, Any]) -> dict[str, Any]:
        spec_data = data.get("spec")
        desired = data.get("desired")
        if not isinstance(spec_data, dict) or desired not in ("running", "stopped"):
            raise HandlerError(BAD_REQUEST, "ensure needs a spec and desired running|stopped")
        try:
            spec = ContainerSpec.from_dict(spec_data)
        except (KeyError, TypeError, ValueError) as e:
            raise HandlerError(BAD_REQUEST, f"bad container spec: {e}") from None
        info = await self.driver.create(spec)  # returns the existing container when there is one
        if desired == "running" and info.state != "running":
            await self.driver.start(info.id)
        elif desired == "stopped" and info.state in ("running", "restarting", "paused"):
            await self.driver.stop(info.id)
        current = await self.driver.inspect(info.id)
        return {"container": (current or info).to_dict()}

    async def remove(self, data: dict[str, Any]) -> dict[str, Any]:
        instance_id = _int(data, "instance_id")
        found = await self._find(instance_id)
        if found is not None:
            await self.driver.remove(found.id, force=True)
        self.ssh.forget(instance_id)
        return {"removed": found is not None}

    async def restart(self, data: dict[str, Any]) -> dict[str, Any]:
        found = await self._find(_int(data, "instance_id"))
        if found is None:
            raise HandlerError("not_found", f"instance {data.get('instance_id')} has no container on this node")
        await self.driver.restart(found.id)
        current = await self.driver.inspect(found.id)
        return {"container": (current or found).to_dict()}

    async def inspect(self, data: dict[str, Any]) -> dict[str, Any]:
        found = await self._find(_int(data, "instance_id"))
        return {"container": found.to_dict() if found is not None else None}

    async def logs(self, data: dict[str, Any]) -> dict[str, Any]:
        found = await self._find(_int(data, "instance_id"))
        if found is None:
            raise HandlerError("not_found", f"instance {data.get('instance_id')} has no container on this node")
        tail = data.get("tail")
        since = data.get("since")
        lines: list[str] = []
        size, truncated, last_ts = 0, False, since if isinstance(since, int | float) else None
        async for raw in self.driver.logs(found.id, tail=tail if isinstance(tail, int) else None, timestamps=True):
            when, text = _ts(raw)
            if isinstance(since, int | float) and when is not None and when <= since:
                continue
            size += len(text.encode())
            if size > p.LOGS_MAX_BYTES:
                truncated = True
                lines = lines[len(lines) // 2:]  # keep the newest half
                size = sum(len(x.encode()) for x in lines)
            lines.append(text)
            last_ts = when if when is not None else last_ts
        return {"lines": lines, "truncated": truncated, "last_ts": last_ts}

    async def sync(self, data: dict[str, Any]) -> dict[str, Any]:
        keep = data.get("keep")
        if not isinstance(keep, list) or not all(isinstance(x, int) for x in keep):
            raise HandlerError(BAD_REQUEST, "keep must be a list of instance ids")
        removed = []
        mine = self._installation()
        for c in await self.driver.list(all=True, managed_only=True):
            # Only sweep containers provably of this installation.
            if mine is None or not self._ours(c):
                continue
            if c.instance_id is not None and c.instance_id not in keep:
                await self.driver.remove(c.id, force=True)
                removed.append(c.instance_id)
        return {"removed": removed}

    async def containers(self, data: dict[str, Any]) -> dict[str, Any]:
        return {"containers": [c.to_dict() for c in await self.driver.list(all=True)]}

    # --- images -----------------------------------------------------------------------
    async def images(self, data: dict[str, Any]) -> dict[str, Any]:
        return {"images": [i.to_dict() for i in await self.driver.list_images()]}

    async def pull(self, data: dict[str, Any]) -> dict[str, Any]:
        ref = _str(data, "ref")
        auth = data.get("auth") if isinstance(data.get("auth"), dict) else None
        progress_id = str(data.get("progress_id") or "")
        link_send = self._progress_sender

        async def progress(message: dict[str, Any]) -> None:
            if link_send is not None and progress_id:
                await link_send({"progress_id": progress_id, **{k: v for k, v in message.items()
                                                                 if k in ("status", "id", "progress",
                                                                          "progressDetail")}})

        image = await self.driver.pull(ref, auth=auth, progress=progress)
        return {"image": image.to_dict()}

    _progress_sender: Callable[[dict[str, Any]], Any] | None = None

    def attach(self, link: AgentLink) -> None:
        """Let long operations report progress as events on this link."""

        async def send(data: dict[str, Any]) -> None:
            await link.send_event("image.progress", data)

        self._progress_sender = send

    def _blob_url(self, url: str) -> str:
        if url.startswith(("http://", "https://")):
            raise HandlerError(BAD_REQUEST, "blob URLs are paths on dmd's own server")
        return self._config().server.rstrip("/") + "/" + url.lstrip("/")

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._config().credential or ''}"}

    async def import_image(self, data: dict[str, Any]) -> dict[str, Any]:
        url = self._blob_url(_str(data, "url"))
        repository = _str(data, "repository")
        tag = str(data.get("tag") or "latest")
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
            if (await prepare_image_tar(path)).kind == "save":
                # `docker load` would also apply the names written inside the archive, re-pointing
                # any tag on this node (another user's image, say) at the uploaded image.
                unnamed = os.path.join(tmp, "unnamed.tar")
                await asyncio.to_thread(_without_names, path, unnamed)
                await asyncio.to_thread(os.unlink, path)
                path = unnamed
            image = await self.driver.import_image(path, repository=repository, tag=tag)
        finally:
            await asyncio.to_thread(shutil.rmtree, tmp, True)
        return {"image": image.to_dict()}

    async def export_image(self, data: dict[str, Any]) -> dict[str, Any]:
        ref = _str(data, "ref")
        url = self._blob_url(_str(data, "url"))
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
        return {"bytes": sent}

    async def remove_image(self, data: dict[str, Any]) -> dict[str, Any]:
        await self.driver.remove_image(_str(data, "ref"), force=bool(data.get("force")))
        return {}

    async def commit(self, data: dict[str, Any]) -> dict[str, Any]:
        found = await self._find(_int(data, "instance_id"))
        if found is None:
            raise HandlerError("not_found", f"instance {data.get('instance_id')} has no container on this node")
        image = await self.driver.commit(found.id, repository=_str(data, "repository"),
                                         tag=str(data.get("tag") or "latest"))
        return {"image": image.to_dict()}


def make_link(config: AgentConfig, driver: RuntimeDriver | None = None) -> tuple[AgentLink, Workloads]:
    """An AgentLink that carries the instance and image commands, on Docker unless told otherwise."""
    from agent.link import AgentLink
    from agent.runtime.docker import DockerDriver

    registry = HandlerRegistry()
    link: AgentLink | None = None

    def current() -> AgentConfig:
        return link.config if link is not None else config

    def installation() -> str | None:
        return link.installation_id if link is not None else None

    workloads = Workloads(driver or DockerDriver(config.docker_host), current, installation)
    workloads.register(registry)
    link = AgentLink(config, handlers=registry, state_provider=workloads.snapshot,
                     facts_provider=workloads.facts)
    workloads.attach(link)
    return link, workloads


async def run_link(link: AgentLink, workloads: Workloads) -> int:
    """link.run(), with the runtime's events forwarded while it runs."""
    pump = asyncio.create_task(workloads.forward_events(link))
    supervisor = asyncio.create_task(workloads.ssh.run_supervisor(SSH_SUPERVISE_S))
    keeper = asyncio.create_task(workloads.ports.run_keeper())
    try:
        return await link.run()
    finally:
        for task in (pump, supervisor, keeper):
            task.cancel()
        await asyncio.gather(pump, supervisor, keeper, return_exceptions=True)
        if link.config.credential is None and link.installation_id is not None:
            await workloads.ports.teardown()  # the node was deleted: its forwarding goes with it
        else:
            await workloads.ports.close()  # kernel rules stay: established connections survive
        await workloads.driver.close()
