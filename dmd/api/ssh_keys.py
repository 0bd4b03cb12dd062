"""SSH public keys of the calling user: add, list, read, rename, delete."""

from __future__ import annotations

from typing import Any

from dmd.api.registry import Api, Ctx
from dmd.auth.flows import actor_of
from dmd.schemas import (
    Page,
    SshKeyCreatedOut,
    SshKeyCreateIn,
    SshKeyOut,
    SshKeyPatchIn,
    SshKeyQuery,
    page_of,
)
from dmd.usecases import ssh_keys as uc
from dmd.views import key_out

api = Api()


@api.get("/ssh-keys", summary="Your SSH keys (administrators: anyone's, with ?user_id=)", tag="ssh-keys",
         query=SshKeyQuery, response=Page[SshKeyOut], errors=(403, 404))
async def list_keys(ctx: Ctx) -> Any:
    q: SshKeyQuery = ctx.query
    rows = await uc.list_for(ctx.dm, ctx.user_identity.user, q.user_id, limit=q.limit + 1, after_id=q.cursor_id)
    return page_of([key_out(k) for k in rows], q)


@api.post("/ssh-keys", summary="Add an SSH public key; options before it are dropped", tag="ssh-keys",
          body=SshKeyCreateIn, response=SshKeyCreatedOut, status=201, errors=(409, 422))
async def create_key(ctx: Ctx) -> Any:
    b: SshKeyCreateIn = ctx.body
    key, parsed = await uc.add(ctx.dm, actor_of(ctx.request, ctx.identity), ctx.user_identity.user, b.name,
                               b.public_key)
    return SshKeyCreatedOut(**key_out(key).model_dump(), options_removed=list(parsed.options_removed))


@api.get("/ssh-keys/{id}", summary="One of your SSH keys", tag="ssh-keys", response=SshKeyOut, errors=(404,))
async def get_key(ctx: Ctx) -> Any:
    return key_out(await uc.get(ctx.dm, ctx.user_identity.user, ctx.path_int("id")))


@api.patch("/ssh-keys/{id}", summary="Rename one of your SSH keys", tag="ssh-keys", body=SshKeyPatchIn,
           response=SshKeyOut, errors=(404, 422))
async def rename_key(ctx: Ctx) -> Any:
    b: SshKeyPatchIn = ctx.body
    key = await uc.rename(ctx.dm, actor_of(ctx.request, ctx.identity), ctx.user_identity.user,
                          ctx.path_int("id"), b.name)
    return key_out(key)


@api.delete("/ssh-keys/{id}", summary="Delete one of your SSH keys", tag="ssh-keys", status=204, errors=(404,))
async def delete_key(ctx: Ctx) -> Any:
    await uc.delete(ctx.dm, actor_of(ctx.request, ctx.identity), ctx.user_identity.user, ctx.path_int("id"))
    return None
