"""Log in and out, who am I, password change, first-run setup."""

from __future__ import annotations

from typing import Any

from dmd.api.registry import Api, Ctx, json_response
from dmd.auth import flows
from dmd.schemas import LoginIn, LoginOut, MeOut, PasswordChangeIn, SetupIn, UserOut

api = Api()
_USER_FIELDS = tuple(UserOut.model_fields)


@api.post("/auth/login", summary="Log in with email and password (sets the session cookie)",
          tag="auth", auth="optional", body=LoginIn, response=LoginOut, errors=(401, 403, 429),
          csrf_exempt=True)
async def login(ctx: Ctx) -> Any:
    body: LoginIn = ctx.body
    user = await flows.login(ctx.dm, ctx.request, body.email, body.password)
    resp = json_response({})
    token = await flows.start_session(ctx.request, resp, user)
    resp.text = LoginOut(user=UserOut.of(user), csrf_token=token).model_dump_json()
    return resp


@api.post("/auth/logout", summary="End this session", tag="auth", auth="optional", status=204)
async def logout(ctx: Ctx) -> Any:
    from aiohttp import web

    resp = web.Response(status=204)
    await flows.logout(ctx.dm, ctx.request, resp, ctx.identity)
    return resp


@api.get("/me", summary="The calling user", tag="auth", response=MeOut, errors=(401,))
async def me(ctx: Ctx) -> Any:
    ident = ctx.user_identity
    user = ident.user
    # One validation, straight from the user row (this is the hot path of `make bench`).
    return MeOut(auth=ident.via, **{name: getattr(user, name) for name in _USER_FIELDS})


@api.post("/me/password", summary="Change your password (ends your other sessions; by default also "
          "revokes your API tokens: sign_out_everywhere)", tag="auth",
          body=PasswordChangeIn, status=204, errors=(401, 403, 422, 429))
async def change_password(ctx: Ctx) -> Any:
    body: PasswordChangeIn = ctx.body
    await flows.change_password(ctx.dm, ctx.request, ctx.user_identity, body.current_password,
                                body.new_password, sign_out_everywhere=body.sign_out_everywhere)
    return None


@api.post("/setup", summary="Create the first administrator with the one-time setup token",
          tag="auth", auth="none", body=SetupIn, response=LoginOut, status=201, errors=(403, 409))
async def setup(ctx: Ctx) -> Any:
    body: SetupIn = ctx.body
    user = await flows.complete_setup(ctx.dm, ctx.request, body.token, body.email, body.password, body.username)
    resp = json_response({}, status=201)
    token = await flows.start_session(ctx.request, resp, user)
    resp.text = LoginOut(user=UserOut.of(user), csrf_token=token).model_dump_json()
    return resp
