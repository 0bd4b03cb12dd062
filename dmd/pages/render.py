"""Rendering pages: the Jinja environment, the context every page gets, flash messages,
redirects, who may see a page, and the friendly error page."""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import hmac
import importlib.resources
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp_session import SESSION_KEY, Session, get_session

from dmd import i18n
from dmd.auth import csrf
from dmd.core import DM, Dm
from dmd.errors import Forbidden
from dmd.net import is_https
from dmd.schemas.base import parse_id
from dmd.sessions import SESSION_COOKIE
from dmd.sessions.signed import authenticated
from dmd.state import IDENTITY_KEY, Identity

log = logging.getLogger(__name__)

PageHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]

THEMES = ("light", "dark", "auto")
THEME_COOKIE = "dm_theme"
LANG_COOKIE = "dm_lang"
PREF_MAX_AGE = 365 * 24 * 3600
FLASH_KEY = "flash"
MAX_FLASH = 5
FLASH_COOKIE = "dm_flash"  # an anonymous visitor's flashes (signed; no server-side session)
ANON_FLASH_KEY: web.RequestKey[list[Any]] = web.RequestKey("dm_anon_flash", list)
FLASH_TAKEN_KEY: web.RequestKey[bool] = web.RequestKey("dm_flash_taken", bool)


def web_dir() -> Path:
    """The folder holding templates/ and static/: inside the installed package as `dmd.web`,
    else the repository's web/ folder (an editable install does not map it)."""
    try:
        found = Path(str(importlib.resources.files("dmd.web")))
        if (found / "templates").is_dir():
            return found
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parents[2] / "web"


# --- dmd's parts and who is asking -------------------------------------------------------

def dm_of(request: web.Request) -> Dm:
    """dmd's parts, for a page handler (the one place the pages read the application)."""
    return request.app[DM]


def identity(request: web.Request) -> Identity | None:
    ident = request.get(IDENTITY_KEY)
    return ident if isinstance(ident, Identity) else None


def current_identity(request: web.Request) -> Identity:
    ident = identity(request)
    assert ident is not None, "only behind login_required"
    return ident


def lang_of(request: web.Request) -> str:
    return i18n.negotiate(request.cookies.get(LANG_COOKIE), request.headers.get("Accept-Language"))


def theme_of(request: web.Request) -> str:
    t = request.cookies.get(THEME_COOKIE, "auto")
    return t if t in THEMES else "auto"


def translator(request: web.Request) -> Callable[..., str]:
    return functools.partial(i18n.gettext, lang_of(request))


# --- redirects ------------------------------------------------------------------------

def safe_next(value: str | None, default: str = "/nodes") -> str:
    """A local path to go back to, or `default`: never another site (no open redirect)."""
    if not value or len(value) > 2000 or not value.startswith("/"):
        return default
    if value.startswith(("//", "/\\")) or any(c in value for c in "\\\r\n\t") or not value.isprintable():
        return default
    return value


def redirect(location: str, status: int = 303) -> web.Response:
    resp = web.Response(status=status, headers={"Location": location})
    resp.headers["Cache-Control"] = "no-store"
    return resp


def login_redirect(request: web.Request) -> web.Response:
    if request.method in csrf.SAFE_METHODS and request.path not in ("/", "/login"):
        return redirect("/login?" + urlencode({"next": request.path_qs}))
    return redirect("/login")


def url_with(path: str, **params: str | int | None) -> str:
    q = {k: str(v) for k, v in params.items() if v not in (None, "")}
    return path + ("?" + urlencode(q) if q else "")


# --- flash messages -------------------------------------------------------------------

async def flash(request: web.Request, kind: str, key: str, **params: Any) -> None:
    """Remember a message (a catalogue key, translated when shown) for the next page: in the
    session when it names a user, else in a short-lived signed cookie (an anonymous visitor,
    or one who just logged out, gets no server-side session)."""
    session = await get_session(request)
    if not authenticated(session):
        request[ANON_FLASH_KEY] = [*request.get(ANON_FLASH_KEY, []), [kind, key, params]][-MAX_FLASH:]
        return
    items = list(session.get(FLASH_KEY) or [])[-(MAX_FLASH - 1):]
    items.append([kind, key, params])
    session[FLASH_KEY] = items


def _flash_mac(request: web.Request, payload: str) -> str:
    mac = hmac.new(dm_of(request).session_secret, b"flash:" + payload.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()[:18]).decode()


def _cookie_flashes(request: web.Request) -> list[Any]:
    """The signed flash cookie's messages (none when absent, mangled or not dmd's)."""
    raw = request.cookies.get(FLASH_COOKIE, "")
    payload, _, mac = raw.partition(".")
    if not payload or len(raw) > 3000 or not hmac.compare_digest(mac, _flash_mac(request, payload)):
        return []
    request[FLASH_TAKEN_KEY] = True  # the cookie goes with this reply
    try:
        items = json.loads(base64.urlsafe_b64decode(payload.encode()))
    except ValueError:
        return []
    return items if isinstance(items, list) else []


async def carry_flashes(request: web.Request, response: web.StreamResponse) -> None:
    """(on_response_prepare) Anonymous flashes go out in the signed cookie; shown ones are cleared.
    The response's headers are already made at this point, so the cookie is added as a header."""
    items = request.get(ANON_FLASH_KEY)
    if not items and not request.get(FLASH_TAKEN_KEY):
        return
    jar: SimpleCookie = SimpleCookie()
    if items:
        payload = base64.urlsafe_b64encode(json.dumps(items).encode()).decode()
        jar[FLASH_COOKIE] = f"{payload}.{_flash_mac(request, payload)}"
        jar[FLASH_COOKIE]["max-age"] = 300
    else:
        jar[FLASH_COOKIE] = ""
        jar[FLASH_COOKIE]["max-age"] = 0
    morsel = jar[FLASH_COOKIE]
    morsel["path"], morsel["httponly"], morsel["samesite"] = "/", True, "Lax"
    if is_https(request):
        morsel["secure"] = True
    response.headers.add("Set-Cookie", morsel.OutputString())


async def _take_flashes(request: web.Request, lang: str) -> list[dict[str, str]]:
    raw: list[Any] = _cookie_flashes(request) if FLASH_COOKIE in request.cookies else []
    if SESSION_COOKIE in request.cookies:
        session = await get_session(request)
        if FLASH_KEY in session:
            raw = [*raw, *(session.pop(FLASH_KEY) or [])]
    if not raw:
        return []
    out = []
    for item in raw if isinstance(raw, list) else []:
        try:
            kind, key, params = item
            out.append({"kind": str(kind), "text": i18n.gettext(lang, str(key), **dict(params))})
        except (ValueError, TypeError, KeyError):
            continue
    return out


# --- rendering ------------------------------------------------------------------------

def _fmt_time(value: dt.datetime | None, empty: str = "—") -> str:
    if value is None:
        return empty
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def setup_jinja(app: web.Application) -> jinja2.Environment:
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(web_dir() / "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        default_helpers=False,
    )
    env.filters["time"] = _fmt_time
    env.filters["urlq"] = lambda v: quote(str(v), safe="")
    return env


def _static_url(request: web.Request, name: str) -> str:
    return str(request.app.router["static"].url_for(filename=name))


def _session_csrf(request: web.Request) -> str:
    session = request.get(SESSION_KEY)
    if isinstance(session, Session):
        value = session.get("csrf")
        if isinstance(value, str):
            return value
    return ""


def base_context(request: web.Request) -> dict[str, Any]:
    lang = lang_of(request)
    ident = identity(request)
    return {
        "request": request,
        "lang": lang,
        "langs": i18n.LANGS,
        "theme": theme_of(request),
        "themes": THEMES,
        "_": functools.partial(i18n.gettext, lang),
        "me": ident.user if ident else None,
        "is_admin": bool(ident and ident.is_admin),
        "csrf_token": _session_csrf(request),
        # Where the language and theme links come back to: a page that answers GET.
        "here": request.path_qs if request.method in csrf.SAFE_METHODS else "/",
        "static": functools.partial(_static_url, request),
        "url_with": url_with,
        "flashes": [],
        "nav_active": "",
    }


async def render(
    request: web.Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status: int = 200,
    take_flashes: bool = True,
) -> web.Response:
    ctx = base_context(request)
    if take_flashes:
        ctx["flashes"] = await _take_flashes(request, ctx["lang"])
    ctx.update(context or {})
    resp = aiohttp_jinja2.render_template(template, request, ctx, status=status)
    resp.headers["Cache-Control"] = "no-store"
    return resp


# --- anonymous forms: double-submit CSRF ------------------------------------------------

def anon_csrf_token(request: web.Request) -> tuple[str, bool]:
    """The token for an anonymous form: the dm_csrf cookie's value when dmd made it, or a new
    one (True: set it). Nothing is stored on the server."""
    secret = dm_of(request).session_secret
    existing = request.cookies.get(csrf.CSRF_COOKIE)
    if csrf.is_ours(secret, existing):
        assert existing is not None
        return existing, False
    return csrf.new_token(secret), True


async def render_anon_form(
    request: web.Request, template: str, context: Mapping[str, Any], *, status: int = 200
) -> web.Response:
    token, fresh = anon_csrf_token(request)
    resp = await render(request, template, {**context, "csrf_token": token}, status=status)
    if fresh:
        csrf.set_cookie(request, resp, token)
    return resp


async def check_anon_csrf(request: web.Request) -> None:
    cookie = request.cookies.get(csrf.CSRF_COOKIE)
    # The form is read first, so an oversized one still answers 413.
    if not await csrf.check(request, cookie) or not csrf.is_ours(dm_of(request).session_secret, cookie):
        raise Forbidden("missing or wrong CSRF token", code="csrf")


# --- access ---------------------------------------------------------------------------

def login_required(fn: PageHandler) -> PageHandler:
    @functools.wraps(fn)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        if identity(request) is None:
            if request.method not in csrf.SAFE_METHODS:
                await flash(request, "info", "flash.session_ended")
            return login_redirect(request)
        return await fn(request)

    return wrapper


def admin_required(fn: PageHandler) -> PageHandler:
    @functools.wraps(fn)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        ident = identity(request)
        if ident is None:
            return login_redirect(request)
        if not ident.is_admin:
            return await render_error(request, 403, "admins only", reason="admin_only")
        return await fn(request)

    return wrapper


# --- error pages ----------------------------------------------------------------------

_KNOWN_STATUS = (400, 401, 403, 404, 405, 409, 413, 422, 429, 500, 502, 503)


async def render_error(
    request: web.Request, status: int, message: str, *, reason: str | None = None
) -> web.Response:
    """A friendly page for an HTTP error; it never touches the session's contents."""
    if reason is None:
        reason = "csrf" if status == 403 and "csrf" in message.lower() else str(status)
    if reason not in ("csrf", "admin_only") and status not in _KNOWN_STATUS:
        reason = "5xx" if status >= 500 else "4xx"
    try:
        return await render(
            request, "error.html",
            {"status": status, "reason": reason, "detail": message if status < 500 else ""},
            status=status, take_flashes=False,
        )
    except Exception:
        log.exception("cannot render the error page for %s", status)
        return web.Response(status=status, text=f"{status}: {message}\n", content_type="text/plain")


async def html_error(request: web.Request, status: int, message: str) -> web.StreamResponse:
    return await render_error(request, status, message)


# --- forms ----------------------------------------------------------------------------

async def form_data(request: web.Request) -> dict[str, str]:
    """The submitted form as plain strings (a file upload is ignored)."""
    data = await request.post()
    return {k: v for k, v in data.items() if isinstance(v, str)}


def path_id(request: web.Request, name: str = "id") -> int | None:
    return parse_id(request.match_info.get(name, ""))
