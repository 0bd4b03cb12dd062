"""Choose the session store from the `sessions` setting."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aiomcache
from aiohttp import web
from aiohttp_session import AbstractStorage, Session
from aiohttp_session.memcached_storage import MemcachedStorage
from aiohttp_session.redis_storage import RedisStorage
from redis import asyncio as aioredis

from dmd.config import redact
from dmd.errors import StartupError
from dmd.sessions.memory import MemoryStorage
from dmd.sessions.signed import SignedCookieMixin, authenticated, cookie_params

SESSION_COOKIE = "dm_session"
MEMORY_MAX_SESSIONS = 100_000  # logged-in sessions the in-memory store holds


class SignedRedisStorage(SignedCookieMixin, RedisStorage):
    def __init__(self, redis: aioredis.Redis, secret: bytes, **kw: Any) -> None:
        super().__init__(redis, **kw)
        self._secret = secret
        self._client = redis

    async def forget(self, key: str) -> None:
        await self._client.delete(f"{self.cookie_name}_{key}")

    async def save_session(self, request: web.Request, response: web.StreamResponse, session: Session) -> None:
        if not authenticated(session):
            await self.drop_anonymous(request, response, session)
            return
        await super().save_session(request, response, session)


class SignedMemcachedStorage(SignedCookieMixin, MemcachedStorage):
    def __init__(self, mc: aiomcache.Client, secret: bytes, **kw: Any) -> None:
        super().__init__(mc, **kw)
        self._secret = secret

    async def forget(self, key: str) -> None:
        await self.conn.delete(f"{self.cookie_name}_{key}".encode())

    async def save_session(self, request: web.Request, response: web.StreamResponse, session: Session) -> None:
        if not authenticated(session):
            await self.drop_anonymous(request, response, session)
            return
        await super().save_session(request, response, session)


async def make_storage(
    url: str, secret: bytes, max_age: int
) -> tuple[AbstractStorage, Callable[[], Awaitable[None]]]:
    """The storage and a coroutine function that closes its connections."""
    params: dict[str, Any] = {"cookie_name": SESSION_COOKIE, **cookie_params(max_age)}
    if url == "memory":
        async def _noop() -> None:
            return None
        return MemoryStorage(secret, max_entries=MEMORY_MAX_SESSIONS, **params), _noop
    # Reach the store now, so a wrong URL fails at start and not on the first login.
    if url.startswith(("redis://", "rediss://")):
        redis = aioredis.from_url(url, socket_connect_timeout=5)
        try:
            await redis.ping()
        except Exception as e:
            await redis.aclose()
            raise StartupError(f"sessions: cannot reach {redact(url)}: {e}") from None
        return SignedRedisStorage(redis, secret, **params), redis.aclose
    if url.startswith("memcached://"):
        parts = urlsplit(url)
        mc = aiomcache.Client(parts.hostname or "127.0.0.1", parts.port or 11211)
        try:
            await asyncio.wait_for(mc.version(), 5)
        except Exception as e:
            await mc.close()
            raise StartupError(f"sessions: cannot reach {url}: {e or type(e).__name__}") from None
        return SignedMemcachedStorage(mc, secret, **params), mc.close
    raise ValueError(f"unsupported sessions URL {url!r}")
