"""Session cookies that carry an HMAC of the session key, and only logged-in sessions stored.

A forged or mangled cookie is dropped before any store lookup, so nothing a client
invents ever reaches Redis or Memcached as a key. A session that names no user (an anonymous
visitor's, or one just logged out) is never stored: only logging in creates a session, so
anonymous requests cannot fill a store, nor push a logged-in session out of the memory one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Any

from aiohttp import web
from aiohttp_session import AbstractStorage, Session

_KEY_RE = re.compile(r"^[0-9a-f]{32}$")


def authenticated(session: Session) -> bool:
    """The session names a user (dmd.auth.flows.start_session put one there)."""
    return isinstance(session.get("uid"), int)


class SignedCookieMixin(AbstractStorage):
    _secret: bytes

    async def forget(self, key: str) -> None:
        """Remove a stored session."""
        raise NotImplementedError

    async def drop_anonymous(self, request: web.Request, response: web.StreamResponse, session: Session) -> None:
        """What saving a session that names no user does: store nothing; a session that was
        stored (logged out, ended) is removed and its cookie cleared."""
        if session.identity is not None:
            await self.forget(str(session.identity))
        if self.cookie_name in request.cookies:
            self.save_cookie(response, "", max_age=session.max_age)

    def _sign(self, key: str) -> str:
        mac = hmac.new(self._secret, key.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:24]).decode().rstrip("=")

    def load_cookie(self, request: web.Request) -> str | None:
        raw = request.cookies.get(self.cookie_name)
        if not raw or len(raw) > 100 or "." not in raw:
            return None
        key, _, mac = raw.partition(".")
        if not _KEY_RE.match(key) or not hmac.compare_digest(mac, self._sign(key)):
            return None
        return key

    def save_cookie(self, response: web.StreamResponse, cookie_data: str, *, max_age: int | None = None) -> None:
        value = f"{cookie_data}.{self._sign(cookie_data)}" if cookie_data else ""
        super().save_cookie(response, value, max_age=max_age)


def cookie_params(max_age: int) -> dict[str, Any]:
    # Secure is added per response by the middleware that knows whether the request came
    # over HTTPS (directly or through a trusted proxy).
    return {"httponly": True, "samesite": "Lax", "max_age": max_age, "path": "/"}
