"""SSH public keys of the calling user: add, list, read, rename, delete."""

from __future__ import annotations

from typing import Any

from dmd.api.registry import Api, Ctx
from dmd.api.schemas import (
    Page,
    SshKeyCreatedOut,
    SshKeyCreateIn,
    SshKeyOut,
    SshKeyPatchIn,
    SshKeyQuery,
    page_of,
)
from dmd.auth.flows import actor_of
from dmd.errors import Forbidden
from dmd.services import access_ops
from dmd.services import ssh_keys as svc
from dmd.services import users as user_svc

api = Api()


def key_out(k: svc.SshKey) -> SshKeyOut:
    return SshKeyOut(
        id=k.id, user_id=k.user_id, name=k.name, type=k.key_type, bits=k.bits, fingerprint=k.fingerprint,
        comment=k.comment, public_key=k.public_key, created_at=k.created_at, updated_at=k.updated_at,
    )


@api.get("/ssh-keys", summary="Your SSH keys (administrators: anyone's, with ?user_id=)", tag="ssh-keys",
         query=SshKeyQuery, response=Page[SshKeyOut], errors=(403, 404))
async def list_keys(ctx: Ctx) -> Any:
    q: SshKeyQuery = ctx.query
    me = ctx.user_identity
    user_id = me.user.id
    async with ctx.dm.db.read() as conn:
        if q.user_id is not None and q.user_id != user_id:
            if not me.is_admin:
                raise Forbidden("only administrators may list another user's SSH keys")
            user_id = (await user_svc.get(conn, q.user_id)).id
        rows = await svc.list_for(conn, user_id, limit=q.limit + 1, after_id=q.cursor_id)
    return page_of([key_out(k) for k in rows], q)


@api.post("/ssh-keys", summary="Add an SSH public key; options before it are dropped", tag="ssh-keys",
          body=SshKeyCreateIn, response=SshKeyCreatedOut, status=201, errors=(409, 422))
async def create_key(ctx: Ctx) -> Any:
    b: SshKeyCreateIn = ctx.body
    key, parsed = await access_ops.add_key(ctx.dm.db, ctx.dm.reconciler, actor_of(ctx.request, ctx.identity),
                                           ctx.user_identity.user, b.name, b.public_key)
    return SshKeyCreatedOut(**key_out(key).model_dump(), options_removed=list(parsed.options_removed))


@api.get("/ssh-keys/{id}", summary="One of your SSH keys", tag="ssh-keys", response=SshKeyOut, errors=(404,))
async def get_key(ctx: Ctx) -> Any:
    async with ctx.dm.db.read() as conn:
        return key_out(await svc.get(conn, ctx.user_identity.user.id, ctx.path_int("id")))


@api.patch("/ssh-keys/{id}", summary="Rename one of your SSH keys", tag="ssh-keys", body=SshKeyPatchIn,
           response=SshKeyOut, errors=(404, 422))
async def rename_key(ctx: Ctx) -> Any:
    b: SshKeyPatchIn = ctx.body
    key = await svc.rename(ctx.dm.db, actor_of(ctx.request, ctx.identity), ctx.user_identity.user,
                           ctx.path_int("id"), b.name)
    return key_out(key)


@api.delete("/ssh-keys/{id}", summary="Delete one of your SSH keys", tag="ssh-keys", status=204, errors=(404,))
async def delete_key(ctx: Ctx) -> Any:
    await access_ops.delete_key(ctx.dm.db, ctx.dm.reconciler, actor_of(ctx.request, ctx.identity),
                                ctx.user_identity.user, ctx.path_int("id"))
    return None
