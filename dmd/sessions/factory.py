"""Choose the session store from the `sessions` setting."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aiomcache
from aiohttp_session import AbstractStorage
from aiohttp_session.memcached_storage import MemcachedStorage
from aiohttp_session.redis_storage import RedisStorage
from redis import asyncio as aioredis

from dmd.config import redact
from dmd.errors import StartupError
from dmd.sessions.memory import MemoryStorage
from dmd.sessions.signed import SignedCookieMixin, cookie_params

SESSION_COOKIE = "dm_session"


class SignedRedisStorage(SignedCookieMixin, RedisStorage):
    def __init__(self, redis: aioredis.Redis, secret: bytes, **kw: Any) -> None:
        super().__init__(redis, **kw)
        self._secret = secret


class SignedMemcachedStorage(SignedCookieMixin, MemcachedStorage):
    def __init__(self, mc: aiomcache.Client, secret: bytes, **kw: Any) -> None:
        super().__init__(mc, **kw)
        self._secret = secret


async def make_storage(
    url: str, secret: bytes, max_age: int
) -> tuple[AbstractStorage, Callable[[], Awaitable[None]]]:
    """The storage and a coroutine function that closes its connections."""
    params: dict[str, Any] = {"cookie_name": SESSION_COOKIE, **cookie_params(max_age)}
    if url == "memory":
        async def _noop() -> None:
            return None
        return MemoryStorage(secret, **params), _noop
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
