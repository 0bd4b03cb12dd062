"""Personal API tokens of the calling user."""

from __future__ import annotations

from typing import Any

from dmd.api.registry import Api, Ctx
from dmd.auth.flows import actor_of
from dmd.schemas import Page, PageQuery, TokenCreatedOut, TokenCreateIn, TokenOut, page_of
from dmd.usecases import accounts

api = Api()


@api.get("/tokens", summary="Your API tokens (never the secrets)", tag="tokens", query=PageQuery,
         response=Page[TokenOut])
async def list_tokens(ctx: Ctx) -> Any:
    q: PageQuery = ctx.query
    rows = await accounts.list_tokens(ctx.dm, ctx.user_identity.user.id, limit=q.limit + 1, after_id=q.cursor_id)
    return page_of([TokenOut.of(t) for t in rows], q)


@api.post("/tokens", summary="Create an API token; the secret is in this reply only", tag="tokens",
          body=TokenCreateIn, response=TokenCreatedOut, status=201, errors=(409, 422))
async def create_token(ctx: Ctx) -> Any:
    b: TokenCreateIn = ctx.body
    tok, secret = await accounts.create_token(
        ctx.dm, actor_of(ctx.request, ctx.identity), ctx.user_identity.user.id, b.name, b.expires_in_days
    )
    return TokenCreatedOut(**TokenOut.of(tok).model_dump(), token=secret)


@api.delete("/tokens/{id}", summary="Revoke one of your API tokens", tag="tokens", status=204, errors=(404,))
async def revoke_token(ctx: Ctx) -> Any:
    await accounts.revoke_token(ctx.dm, actor_of(ctx.request, ctx.identity), ctx.user_identity.user.id,
                                ctx.path_int("id"))
    return None
