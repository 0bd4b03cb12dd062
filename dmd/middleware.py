"""The middleware stack, outermost first (see build_middlewares):

1. errors    - works out the client's address and scheme once (dmd.net: forwarded headers from
               trusted proxies only) and keeps them on the request;
               turns every failure into a clean reply (JSON under /api, a page elsewhere);
               a traceback is logged, never sent. Every reply, failed or not, gets the
               security headers, and Secure on every cookie when the request came over HTTPS.
2. sessions  - aiohttp-session (loads lazily, saves when changed).
3. identity  - who is calling (dmd.usecases.auth): a bearer token, else the session; CSRF for
               cookie writes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware
from aiohttp_session import AbstractStorage, get_session, session_middleware

from agent.protocol import AGENT_WS_PATH
from dmd import csp
from dmd.api.registry import error_response
from dmd.auth import csrf
from dmd.core import DM
from dmd.errors import ApiError, BadRequest, Forbidden, TooLarge, Unauthorized
from dmd.net import client_ip, is_https, remember
from dmd.sessions import SESSION_COOKIE
from dmd.state import IDENTITY_KEY, Identity
from dmd.usecases import auth as auth_uc

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Renders an HTML error page (status, message): given by app.py, so this module does not
# import the pages package.
HtmlError = Callable[[web.Request, int, str], Awaitable[web.StreamResponse]]
API_PREFIX = "/api/"


def _is_api(request: web.Request) -> bool:
    return request.path.startswith(API_PREFIX) or request.path == "/api"


_HTTP_CODES = {
    404: ("not_found", "no such route: {method} {path}"),
    405: ("method_not_allowed", "{method} is not allowed on {path}"),
    413: ("too_large", "the request body is too large"),
}


def errors_middleware(html_error: HtmlError | None) -> Middleware:
    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        remember(request)  # the client's address and scheme, once (trusted proxies only)
        try:
            return secure_headers(request, await handler(request))
        except ApiError as e:
            err = e
        except web.HTTPException as e:
            if e.status < 400:
                raise
            code, msg = _HTTP_CODES.get(e.status, ("http_error", e.reason))
            msg = msg.format(method=request.method, path=request.path[:200])
            err = TooLarge(msg) if e.status == 413 else ApiError(msg, status=e.status, code=code)
        except Exception as e:
            if isinstance(e, ConnectionResetError) and _client_gone(request):
                # The client went away while its body was read: anyone can do that, and the
                # reply goes nowhere. One line, not a traceback (scanners would flood the log).
                log.warning("client %s went away during %s %s", client_ip(request), request.method,
                            ascii(request.path[:200]))
                err = BadRequest("the connection was lost before the request was read", code="incomplete_body")
            else:
                log.exception("unhandled error on %s %s", request.method, request.path)
                err = ApiError("internal error; the details are in dmd's log", status=500, code="internal")
        if _is_api(request) or html_error is None:
            resp: web.StreamResponse = error_response(err)
        else:
            resp = await html_error(request, err.status, err.message)
        return secure_headers(request, resp)

    return errors


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def secure_headers(request: web.Request, resp: web.StreamResponse) -> web.StreamResponse:
    h = resp.headers
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("Referrer-Policy", "same-origin")
    if not _is_api(request):
        h.setdefault("X-Frame-Options", "DENY")
        h.setdefault("Content-Security-Policy", csp.policy())  # a page may have set its own (a nonce)
    if is_https(request):
        for morsel in resp.cookies.values():
            morsel["secure"] = True
    return resp


async def _session_identity(request: web.Request) -> Identity | None:
    if SESSION_COOKIE not in request.cookies:
        return None
    session = await get_session(request)
    uid = session.get("uid")
    if not isinstance(uid, int):
        return None
    user = await auth_uc.session_user(request.app[DM], uid)
    if (user is None or user.disabled or session.get("av") != user.auth_version
            or session.get("sk") != user.session_key):
        # Password changed, disabled, signed out everywhere or deleted since this session
        # began (a new user with a reused id has another session key).
        session.invalidate()
        return None
    return Identity(user, "session")


@web.middleware
async def identity_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path == AGENT_WS_PATH or request.path.startswith("/agent/blobs/"):
        return await handler(request)  # agents authenticate with their node credential there
    started = time.monotonic()
    auth = request.headers.get("Authorization")
    ident: Identity | None
    if auth is not None:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        ident = await auth_uc.token_identity(request.app[DM], value.strip(), client_ip(request))
    else:
        ident = await _session_identity(request)
        exempt = getattr(request.match_info.handler, "csrf_exempt", False)
        if ident is not None and request.method not in csrf.SAFE_METHODS and not exempt:
            session = await get_session(request)
            if not await csrf.check(request, session.get("csrf")):
                raise Forbidden(
                    "missing or wrong CSRF token: send the dm_csrf cookie's value in the "
                    "X-CSRF-Token header (or the csrf_token form field)",
                    code="csrf",
                )
    if ident is not None:
        request[IDENTITY_KEY] = ident
    resp = await handler(request)
    if log.isEnabledFor(logging.DEBUG):
        log.debug("%s %s -> %s in %.1f ms", request.method, request.path, resp.status,
                  (time.monotonic() - started) * 1000)
    return resp


def build_middlewares(storage: AbstractStorage, html_error: HtmlError | None = None) -> list[Middleware]:
    return [errors_middleware(html_error), session_middleware(storage), identity_middleware]
