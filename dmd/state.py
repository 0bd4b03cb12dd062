"""Typed keys for what the application and each request carry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from aiohttp import web

from dmd.models import User

if TYPE_CHECKING:
    from dmd.auth.cache import TokenCache
    from dmd.auth.throttle import LoginThrottle
    from dmd.config import Config
    from dmd.db import Database



@dataclass(frozen=True, slots=True)
class Identity:
    user: User
    via: Literal["session", "token"]
    token_id: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.user.is_admin


# Who is calling (set by the identity middleware); absent for anonymous requests.
IDENTITY_KEY: web.RequestKey[Identity] = web.RequestKey("dm_identity", Identity)

CONFIG: web.AppKey[Config] = web.AppKey("dm_config")
DB: web.AppKey[Database] = web.AppKey("dm_db")
TOKEN_CACHE: web.AppKey[TokenCache] = web.AppKey("dm_token_cache")
THROTTLE: web.AppKey[LoginThrottle] = web.AppKey("dm_throttle")
SESSION_SECRET: web.AppKey[bytes] = web.AppKey("dm_session_secret")
