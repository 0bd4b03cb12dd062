"""Personal API tokens of the calling user."""

from __future__ import annotations

import datetime as dt
from typing import Any

from dmd.api.registry import Api, Ctx
from dmd.api.schemas import Page, PageQuery, TokenCreatedOut, TokenCreateIn, TokenOut, page_of
from dmd.auth.flows import actor_of
from dmd.db.types import utcnow
from dmd.errors import Conflict
from dmd.services import audit
from dmd.services import tokens as svc
from dmd.state import DB, TOKEN_CACHE

api = Api()


@api.get("/tokens", summary="Your API tokens (never the secrets)", tag="tokens", query=PageQuery,
         response=Page[TokenOut])
async def list_tokens(ctx: Ctx) -> Any:
    q: PageQuery = ctx.query
    async with ctx.app[DB].read() as conn:
        rows = await svc.list_for(conn, ctx.user_identity.user.id, limit=q.limit + 1, after_id=q.cursor_id)
    return page_of([TokenOut.of(t) for t in rows], q)


@api.post("/tokens", summary="Create an API token; the secret is in this reply only", tag="tokens",
          body=TokenCreateIn, response=TokenCreatedOut, status=201, errors=(409, 422))
async def create_token(ctx: Ctx) -> Any:
    b: TokenCreateIn = ctx.body
    uid = ctx.user_identity.user.id
    expires = utcnow() + dt.timedelta(days=b.expires_in_days) if b.expires_in_days else None
    async with ctx.app[DB].begin() as conn:
        if await svc.count_for(conn, uid) >= svc.MAX_TOKENS_PER_USER:
            raise Conflict(f"you have {svc.MAX_TOKENS_PER_USER} tokens; revoke one first", code="too_many_tokens")
        tok, secret = await svc.create(conn, uid, b.name, expires)
        await audit.record(conn, actor_of(ctx.request, ctx.identity), "token.create", "token", tok.id, name=tok.name)
    return TokenCreatedOut(**TokenOut.of(tok).model_dump(), token=secret)


@api.delete("/tokens/{id}", summary="Revoke one of your API tokens", tag="tokens", status=204, errors=(404,))
async def revoke_token(ctx: Ctx) -> Any:
    token_id = ctx.path_int("id")
    async with ctx.app[DB].begin() as conn:
        tok = await svc.revoke(conn, ctx.user_identity.user.id, token_id)
        await audit.record(conn, actor_of(ctx.request, ctx.identity), "token.revoke", "token", tok.id, name=tok.name)
    ctx.app[TOKEN_CACHE].forget_token(token_id)
    return None
