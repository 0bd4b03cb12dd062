"""Your account: profile, password, personal API tokens."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp_session import get_session

from dmd.auth import flows
from dmd.auth.flows import actor_of
from dmd.errors import ApiError, NotFound
from dmd.pages import forms
from dmd.pages.render import (
    current_identity,
    dm_of,
    flash,
    form_data,
    lang_of,
    login_required,
    path_id,
    redirect,
    render,
)
from dmd.schemas import PasswordChangeIn, TokenCreateIn
from dmd.usecases import accounts, gateway

routes = web.RouteTableDef()

# The new secret, kept in the session only until the next page view.
NEW_TOKEN_KEY = "new_token"  # noqa: S105 (a session key, not a secret)


async def _page(request: web.Request, *, status: int = 200, **extra: Any) -> web.Response:
    ident = current_identity(request)
    dm = dm_of(request)
    tokens = await accounts.list_tokens(dm, ident.user.id, limit=accounts.MAX_TOKENS_PER_USER)
    view = await gateway.account_view(dm, ident.user)
    new_token = None
    if status == 200:
        session = await get_session(request)
        if NEW_TOKEN_KEY in session:
            new_token = session.pop(NEW_TOKEN_KEY)
    ctx: dict[str, Any] = {
        "nav_active": "account",
        "user": ident.user,
        "tokens": tokens,
        "max_tokens": accounts.MAX_TOKENS_PER_USER,
        "new_token": new_token,
        "pw_error": None,
        "sign_out_everywhere": True,  # ticked unless the user unticked it on a failed attempt
        "token_error": None,
        "token_form": {"name": "", "expires_in_days": ""},
        "here": "/account",
        "gateway": view.address,
        "gateway_config": view.config,
        "base_url": view.base_url,
    }
    ctx.update(extra)
    return await render(request, "account.html", ctx, status=status)


@routes.get("/account")
@login_required
async def account(request: web.Request) -> web.StreamResponse:
    return await _page(request)


@routes.post("/account/password")
@login_required
async def change_password(request: web.Request) -> web.StreamResponse:
    ident = current_identity(request)
    data = await form_data(request)
    try:
        if data.get("new_password", "") != data.get("new_password2", ""):
            raise forms.FormError(422, "err.passwords_differ", "new_password2")
        body = forms.validate(PasswordChangeIn, {
            "current_password": data.get("current_password", ""),
            "new_password": data.get("new_password", ""),
            # A checkbox sends nothing when unticked.
            "sign_out_everywhere": data.get("sign_out_everywhere") == "on",
        })
        try:
            await flows.change_password(dm_of(request), request, ident, body.current_password,
                                        body.new_password, sign_out_everywhere=body.sign_out_everywhere)
        except ApiError as e:
            raise forms.from_api_error(e) from None
    except forms.FormError as fe:
        if fe.key == "err.bad_credentials":
            fe.key, fe.field = "err.wrong_current_password", "current_password"
        return await _page(request, status=fe.status, pw_error=fe.view(lang_of(request)),
                           sign_out_everywhere=data.get("sign_out_everywhere") == "on")
    await flash(request, "ok", "flash.password_changed_everywhere" if body.sign_out_everywhere
                else "flash.password_changed")
    return redirect("/account")


@routes.post("/account/tokens")
@login_required
async def create_token(request: web.Request) -> web.StreamResponse:
    ident = current_identity(request)
    data = await form_data(request)
    try:
        body = forms.validate(TokenCreateIn, {
            "name": data.get("name", ""),
            "expires_in_days": forms.optional_int(data.get("expires_in_days")),
        })
        try:
            tok, secret = await accounts.create_token(
                dm_of(request), actor_of(request, ident), ident.user.id, body.name, body.expires_in_days
            )
        except ApiError as e:
            raise forms.from_api_error(e) from None
    except forms.FormError as fe:
        return await _page(
            request, status=fe.status, token_error=fe.view(lang_of(request)),
            token_form=forms.kept(data, "name", "expires_in_days"),
        )
    session = await get_session(request)
    session[NEW_TOKEN_KEY] = {"id": tok.id, "name": tok.name, "secret": secret}
    return redirect("/account#new-token")


@routes.post("/account/tokens/{id}/revoke")
@login_required
async def revoke_token(request: web.Request) -> web.StreamResponse:
    ident = current_identity(request)
    token_id = path_id(request)
    if token_id is None:
        raise NotFound("no such token")
    tok = await accounts.revoke_token(dm_of(request), actor_of(request, ident), ident.user.id, token_id)
    await flash(request, "ok", "flash.token_revoked", name=tok.name)
    return redirect("/account")
