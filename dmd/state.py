"""Who is calling: the request key the identity middleware sets (dmd's parts are in dmd.core)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from dmd.models import User


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
