"""CSRF protection for cookie-authenticated writes.

A logged-in session holds a random token; the same value is sent to the browser in the
readable `dm_csrf` cookie. Forms echo it in a hidden `csrf_token` field and scripts in an
`X-CSRF-Token` header. A cross-site page can make the browser send the session cookie, but
it cannot read `dm_csrf`, so it cannot echo the token. Anonymous forms (login, setup) use
the same cookie as a double-submit token, with no server-side session (only logging in makes
one): every token carries an HMAC with the session secret, so a token dmd did not make (one
planted by a sibling site) is not accepted as the cookie. Bearer-token calls carry no cookie
and need none.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from aiohttp import web

from dmd.auth.tokens import same
from dmd.net import is_https

CSRF_COOKIE = "dm_csrf"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _mac(secret: bytes, nonce: str) -> str:
    mac = hmac.new(secret, b"csrf:" + nonce.encode(), hashlib.sha256).digest()[:18]
    return base64.urlsafe_b64encode(mac).decode()


def new_token(secret: bytes) -> str:
    nonce = secrets.token_urlsafe(24)
    return f"{nonce}.{_mac(secret, nonce)}"


def is_ours(secret: bytes, token: str | None) -> bool:
    """The token was made by this installation (its HMAC checks out)."""
    if not token or len(token) > 100 or not token.isascii():
        return False
    nonce, _, mac = token.partition(".")
    return bool(nonce) and hmac.compare_digest(mac, _mac(secret, nonce))


def set_cookie(request: web.Request, response: web.StreamResponse, token: str) -> None:
    response.set_cookie(
        CSRF_COOKIE, token, httponly=False, samesite="Lax", path="/", secure=is_https(request) or None
    )


async def submitted_token(request: web.Request) -> str | None:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        value = form.get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


def matches(got: str | None, expected: str | None) -> bool:
    """A token sent some other way (a WebSocket's query, whose upgrade carries no form nor
    header a page can set) is the session's, compared in constant time."""
    return bool(expected) and bool(got) and same(got or "", expected or "")


async def check(request: web.Request, expected: str | None) -> bool:
    got = await submitted_token(request)
    return bool(expected) and got is not None and same(got, expected or "")
