"""Images on nodes: the catalogue, pull (with live progress), import, delete, commit, copy, public."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import Awaitable
from typing import Any

from aiohttp import web

from agent import protocol as p
from agent.runtime.base import DriverError, check_repository
from dmd.agents import HUB
from dmd.agents.hub import AgentFailed
from dmd.api.registry import Api, Ctx
from dmd.api.schemas import CommitIn, CopyIn, ImageOut, ImagePatchIn, PullIn
from dmd.auth.flows import actor_of
from dmd.blobs import BLOBS, discard, write_stream
from dmd.errors import ApiError, BadRequest, Conflict, Forbidden, Invalid
from dmd.models import User
from dmd.reconciler import RECONCILER
from dmd.services import audit
from dmd.services import images as svc
from dmd.services import instances as inst_svc
from dmd.services import nodes as node_svc
from dmd.state import DB

api = Api()
IMPORT_MAX_BYTES = 64 * 1024**3
TRANSFER_TIMEOUT_S = 3600.0


async def _agent(call: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """An agent's reply; its refusal of bad input (a tarball that is no image, a bad name or
    reference: the runtime's "invalid") is the caller's 422, not a 502."""
    try:
        return await call
    except AgentFailed as e:
        if e.extra.get("agent_code") == "invalid":
            raise Invalid(e.message, code="invalid_image") from None
        raise


def _may_manage(user: User, image: dict[str, Any]) -> None:
    if not user.is_admin and image["owner_id"] != user.id:
        raise Forbidden("only the image's owner or an administrator can do this")


async def _claimed(ctx: Ctx, node_id: int, ref: str, image: dict[str, Any], action: str, **detail: Any) -> ImageOut:
    await ctx.app[RECONCILER].refresh_images(node_id)
    async with ctx.app[DB].begin() as conn:
        row = await svc.claim(conn, node_id, ref, image, ctx.user_identity.user)
        await audit.record(conn, actor_of(ctx.request, ctx.identity), action, "image", row["id"], ref=ref,
                           node_id=node_id, **detail)
    return ImageOut(**row)


def _split_ref(ref: str) -> tuple[str, str]:
    last = ref.rsplit("/", 1)[-1]
    if ":" in last and "@" not in ref:
        repo, tag = ref.rsplit(":", 1)
        return repo, tag
    return ref, "latest"


@api.get("/nodes/{id}/images", summary="Images on a node that you may use", tag="images", response=list[ImageOut],
         errors=(404,))
async def list_images(ctx: Ctx) -> Any:
    user = ctx.user_identity.user
    async with ctx.app[DB].read() as conn:
        node = await node_svc.get_visible(conn, user, ctx.path_int("id"))
        return [ImageOut(**r) for r in await svc.list_on_node(conn, user, node.id)]


@api.post("/nodes/{id}/images/pull", summary="Pull an image onto a node (Accept: application/x-ndjson streams "
          "the progress); registry credentials are used once and never stored", tag="images", body=PullIn,
          response=ImageOut, status=201, errors=(404, 409, 422, 502, 504))
async def pull_image(ctx: Ctx) -> Any:
    b: PullIn = ctx.body
    user = ctx.user_identity.user
    async with ctx.app[DB].read() as conn:
        node = await node_svc.get_visible(conn, user, ctx.path_int("id"))
    hub = ctx.app[HUB]
    progress_id = secrets.token_hex(8)
    auth = None
    if b.username or b.password:
        first = b.ref.split("/", 1)[0]
        registry = first if "/" in b.ref and ("." in first or ":" in first) else ""
        auth = {"username": b.username or "", "password": b.password or "", "serveraddress": registry}
    ref = b.ref if ":" in b.ref.rsplit("/", 1)[-1] or "@" in b.ref else f"{b.ref}:latest"
    call = _agent(hub.call(node.id, p.IMAGE_PULL, {"ref": ref, "auth": auth, "progress_id": progress_id},
                           timeout=TRANSFER_TIMEOUT_S))
    if "application/x-ndjson" not in ctx.request.headers.get("Accept", ""):
        reply = await call
        return await _claimed(ctx, node.id, ref, reply.get("image") or {}, "image.pull")
    # Stream Docker's progress as it comes, then the result (or the error) as the last line.
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(1000)

    def on_event(node_id: int, env: p.Envelope) -> None:
        d = env.data
        mine = node_id == node.id and d.get("kind") == "image.progress" and d.get("progress_id") == progress_id
        if mine and not queue.full():
            queue.put_nowait({k: v for k, v in d.items() if k not in ("kind", "progress_id", "node_id")})

    hub.event_listeners.append(on_event)
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-cache"})
    await resp.prepare(ctx.request)
    task = asyncio.ensure_future(call)
    try:
        while not task.done() or not queue.empty():
            get = asyncio.ensure_future(queue.get())
            await asyncio.wait({task, get}, return_when=asyncio.FIRST_COMPLETED)
            if get.done():
                await resp.write((json.dumps({"progress": get.result()}) + "\n").encode())
            else:
                get.cancel()
        try:
            reply = task.result()
            out = await _claimed(ctx, node.id, ref, reply.get("image") or {}, "image.pull")
            await resp.write((json.dumps({"image": out.model_dump(mode="json")}) + "\n").encode())
        except ApiError as e:
            await resp.write((json.dumps(e.body()) + "\n").encode())
    finally:
        hub.event_listeners.remove(on_event)
    await resp.write_eof()
    return resp


@api.post("/nodes/{id}/images/import", summary="Import a tarball (docker save output or a root filesystem tar) "
          "sent as the raw request body; ?repository=NAME&tag=TAG", tag="images", response=ImageOut, status=201,
          errors=(400, 404, 413, 422, 502, 504))
async def import_image(ctx: Ctx) -> Any:
    user = ctx.user_identity.user
    repository = ctx.request.query.get("repository", "")
    tag = ctx.request.query.get("tag", "latest")
    if not re.fullmatch(r"[a-z0-9][a-z0-9._/-]{0,199}", repository):
        raise Invalid("repository: use lower-case letters, digits, '.', '_', '/' or '-'", field="repository")
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag):
        raise Invalid("tag: use letters, digits, '_', '.' or '-'", field="tag")
    try:  # Docker's own grammar (no "a..b", "a//b", trailing "/"), checked before the upload
        check_repository(repository, tag)
    except DriverError as e:
        raise Invalid(f"repository: {e.message}", field="repository") from None
    async with ctx.app[DB].read() as conn:
        node = await node_svc.get_visible(conn, user, ctx.path_int("id"))
    if not ctx.request.body_exists:
        raise BadRequest("send the tarball as the request body", code="empty_body")
    blobs = ctx.app[BLOBS]
    path = blobs.new_path()
    try:
        try:
            size = await write_stream(ctx.request.content, path, IMPORT_MAX_BYTES)
        except ValueError:
            raise ApiError(f"the tarball is larger than {IMPORT_MAX_BYTES} bytes", status=413,
                           code="too_large") from None
        if size == 0:
            raise BadRequest("the tarball is empty", code="empty_body")
        token = blobs.offer(node.id, "get", path)
        try:
            reply = await _agent(ctx.app[HUB].call(node.id, p.IMAGE_IMPORT, {
                "url": blobs.url_path(token), "repository": repository, "tag": tag}, timeout=TRANSFER_TIMEOUT_S))
        finally:
            blobs.close(token)
    finally:
        discard(path)
    return await _claimed(ctx, node.id, f"{repository}:{tag}", reply.get("image") or {}, "image.import", bytes=size)


@api.delete("/images/{id}", summary="Delete an image from its node; refused while an instance uses it unless "
            "?force=true", tag="images", status=204, errors=(403, 404, 409, 502))
async def delete_image(ctx: Ctx) -> Any:
    user = ctx.user_identity.user
    force = ctx.request.query.get("force", "").lower() in ("1", "true", "yes")
    async with ctx.app[DB].read() as conn:
        image = await svc.get_visible(conn, user, ctx.path_int("id"))
        _may_manage(user, image)
        users_of = await svc.users_of(conn, image["node_id"], image["ref"])
    if users_of and not force:
        raise Conflict(f"instance(s) {', '.join(users_of)} use {image['ref']}; delete them or pass ?force=true",
                       code="image_in_use")
    await ctx.app[HUB].call(image["node_id"], p.IMAGE_REMOVE, {"ref": image["ref"], "force": force}, timeout=300)
    async with ctx.app[DB].begin() as conn:
        await svc.remove(conn, image["id"])
        await audit.record(conn, actor_of(ctx.request, ctx.identity), "image.delete", "image", image["id"],
                           ref=image["ref"], node_id=image["node_id"], force=force)
    return None


@api.patch("/images/{id}", summary="Make an image public (every user may use it) or private", tag="images",
           body=ImagePatchIn, response=ImageOut, errors=(403, 404))
async def patch_image(ctx: Ctx) -> Any:
    b: ImagePatchIn = ctx.body
    user = ctx.user_identity.user
    async with ctx.app[DB].begin() as conn:
        image = await svc.get_visible(conn, user, ctx.path_int("id"))
        _may_manage(user, image)
        await svc.set_public(conn, image["id"], b.public)
        await audit.record(conn, actor_of(ctx.request, ctx.identity), "image.public" if b.public else "image.private",
                           "image", image["id"], ref=image["ref"])
        return ImageOut(**await svc.get_visible(conn, user, image["id"]))


@api.post("/images/{id}/copy", summary="Copy an image to another node, through dmd", tag="images", body=CopyIn,
          response=ImageOut, status=201, errors=(403, 404, 409, 502, 504))
async def copy_image(ctx: Ctx) -> Any:
    b: CopyIn = ctx.body
    user = ctx.user_identity.user
    async with ctx.app[DB].read() as conn:
        image = await svc.get_visible(conn, user, ctx.path_int("id"))
        target = await node_svc.get_visible(conn, user, b.node_id)
    if target.id == image["node_id"]:
        raise Conflict("the image is already on that node", code="same_node")
    hub, blobs = ctx.app[HUB], ctx.app[BLOBS]
    path = blobs.new_path()
    up = blobs.offer(image["node_id"], "put", path)
    try:
        await hub.call(image["node_id"], p.IMAGE_EXPORT, {"ref": image["ref"], "url": blobs.url_path(up)},
                       timeout=TRANSFER_TIMEOUT_S)
        blob = blobs.get(up)
        if blob is None or blob.error or not path.exists():
            raise ApiError("the source node did not deliver the image", status=502, code="transfer_failed")
        down = blobs.offer(target.id, "get", path)
        repository, tag = _split_ref(image["ref"])
        try:
            reply = await _agent(hub.call(target.id, p.IMAGE_IMPORT, {
                "url": blobs.url_path(down), "repository": repository, "tag": tag}, timeout=TRANSFER_TIMEOUT_S))
        finally:
            blobs.close(down)
    finally:
        blobs.close(up)
        discard(path)
    out = await _claimed(ctx, target.id, image["ref"], reply.get("image") or {}, "image.copy",
                         from_node=image["node_id"])
    if image["public"]:
        async with ctx.app[DB].begin() as conn:
            await svc.set_public(conn, out.id, True)
        out.public = True
    return out


@api.post("/instances/{id}/commit", summary="Save an instance's container as a new image on its node",
          tag="images", body=CommitIn, response=ImageOut, status=201, errors=(404, 409, 422, 502, 504))
async def commit_instance(ctx: Ctx) -> Any:
    b: CommitIn = ctx.body
    async with ctx.app[DB].read() as conn:
        inst = await inst_svc.get_visible(conn, ctx.user_identity.user, ctx.path_int("id"))
    reply = await _agent(ctx.app[HUB].call(inst.node_id, p.IMAGE_COMMIT, {
        "instance_id": inst.id, "repository": b.repository, "tag": b.tag}, timeout=TRANSFER_TIMEOUT_S))
    return await _claimed(ctx, inst.node_id, f"{b.repository}:{b.tag}", reply.get("image") or {}, "image.commit",
                          instance_id=inst.id)
