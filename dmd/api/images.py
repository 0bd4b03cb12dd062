"""Images on nodes: the catalogue, pull (with live progress), import, delete, commit, copy, public."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

from aiohttp import web

from dmd.api.registry import Api, Ctx
from dmd.auth.flows import actor_of
from dmd.errors import ApiError, BadRequest
from dmd.schemas import CommitIn, CopyIn, ImageOut, ImagePatchIn, PullIn
from dmd.usecases import images as uc

api = Api()
# Kept here too: callers and tests read the limits from the API module.
IMPORT_MAX_BYTES = uc.IMPORT_MAX_BYTES
TRANSFER_TIMEOUT_S = uc.TRANSFER_TIMEOUT_S


@api.get("/nodes/{id}/images", summary="Images on a node that you may use", tag="images", response=list[ImageOut],
         errors=(404,))
async def list_images(ctx: Ctx) -> Any:
    return [ImageOut(**r) for r in await uc.list_on_node(ctx.dm, ctx.user_identity.user, ctx.path_int("id"))]


@api.post("/nodes/{id}/images/pull", summary="Pull an image onto a node (Accept: application/x-ndjson streams "
          "the progress); registry credentials are used once and never stored", tag="images", body=PullIn,
          response=ImageOut, status=201, errors=(404, 409, 422, 429, 502, 504))
async def pull_image(ctx: Ctx) -> Any:
    b: PullIn = ctx.body
    user = ctx.user_identity.user
    node = await uc.visible_node(ctx.dm, user, ctx.path_int("id"))
    actor = actor_of(ctx.request, ctx.identity)
    progress_id = secrets.token_hex(8)
    # Refusals (registry, a reference not yours, too many transfers) are answered with their
    # status before any stream starts.
    call = await uc.start_pull(ctx.dm, actor, user, node, b.ref, username=b.username, password=b.password,
                               progress_id=progress_id)
    if "application/x-ndjson" not in ctx.request.headers.get("Accept", ""):
        return ImageOut(**await call)
    # Stream Docker's progress as it comes, then the result (or the error) as the last line.
    with uc.pull_progress(ctx.dm, node.id, progress_id) as queue:
        task = asyncio.ensure_future(call)  # at once: the pull gives its transfer slot back when it ends
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-cache"})
        await resp.prepare(ctx.request)
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
    await resp.write_eof()
    return resp


@api.post("/nodes/{id}/images/import", summary="Import a tarball (docker save output or a root filesystem tar) "
          "sent as the raw request body; ?repository=NAME&tag=TAG. Refusals (node not joined or offline, a "
          "reference that is not yours, too many transfers, too little free space) come before the body is read",
          tag="images", response=ImageOut, status=201, errors=(400, 404, 409, 413, 422, 429, 502, 504, 507))
async def import_image(ctx: Ctx) -> Any:
    user = ctx.user_identity.user
    repository = ctx.request.query.get("repository", "")
    tag = ctx.request.query.get("tag", "latest")
    uc.check_import_name(repository, tag)  # before the upload
    node = await uc.visible_node(ctx.dm, user, ctx.path_int("id"))
    if not ctx.request.body_exists:
        raise BadRequest("send the tarball as the request body", code="empty_body")
    row = await uc.import_tarball(ctx.dm, actor_of(ctx.request, ctx.identity), user, node, repository, tag,
                                   ctx.request.content.read, IMPORT_MAX_BYTES, ctx.request.content_length)
    return ImageOut(**row)


@api.delete("/images/{id}", summary="Delete an image from its node; refused while an instance uses it unless "
            "?force=true", tag="images", status=204, errors=(403, 404, 409, 502))
async def delete_image(ctx: Ctx) -> Any:
    force = ctx.request.query.get("force", "").lower() in ("1", "true", "yes")
    await uc.delete(ctx.dm, actor_of(ctx.request, ctx.identity), ctx.user_identity.user, ctx.path_int("id"),
                     force)
    return None


@api.patch("/images/{id}", summary="Make an image public (every user may use it) or private", tag="images",
           body=ImagePatchIn, response=ImageOut, errors=(403, 404))
async def patch_image(ctx: Ctx) -> Any:
    b: ImagePatchIn = ctx.body
    return ImageOut(**await uc.set_public(ctx.dm, actor_of(ctx.request, ctx.identity), ctx.user_identity.user,
                                           ctx.path_int("id"), b.public))


@api.post("/images/{id}/copy", summary="Copy an image to another node, through dmd", tag="images", body=CopyIn,
          response=ImageOut, status=201, errors=(403, 404, 409, 429, 502, 504, 507))
async def copy_image(ctx: Ctx) -> Any:
    b: CopyIn = ctx.body
    return ImageOut(**await uc.copy(ctx.dm, actor_of(ctx.request, ctx.identity), ctx.user_identity.user,
                                     ctx.path_int("id"), b.node_id))


@api.post("/instances/{id}/commit", summary="Save an instance's container as a new image on its node",
          tag="images", body=CommitIn, response=ImageOut, status=201, errors=(404, 409, 422, 429, 502, 504))
async def commit_instance(ctx: Ctx) -> Any:
    b: CommitIn = ctx.body
    return ImageOut(**await uc.commit(ctx.dm, actor_of(ctx.request, ctx.identity), ctx.user_identity.user,
                                       ctx.path_int("id"), b.repository, b.tag))
