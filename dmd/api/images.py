"""Images on nodes: the catalogue, pull (with live progress), import, delete, commit, copy, public."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

from aiohttp import web

from agent import protocol as p
from dmd.agents import HUB
from dmd.api.registry import Api, Ctx
from dmd.api.schemas import CommitIn, CopyIn, ImageOut, ImagePatchIn, PullIn
from dmd.auth.flows import actor_of
from dmd.errors import ApiError, BadRequest
from dmd.services import image_ops as ops
from dmd.services import images as svc
from dmd.services import nodes as node_svc
from dmd.state import DB

api = Api()
# Kept here too: callers and tests read the limits from the API module.
IMPORT_MAX_BYTES = ops.IMPORT_MAX_BYTES
TRANSFER_TIMEOUT_S = ops.TRANSFER_TIMEOUT_S


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
    node = await ops.visible_node(ctx.app, user, ctx.path_int("id"))
    actor = actor_of(ctx.request, ctx.identity)
    hub = ctx.app[HUB]
    progress_id = secrets.token_hex(8)
    call = ops.pull(ctx.app, actor, user, node, b.ref, username=b.username, password=b.password,
                    progress_id=progress_id)
    if "application/x-ndjson" not in ctx.request.headers.get("Accept", ""):
        return ImageOut(**await call)
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
            out = ImageOut(**task.result())
            await resp.write((json.dumps({"image": out.model_dump(mode="json")}) + "\n").encode())
        except ApiError as e:
            await resp.write((json.dumps(e.body()) + "\n").encode())
    finally:
        hub.event_listeners.remove(on_event)
    await resp.write_eof()
    return resp


@api.post("/nodes/{id}/images/import", summary="Import a tarball (docker save output or a root filesystem tar) "
          "sent as the raw request body; ?repository=NAME&tag=TAG", tag="images", response=ImageOut, status=201,
          errors=(400, 404, 409, 413, 422, 502, 504))
async def import_image(ctx: Ctx) -> Any:
    user = ctx.user_identity.user
    repository = ctx.request.query.get("repository", "")
    tag = ctx.request.query.get("tag", "latest")
    ops.check_import_name(repository, tag)  # before the upload
    node = await ops.visible_node(ctx.app, user, ctx.path_int("id"))
    if not ctx.request.body_exists:
        raise BadRequest("send the tarball as the request body", code="empty_body")
    row = await ops.import_tarball(ctx.app, actor_of(ctx.request, ctx.identity), user, node, repository, tag,
                                   ctx.request.content.read, IMPORT_MAX_BYTES)
    return ImageOut(**row)


@api.delete("/images/{id}", summary="Delete an image from its node; refused while an instance uses it unless "
            "?force=true", tag="images", status=204, errors=(403, 404, 409, 502))
async def delete_image(ctx: Ctx) -> Any:
    force = ctx.request.query.get("force", "").lower() in ("1", "true", "yes")
    await ops.delete(ctx.app, actor_of(ctx.request, ctx.identity), ctx.user_identity.user, ctx.path_int("id"),
                     force)
    return None


@api.patch("/images/{id}", summary="Make an image public (every user may use it) or private", tag="images",
           body=ImagePatchIn, response=ImageOut, errors=(403, 404))
async def patch_image(ctx: Ctx) -> Any:
    b: ImagePatchIn = ctx.body
    return ImageOut(**await ops.set_public(ctx.app, actor_of(ctx.request, ctx.identity), ctx.user_identity.user,
                                           ctx.path_int("id"), b.public))


@api.post("/images/{id}/copy", summary="Copy an image to another node, through dmd", tag="images", body=CopyIn,
          response=ImageOut, status=201, errors=(403, 404, 409, 502, 504))
async def copy_image(ctx: Ctx) -> Any:
    b: CopyIn = ctx.body
    return ImageOut(**await ops.copy(ctx.app, actor_of(ctx.request, ctx.identity), ctx.user_identity.user,
                                     ctx.path_int("id"), b.node_id))


@api.post("/instances/{id}/commit", summary="Save an instance's container as a new image on its node",
          tag="images", body=CommitIn, response=ImageOut, status=201, errors=(404, 409, 422, 502, 504))
async def commit_instance(ctx: Ctx) -> Any:
    b: CommitIn = ctx.body
    return ImageOut(**await ops.commit(ctx.app, actor_of(ctx.request, ctx.identity), ctx.user_identity.user,
                                       ctx.path_int("id"), b.repository, b.tag))
