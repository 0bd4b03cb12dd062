"""The front door: /, log in, log out, first-run setup, and the language/theme preferences."""

from __future__ import annotations

from aiohttp import web

from dmd import i18n
from dmd.auth import flows
from dmd.errors import ApiError
from dmd.models import User
from dmd.pages import forms
from dmd.pages.render import (
    LANG_COOKIE,
    PREF_MAX_AGE,
    THEME_COOKIE,
    THEMES,
    check_anon_csrf,
    dm_of,
    flash,
    form_data,
    identity,
    lang_of,
    redirect,
    render_anon_form,
    safe_next,
    url_with,
)
from dmd.schemas import LoginIn, SetupIn
from dmd.usecases import auth

routes = web.RouteTableDef()


async def _setup_pending(request: web.Request) -> bool:
    return await auth.setup_pending(dm_of(request))


def landing(user: User) -> str:
    """Where a user lands after logging in: administrators on the nodes they run, everyone
    else on their instances (a plain user may have no node of their own)."""
    return "/nodes" if user.is_admin else "/instances"


@routes.get("/")
async def home(request: web.Request) -> web.StreamResponse:
    if (ident := identity(request)) is not None:
        return redirect(landing(ident.user))
    if await _setup_pending(request):
        return redirect("/setup")  # the token itself is only in dmd's output
    return redirect("/login")


# --- log in / out -----------------------------------------------------------------------

@routes.get("/login")
async def login_form(request: web.Request) -> web.StreamResponse:
    nxt = safe_next(request.query.get("next"), "")  # empty: the user's landing page, once known
    if (ident := identity(request)) is not None:
        return redirect(nxt or landing(ident.user))
    return await render_anon_form(request, "login.html", {"next": nxt, "form": {"email": ""},
                                                          "error": None})


@routes.post("/login")
async def login_submit(request: web.Request) -> web.StreamResponse:
    await check_anon_csrf(request)
    data = await form_data(request)
    nxt = safe_next(data.get("next"), "")
    try:
        body = forms.validate(LoginIn, {"email": data.get("email", ""),
                                        "password": data.get("password", "")})
        try:
            user = await flows.login(dm_of(request), request, body.email, body.password)
        except ApiError as e:
            raise forms.from_api_error(e) from None
    except forms.FormError as fe:
        return await render_anon_form(
            request, "login.html",
            {"next": nxt, "form": forms.kept(data, "email"), "error": fe.view(lang_of(request)),
             "here": url_with("/login", next=nxt)},
            status=fe.status,
        )
    resp = redirect(nxt or landing(user))
    await flows.start_session(request, resp, user)
    return resp


@routes.post("/logout")
async def logout(request: web.Request) -> web.StreamResponse:
    resp = redirect("/login")
    ident = identity(request)
    await flows.logout(dm_of(request), request, resp, ident)
    if ident is not None:
        # The emptied session keeps only this message: it no longer names anyone.
        await flash(request, "ok", "flash.logged_out")
    return resp


# --- first run --------------------------------------------------------------------------

async def _setup_state(request: web.Request, token: str) -> str:
    return await auth.setup_state(dm_of(request), token)


_STATE_STATUS = {"form": 200, "need_link": 200, "done": 200, "bad_link": 403}


@routes.get("/setup")
async def setup_form(request: web.Request) -> web.StreamResponse:
    # The form has no action: it posts back to this same address, token included, so the
    # token never appears in the page itself (the language links lead back to plain /setup).
    state = await _setup_state(request, request.query.get("token", ""))
    if state == "done" and (ident := identity(request)) is not None:
        return redirect(landing(ident.user))
    return await render_anon_form(
        request, "setup.html",
        {"state": state, "form": {"email": "", "username": ""}, "error": None, "here": "/setup"},
        status=_STATE_STATUS[state],
    )


@routes.post("/setup")
async def setup_submit(request: web.Request) -> web.StreamResponse:
    await check_anon_csrf(request)
    token = request.query.get("token", "")
    data = await form_data(request)
    lang = lang_of(request)
    state = await _setup_state(request, token)
    if state != "form":
        return await render_anon_form(
            request, "setup.html", {"state": state, "form": {"email": "", "username": ""},
                                    "error": None, "here": "/setup"},
            status=409 if state == "done" else 403,
        )
    try:
        if data.get("password", "") != data.get("password2", ""):
            raise forms.FormError(422, "err.passwords_differ", "password2")
        body = forms.validate(SetupIn, {
            "token": token, "email": data.get("email", "").strip(),
            "password": data.get("password", ""),
            "username": forms.optional_text(data.get("username")),
        })
        try:
            user = await flows.complete_setup(dm_of(request), request, body.token, body.email, body.password,
                                              body.username)
        except ApiError as e:
            raise forms.from_api_error(e) from None
    except forms.FormError as fe:
        state = "form"
        if fe.field == "token" or fe.key == "err.bad_setup_token":
            state, fe.status = "bad_link", 403
        elif fe.key == "err.setup_done":
            state = "done"
        return await render_anon_form(
            request, "setup.html",
            {"state": state, "form": forms.kept(data, "email", "username"), "error": fe.view(lang),
             "here": "/setup"},
            status=fe.status,
        )
    resp = redirect("/nodes")
    await flows.start_session(request, resp, user)
    await flash(request, "ok", "flash.setup_done")
    return resp


# --- preferences ------------------------------------------------------------------------

@routes.get("/prefs")
async def prefs(request: web.Request) -> web.StreamResponse:
    """?lang=ja or ?theme=dark (with next=/where/you/were): a cookie, then back."""
    resp = redirect(safe_next(request.query.get("next"), "/"))
    lang = request.query.get("lang")
    if lang in i18n.LANGS:
        resp.set_cookie(LANG_COOKIE, lang, max_age=PREF_MAX_AGE, path="/", samesite="Lax")
    theme = request.query.get("theme")
    if theme in THEMES:
        resp.set_cookie(THEME_COOKIE, theme, max_age=PREF_MAX_AGE, path="/", samesite="Lax")
    return resp
