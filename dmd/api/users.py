"""Users (admins only): create, list, read, change, disable, delete."""

from __future__ import annotations

from typing import Any

from dmd.api.registry import Api, Ctx
from dmd.auth.flows import actor_of
from dmd.schemas import Page, PageQuery, UserCreateIn, UserOut, UserPatchIn, page_of
from dmd.usecases import accounts

api = Api()


@api.get("/users", summary="List users", tag="users", auth="admin", query=PageQuery,
         response=Page[UserOut])
async def list_users(ctx: Ctx) -> Any:
    q: PageQuery = ctx.query
    rows = await accounts.list_users(ctx.dm, limit=q.limit + 1, after_id=q.cursor_id)
    return page_of([UserOut.of(u) for u in rows], q)


@api.post("/users", summary="Create a user", tag="users", auth="admin", body=UserCreateIn,
          response=UserOut, status=201, errors=(409, 422))
async def create_user(ctx: Ctx) -> Any:
    b: UserCreateIn = ctx.body
    # Limits left out take the role's defaults (no node for plain users); a null one is no limit.
    user = await accounts.create_user(ctx.dm, actor_of(ctx.request, ctx.identity),
                                      **b.model_dump(exclude_unset=True))
    return UserOut.of(user)


@api.get("/users/{id}", summary="One user", tag="users", auth="admin", response=UserOut, errors=(404,))
async def get_user(ctx: Ctx) -> Any:
    return UserOut.of(await accounts.get_user(ctx.dm, ctx.path_int("id")))


@api.patch("/users/{id}", summary="Change a user: role, quotas, disabled, email, password",
           tag="users", auth="admin", body=UserPatchIn, response=UserOut, errors=(404, 409, 422))
async def patch_user(ctx: Ctx) -> Any:
    b: UserPatchIn = ctx.body
    after = await accounts.update_user(
        ctx.dm, actor_of(ctx.request, ctx.identity), ctx.path_int("id"),
        {k: getattr(b, k) for k in b.model_fields_set},
    )
    return UserOut.of(after)


@api.delete("/users/{id}", summary="Delete a user (their tokens and sessions end)", tag="users",
            auth="admin", status=204, errors=(404, 409))
async def delete_user(ctx: Ctx) -> Any:
    await accounts.delete_user(ctx.dm, actor_of(ctx.request, ctx.identity), ctx.path_int("id"))
    return None
