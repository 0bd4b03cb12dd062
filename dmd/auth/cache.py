"""A short-lived cache of token -> identity, so token-authenticated calls skip the database.

Revocations, password changes, disabling and deletion made through this process clear the
entries at once; other dmd processes sharing the database see them within `ttl` seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from dmd.models import User


@dataclass(slots=True)
class _Entry:
    user: User
    token_id: int
    expires_at: float  # when the token itself expires (inf when never)
    cached_until: float


class TokenCache:
    def __init__(self, ttl: float = 5.0, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[str, _Entry] = {}

    def get(self, token_hash: str) -> tuple[User, int] | None:
        e = self._entries.get(token_hash)
        if e is None:
            return None
        now = time.time()
        if now >= e.cached_until or now >= e.expires_at:
            del self._entries[token_hash]
            return None
        return e.user, e.token_id

    def put(self, token_hash: str, user: User, token_id: int, expires_at: float | None) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[token_hash] = _Entry(
            user, token_id, expires_at if expires_at is not None else float("inf"), time.time() + self.ttl
        )

    def forget_user(self, user_id: int) -> None:
        for k in [k for k, e in self._entries.items() if e.user.id == user_id]:
            del self._entries[k]

    def forget_token(self, token_id: int) -> None:
        for k in [k for k, e in self._entries.items() if e.token_id == token_id]:
            del self._entries[k]
