"""Images on nodes: the catalogue, pull, import, delete, public/private, copy, commit.

Each change checks who may act, talks to the node's agent (pull, import, export, commit,
remove), refreshes the node's catalogue, records the image as the user's and writes the audit
entry. Tarballs never pass through memory whole: an upload is streamed to a file in dmd's spool
folder (`spool_dir`), which the agent then downloads.

What a plain user brings to a node never re-points a reference that is already there and not
theirs (another user's image, an unowned one, or any public one): pull, import, commit and copy
onto it are refused (409 `image_ref_taken`); administrators may. The check and the agent's
change run under one lock per (node, reference), so two users cannot race for a new name.
Every transfer takes one of the user's slots in `dm.transfers` (at most 2 at once: 429).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from agent import protocol as p
from agent.runtime.errors import DriverError
from agent.runtime.refs import check_repository
from dmd import capabilities, registries
from dmd.agents.hub import AgentFailed
from dmd.blobs import CHUNK, discard
from dmd.core import Dm
from dmd.errors import ApiError, BadRequest, Conflict, Forbidden, Invalid
from dmd.models import Actor, Node, User
from dmd.queries import audit
from dmd.queries import images as svc
from dmd.queries import instances as inst_svc
from dmd.queries import nodes as node_svc
from dmd.queries import users as user_svc

IMPORT_MAX_BYTES = 64 * 1024**3
TRANSFER_TIMEOUT_S = 3600.0
FREE_CHECK_EVERY = 16 * CHUNK  # while an upload streams, free space is looked at this often

T = TypeVar("T")
# Reads up to n bytes of an upload; b"" at its end (StreamReader.read, BodyPartReader.read_chunk).
Reader = Callable[[int], Awaitable[bytes]]


async def agent_reply(call: Awaitable[T]) -> T:
    """An agent's reply; its refusal of bad input (a tarball that is no image, a bad name or
    reference: the runtime's "invalid") is the caller's 422, not a 502."""
    try:
        return await call
    except AgentFailed as e:
        if e.extra.get("agent_code") == "invalid":
            raise Invalid(e.message, code="invalid_image") from None
        raise


def may_manage(user: User, image: dict[str, Any]) -> bool:
    return user.is_admin or image["owner_id"] == user.id


def check_manage(user: User, image: dict[str, Any]) -> None:
    if not may_manage(user, image):
        raise Forbidden("only the image's owner or an administrator can do this")


async def claimed(dm: Dm, actor: Actor, user: User, node_id: int, ref: str, image: p.ImageInfo,
                  action: str, **detail: Any) -> dict[str, Any]:
    """The image the user just brought to the node, recorded as theirs (the catalogue row)."""
    await dm.reconciler.refresh_images(node_id)
    async with dm.db.begin() as conn:
        row = await svc.claim(conn, node_id, ref, image, user)
        await audit.record(conn, actor, action, "image", row["id"], ref=ref, node_id=node_id, **detail)
    return row


def catalogue_ref(ref: str) -> str:
    """The name the Engine lists a reference under (`docker.io/library/ubuntu:22.04` is
    `ubuntu:22.04`): a reference must not slip past the check by being spelled differently."""
    for hub in ("docker.io/", "index.docker.io/"):
        if ref.startswith(hub):
            ref = ref[len(hub):]
            if ref.startswith("library/") and ref.count("/") == 1:
                ref = ref[len("library/"):]
            break
    return ref


async def check_ref_free(dm: Dm, user: User, node_id: int, ref: str) -> None:
    """409 `image_ref_taken` when a plain user's pull, import, commit or copy would re-point a
    reference already on the node that is not theirs, or that is public (everyone runs it)."""
    if user.is_admin:
        return
    ref = catalogue_ref(ref)
    async with dm.db.read() as conn:
        row = await svc.find(conn, node_id, ref)
    if row is None:
        return
    if row["owner_id"] != user.id:
        raise Conflict(f"{ref} is already on this node and is not your image; choose another repository or tag",
                       code="image_ref_taken", field="ref")
    if row["public"]:
        raise Conflict(f"{ref} is your public image, which other users may be running; make it private first "
                       "or choose another repository or tag", code="image_ref_taken", field="ref")


@contextlib.asynccontextmanager
async def claiming(dm: Dm, user: User, node_id: int, ref: str) -> AsyncIterator[None]:
    """The block that changes `ref` on the node, with the reference checked first and no other
    change of it in between (see check_ref_free)."""
    async with dm.ref_locks.hold(node_id, catalogue_ref(ref)):
        await check_ref_free(dm, user, node_id, ref)
        yield


def split_ref(ref: str) -> tuple[str, str]:
    last = ref.rsplit("/", 1)[-1]
    if ":" in last and "@" not in ref:
        repo, tag = ref.rsplit(":", 1)
        return repo, tag
    return ref, "latest"


async def visible_node(dm: Dm, user: User, node_id: int) -> Node:
    async with dm.db.read() as conn:
        return await node_svc.get_visible(conn, user, node_id)


# --- pull -----------------------------------------------------------------------------------

def pull_ref(ref: str) -> str:
    """The reference with ":latest" when it names no tag or digest."""
    return ref if ":" in ref.rsplit("/", 1)[-1] or "@" in ref else f"{ref}:latest"


def pull_auth(ref: str, username: str | None, password: str | None) -> p.RegistryAuth | None:
    """Registry credentials for this one pull (never stored), or None."""
    if not (username or password):
        return None
    first = ref.split("/", 1)[0]
    registry = first if "/" in ref and ("." in first or ":" in first) else ""
    return p.RegistryAuth(username=username or "", password=password or "", serveraddress=registry)


async def check_registry(dm: Dm, ref: str) -> None:
    """422 `registry_not_allowed` for a registry on a loopback or private address that the
    `registry_allow` setting does not name (see dmd.registries)."""
    why = await registries.refusal(ref, registries.parse_allow(dm.config.registry_allow))
    if why is not None:
        raise Invalid(why, code="registry_not_allowed", field="ref")


async def start_pull(dm: Dm, actor: Actor, user: User, node: Node, ref: str, *,
                     username: str | None = None, password: str | None = None,
                     progress_id: str | None = None) -> Coroutine[Any, Any, dict[str, Any]]:
    """Everything a pull is refused for (capability, registry, a reference not the user's, the
    user's transfer slots) checked now; returns the pull itself, which the caller must run (it
    gives the slot back). Progress events carry progress_id."""
    capabilities.require(node, "pull")
    auth = pull_auth(ref, username, password)
    ref = pull_ref(ref)
    await check_ref_free(dm, user, node.id, ref)
    await check_registry(dm, ref)
    await dm.transfers.enter(user.id)

    async def run() -> dict[str, Any]:
        try:
            async with claiming(dm, user, node.id, ref):
                reply = await agent_reply(dm.hub.ask(node.id, p.ImagePull(ref, auth, progress_id or "")))
                return await claimed(dm, actor, user, node.id, ref, reply.image, "image.pull")
        finally:
            dm.transfers.leave(user.id)

    return run()


async def pull(dm: Dm, actor: Actor, user: User, node: Node, ref: str, *,
               username: str | None = None, password: str | None = None,
               progress_id: str | None = None) -> dict[str, Any]:
    """Pull onto a node the user may see (see visible_node and start_pull)."""
    return await (await start_pull(dm, actor, user, node, ref, username=username, password=password,
                                   progress_id=progress_id))


# --- import ---------------------------------------------------------------------------------

def check_import_name(repository: str, tag: str) -> None:
    """The repository and tag an import is stored under (checked before any upload)."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9._/-]{0,199}", repository):
        raise Invalid("repository: use lower-case letters, digits, '.', '_', '/' or '-'", field="repository")
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag):
        raise Invalid("tag: use letters, digits, '_', '.' or '-'", field="tag")
    try:  # Docker's own grammar (no "a..b", "a//b", trailing "/")
        check_repository(repository, tag)
    except DriverError as e:
        raise Invalid(f"repository: {e.message}", field="repository") from None


class NoSpace(ApiError):
    status, code = 507, "insufficient_storage"


def no_space(free: int, margin: int) -> NoSpace:
    return NoSpace(f"dmd's spool folder has {free} bytes free and keeps at least {margin} free; "
                   "try again later or ask an administrator to free space or move spool_dir")


async def check_space(dm: Dm, expected: int | None) -> None:
    """507 when storing `expected` more bytes (the declared length, when there is one) would
    leave less than the `spool_min_free_bytes` margin free."""
    free, margin = await dm.blobs.free_bytes(), dm.config.spool_min_free_bytes
    if free - (expected or 0) < margin:
        raise no_space(free, margin)


async def save_upload(read: Reader, path: Path, limit: int = IMPORT_MAX_BYTES,
                      free_bytes: Callable[[], Awaitable[int]] | None = None, margin: int = 0) -> int:
    """Copy an upload to a file, chunk by chunk (the writes in a thread so the loop never
    blocks); 413 beyond `limit` bytes; 507 when the disk's free space falls under `margin`
    (looked at every FREE_CHECK_EVERY bytes). Like dmd.blobs.write_stream, for any reader."""
    size = 0
    checked = 0
    fd = await asyncio.to_thread(os.open, path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    f = os.fdopen(fd, "wb")
    try:
        while True:
            chunk = await read(CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise ApiError(f"the tarball is larger than {limit} bytes", status=413, code="too_large")
            if free_bytes is not None and (checked == 0 or size - checked >= FREE_CHECK_EVERY):
                checked = size
                free = await free_bytes()
                if free - len(chunk) < margin:
                    raise no_space(free, margin)
            await asyncio.to_thread(f.write, chunk)
    finally:
        await asyncio.to_thread(f.close)
    return size


async def check_import(dm: Dm, user: User, node: Node, repository: str, tag: str,
                       expected: int | None = None) -> None:
    """Everything an import is refused for, before a byte of the upload is read: the name, the
    node (joined and connected), its capability, a reference that is not the user's, and the
    spool folder's free space (with `expected`, the declared length)."""
    check_import_name(repository, tag)
    if not node.joined:
        raise Conflict(f"node {node.name} has not joined yet; run its agent's join first", code="node_not_joined")
    if not dm.hub.is_online(node.id):
        raise Conflict(f"node {node.name} is offline; start its agent and try again", code="node_offline")
    capabilities.require(node, "image_import")
    await check_ref_free(dm, user, node.id, f"{repository}:{tag}")
    if expected is not None and expected > IMPORT_MAX_BYTES:
        raise ApiError(f"the tarball is larger than {IMPORT_MAX_BYTES} bytes", status=413, code="too_large")
    await check_space(dm, expected)


async def import_tarball(dm: Dm, actor: Actor, user: User, node: Node, repository: str, tag: str,
                         read: Reader, limit: int = IMPORT_MAX_BYTES, expected: int | None = None
                         ) -> dict[str, Any]:
    """Stream an uploaded tarball (docker save output or a root file system tar) to a spool
    file, let the node's agent import it as repository:tag, and forget the file. Everything the
    import is refused for is checked before `read` is first called (see check_import)."""
    await check_import(dm, user, node, repository, tag, expected)
    ref = f"{repository}:{tag}"
    blobs = dm.blobs
    async with dm.transfers.slot(user.id):
        path = blobs.new_path()
        try:
            size = await save_upload(read, path, limit, blobs.free_bytes, dm.config.spool_min_free_bytes)
            if size == 0:
                raise BadRequest("the tarball is empty", code="empty_body")
            token = blobs.offer(node.id, "get", path)
            try:
                async with claiming(dm, user, node.id, ref):
                    reply = await agent_reply(dm.hub.ask(node.id, p.ImageImport(blobs.url_path(token), repository,
                                                                                tag)))
                    return await claimed(dm, actor, user, node.id, ref, reply.image, "image.import", bytes=size)
            finally:
                blobs.close(token)
        finally:
            discard(path)


# --- one catalogue entry --------------------------------------------------------------------

async def in_use_by(dm: Dm, image: dict[str, Any]) -> list[str]:
    """Names of the live instances on the image's node that use it."""
    async with dm.db.read() as conn:
        return await svc.users_of(conn, image["node_id"], image["ref"])


async def delete(dm: Dm, actor: Actor, user: User, image_id: int, force: bool) -> dict[str, Any]:
    """Remove the image from its node; refused (409 image_in_use) while a live instance uses
    it unless forced. Returns the catalogue row as it was."""
    async with dm.db.read() as conn:
        image = await svc.get_visible(conn, user, image_id)
        check_manage(user, image)
        users_of = await svc.users_of(conn, image["node_id"], image["ref"])
    if users_of and not force:
        raise Conflict(f"instance(s) {', '.join(users_of)} use {image['ref']}; delete them or pass ?force=true",
                       code="image_in_use")
    await dm.hub.ask(image["node_id"], p.ImageRemove(image["ref"], force))
    async with dm.db.begin() as conn:
        await svc.remove(conn, image["id"])
        await audit.record(conn, actor, "image.delete", "image", image["id"], ref=image["ref"],
                           node_id=image["node_id"], force=force)
    return image


async def set_public(dm: Dm, actor: Actor, user: User, image_id: int, public: bool) -> dict[str, Any]:
    """Make an image public (every user may use it) or private again."""
    async with dm.db.begin() as conn:
        image = await svc.get_visible(conn, user, image_id)
        check_manage(user, image)
        await svc.set_public(conn, image["id"], public)
        await audit.record(conn, actor, "image.public" if public else "image.private", "image", image["id"],
                           ref=image["ref"])
        return await svc.get_visible(conn, user, image["id"])


async def copy(dm: Dm, actor: Actor, user: User, image_id: int, node_id: int) -> dict[str, Any]:
    """Copy an image to another node through dmd: the source agent uploads it to a blob file,
    the target agent downloads and loads it. A public image stays public."""
    async with dm.db.read() as conn:
        image = await svc.get_visible(conn, user, image_id)
        target = await node_svc.get_visible(conn, user, node_id)
        source = await node_svc.get(conn, image["node_id"])
    if target.id == image["node_id"]:
        raise Conflict("the image is already on that node", code="same_node")
    capabilities.require(source, "image_export")
    capabilities.require(target, "image_import")
    await check_ref_free(dm, user, target.id, image["ref"])
    await check_space(dm, image["size"] if isinstance(image["size"], int) else None)
    hub, blobs = dm.hub, dm.blobs
    async with dm.transfers.slot(user.id):
        path = blobs.new_path()
        up = blobs.offer(image["node_id"], "put", path)
        try:
            await hub.ask(image["node_id"], p.ImageExport(image["ref"], blobs.url_path(up)))
            blob = blobs.get(up)
            if blob is None or blob.error or not path.exists():
                raise ApiError("the source node did not deliver the image", status=502, code="transfer_failed")
            down = blobs.offer(target.id, "get", path)
            repository, tag = split_ref(image["ref"])
            try:
                async with claiming(dm, user, target.id, image["ref"]):
                    reply = await agent_reply(hub.ask(target.id, p.ImageImport(blobs.url_path(down), repository,
                                                                               tag)))
                    row = await claimed(dm, actor, user, target.id, image["ref"], reply.image, "image.copy",
                                        from_node=image["node_id"])
            finally:
                blobs.close(down)
        finally:
            blobs.close(up)
            discard(path)
    if image["public"]:
        async with dm.db.begin() as conn:
            await svc.set_public(conn, row["id"], True)
        row = {**row, "public": True}
    return row


async def commit(dm: Dm, actor: Actor, user: User, instance_id: int, repository: str,
                 tag: str) -> dict[str, Any]:
    """Save an instance's container as a new image on its node."""
    async with dm.db.read() as conn:
        inst = await inst_svc.get_visible(conn, user, instance_id)
        node = await node_svc.get(conn, inst.node_id)
    capabilities.require(node, "commit")
    ref = f"{repository}:{tag}"
    await check_ref_free(dm, user, inst.node_id, ref)
    async with dm.transfers.slot(user.id), claiming(dm, user, inst.node_id, ref):
        reply = await agent_reply(dm.hub.ask(inst.node_id, p.ImageCommit(inst.id, repository, tag)))
        return await claimed(dm, actor, user, inst.node_id, ref, reply.image, "image.commit", instance_id=inst.id)


# --- pull progress ------------------------------------------------------------------------------

@contextlib.contextmanager
def pull_progress(dm: Dm, node_id: int, progress_id: str) -> Iterator[asyncio.Queue[dict[str, Any]]]:
    """The progress events of one pull (Docker's, as the agent relays them), queued while the
    block runs; a full queue drops the newest."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(1000)

    def on_event(event_node: int, ev: p.EventBody) -> None:
        mine = event_node == node_id and isinstance(ev, p.ImageProgress) and ev.progress_id == progress_id
        if mine and not queue.full():
            queue.put_nowait({k: v for k, v in p.to_data(ev).items()
                              if k not in ("kind", "progress_id") and v is not None})

    dm.hub.event_listeners.append(on_event)
    try:
        yield queue
    finally:
        dm.hub.event_listeners.remove(on_event)


# --- reads --------------------------------------------------------------------------------------

async def list_on_node(dm: Dm, user: User, node_id: int) -> list[dict[str, Any]]:
    """The images on a node the user may see that the user may use."""
    async with dm.db.read() as conn:
        node = await node_svc.get_visible(conn, user, node_id)
        return await svc.list_on_node(conn, user, node.id)


async def get_visible(dm: Dm, user: User, image_id: int) -> dict[str, Any]:
    async with dm.db.read() as conn:
        return await svc.get_visible(conn, user, image_id)


async def manageable(dm: Dm, user: User, image_id: int) -> dict[str, Any]:
    """The image if the user may change it (its owner, or an administrator): else 404 or 403."""
    image = await get_visible(dm, user, image_id)
    check_manage(user, image)
    return image


async def usable_nodes(dm: Dm, user: User) -> list[Node]:
    async with dm.db.read() as conn:
        return await inst_svc.usable_nodes(conn, user)


@dataclass(frozen=True, slots=True)
class Entry:
    image: dict[str, Any]
    users_of: list[str]  # the live instances that use it


@dataclass(frozen=True, slots=True)
class Catalogue:
    """Every node the user may use with the images there, and the images' owners' names."""

    nodes: list[tuple[Node, list[Entry]]]
    owners: dict[int, str]


async def catalogue(dm: Dm, user: User) -> Catalogue:
    groups: list[tuple[Node, list[Entry]]] = []
    owner_ids: set[int] = set()
    async with dm.db.read() as conn:
        for n in await inst_svc.usable_nodes(conn, user):
            entries = []
            for img in await svc.list_on_node(conn, user, n.id):
                entries.append(Entry(img, await svc.users_of(conn, n.id, img["ref"])))
                if img["owner_id"] is not None:
                    owner_ids.add(img["owner_id"])
            groups.append((n, entries))
        owners = {}
        for uid in owner_ids:
            u = await user_svc.find(conn, uid)
            if u is not None:
                owners[uid] = u.username
    return Catalogue(groups, owners)
