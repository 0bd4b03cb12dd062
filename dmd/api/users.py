"""Users (admins only): create, list, read, change, disable, delete."""

from __future__ import annotations

from typing import Any

from dmd.api.registry import Api, Ctx
from dmd.api.schemas import Page, PageQuery, UserCreateIn, UserOut, UserPatchIn, page_of
from dmd.auth.flows import actor_of
from dmd.auth.passwords import hash_password
from dmd.services import audit
from dmd.services import users as svc
from dmd.state import DB, TOKEN_CACHE

api = Api()


@api.get("/users", summary="List users", tag="users", auth="admin", query=PageQuery,
         response=Page[UserOut])
async def list_users(ctx: Ctx) -> Any:
    q: PageQuery = ctx.query
    async with ctx.app[DB].read() as conn:
        rows = await svc.list_page(conn, limit=q.limit + 1, after_id=q.cursor_id)
    return page_of([UserOut.of(u) for u in rows], q)


@api.post("/users", summary="Create a user", tag="users", auth="admin", body=UserCreateIn,
          response=UserOut, status=201, errors=(409, 422))
async def create_user(ctx: Ctx) -> Any:
    b: UserCreateIn = ctx.body
    pw = await hash_password(b.password)
    async with ctx.app[DB].begin() as conn:
        user = await svc.create(
            conn, email=b.email, password_hash=pw, role=b.role, username=b.username,
            instance_limit=b.instance_limit, node_limit=b.node_limit, gpu_limit=b.gpu_limit,
        )
        await audit.record(conn, actor_of(ctx.request, ctx.identity), "user.create", "user", user.id,
                           email=user.email, role=user.role)
    return UserOut.of(user)


@api.get("/users/{id}", summary="One user", tag="users", auth="admin", response=UserOut, errors=(404,))
async def get_user(ctx: Ctx) -> Any:
    async with ctx.app[DB].read() as conn:
        return UserOut.of(await svc.get(conn, ctx.path_int("id")))


@api.patch("/users/{id}", summary="Change a user: role, quotas, disabled, email, password",
           tag="users", auth="admin", body=UserPatchIn, response=UserOut, errors=(404, 409, 422))
async def patch_user(ctx: Ctx) -> Any:
    b: UserPatchIn = ctx.body
    user_id = ctx.path_int("id")
    changes = {k: getattr(b, k) for k in b.model_fields_set}
    for k in ("email", "username", "role", "disabled", "password"):
        if k in changes and changes[k] is None:
            del changes[k]  # null means "leave as is" for these; only quotas take null
    new_pw = changes.pop("password", None)
    pw_hash = await hash_password(new_pw) if new_pw else None
    async with ctx.app[DB].begin() as conn:
        before, after = await svc.update(conn, user_id, changes)
        if pw_hash:
            after = await svc.set_password(conn, user_id, pw_hash)
        diff = {k: [getattr(before, k), getattr(after, k)] for k in changes if getattr(before, k) != getattr(after, k)}
        if pw_hash:
            diff["password"] = ["(set)", "(set)"]
        action = "user.update"
        if changes.get("disabled") is True and not before.disabled:
            action = "user.disable"
        elif changes.get("disabled") is False and before.disabled:
            action = "user.enable"
        await audit.record(conn, actor_of(ctx.request, ctx.identity), action, "user", user_id, changes=diff)
    ctx.app[TOKEN_CACHE].forget_user(user_id)
    return UserOut.of(after)


@api.delete("/users/{id}", summary="Delete a user (their tokens and sessions end)", tag="users",
            auth="admin", status=204, errors=(404, 409))
async def delete_user(ctx: Ctx) -> Any:
    user_id = ctx.path_int("id")
    async with ctx.app[DB].begin() as conn:
        gone = await svc.delete(conn, user_id)
        await audit.record(conn, actor_of(ctx.request, ctx.identity), "user.delete", "user", user_id,
                           email=gone.email, username=gone.username)
    ctx.app[TOKEN_CACHE].forget_user(user_id)
    return None
