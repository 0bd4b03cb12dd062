"""How many log streams each user follows at once, in this dmd process.

A follow holds a request open and polls the node's agent every second; the per-user ceiling
(users.log_follow_limit, admin-settable) keeps one user from holding many. The count lives in
memory, per process: a follow is an open connection to this process, so nothing to persist.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from dmd.errors import ApiError


class TooManyFollows(ApiError):
    status, code = 429, "too_many_follows"


class FollowCounter:
    def __init__(self) -> None:
        self._held: dict[int, int] = {}

    def held(self, user_id: int) -> int:
        return self._held.get(user_id, 0)

    @contextmanager
    def hold(self, user_id: int, limit: int | None) -> Iterator[None]:
        """One follow of `user_id` while inside; refused with 429 when they hold `limit` already
        (None: no limit). Check and count happen without an await between them (one event loop)."""
        held = self.held(user_id)
        if limit is not None and held >= limit:
            raise TooManyFollows(f"you follow {held} log stream(s) already, the most you may at once; stop one "
                                 "or ask an administrator to raise your log follow limit")
        self._held[user_id] = held + 1
        try:
            yield
        finally:
            left = self._held[user_id] - 1
            if left:
                self._held[user_id] = left
            else:
                del self._held[user_id]
