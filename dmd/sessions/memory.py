"""A server-side in-memory session store (aiohttp-session has none; its cookie storages
keep the data in the browser, which we do not want)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from aiohttp import web
from aiohttp_session import Session

from dmd.sessions.signed import SignedCookieMixin, authenticated


class MemoryStorage(SignedCookieMixin):
    def __init__(self, secret: bytes, *, cookie_name: str, max_entries: int = 100_000, **params: Any) -> None:
        super().__init__(cookie_name=cookie_name, **params)
        self._secret = secret
        self._data: dict[str, tuple[float, str]] = {}
        self._max_entries = max_entries
        self._next_purge = 0.0

    def __len__(self) -> int:
        return len(self._data)

    def _purge(self, now: float) -> None:
        if now < self._next_purge and len(self._data) < self._max_entries:
            return
        self._next_purge = now + 60
        for k in [k for k, (exp, _) in self._data.items() if exp <= now]:
            del self._data[k]
        if len(self._data) >= self._max_entries:
            # Still full: drop the sessions that expire soonest.
            for k, _ in sorted(self._data.items(), key=lambda kv: kv[1][0])[: len(self._data) // 10 + 1]:
                del self._data[k]

    async def load_session(self, request: web.Request) -> Session:
        key = self.load_cookie(request)
        entry = self._data.get(key) if key else None
        if key is None or entry is None or entry[0] <= time.time():
            return Session(None, data=None, new=True, max_age=self.max_age)
        return Session(key, data=json.loads(entry[1]), new=False, max_age=self.max_age)

    async def forget(self, key: str) -> None:
        self._data.pop(key, None)

    async def save_session(self, request: web.Request, response: web.StreamResponse, session: Session) -> None:
        if not authenticated(session):
            # Only logged-in sessions are kept, so only they can fill the store: eviction below
            # never makes room for an anonymous visitor.
            await self.drop_anonymous(request, response, session)
            return
        key = session.identity
        if key is None:
            key = uuid.uuid4().hex
        now = time.time()
        self._purge(now)
        ttl = session.max_age or self.max_age or 86400
        # Stored as JSON so memory sessions behave exactly like the Redis/Memcached ones.
        self._data[str(key)] = (now + ttl, json.dumps(self._get_session_data(session)))
        self.save_cookie(response, str(key), max_age=session.max_age)
