"""Per-user ceilings on image transfers, and the lock that keeps a reference's check and its
change together.

* `TransferGate`: at most `limit_for(user_id)` transfers (uploads, pulls, imports, copies,
  commits) of one user run at once; one more is refused at once (429 `too_many_transfers`),
  never queued, so a user cannot pile up work or disk on dmd. The limit is a callable (plain
  or async) so an admin-set per-user value can be plugged in; the default is 2 (issue 10,
  item 12).
* `RefLocks`: the check "this reference on this node is not someone else's" and the agent's
  change of the tag must not interleave with another user's change of the same reference
  (two imports of a new name at once), so both run under one lock per (node, reference).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable

from dmd.errors import ApiError

DEFAULT_TRANSFERS = 2


class TooManyTransfers(ApiError):
    status, code = 429, "too_many_transfers"


class TransferGate:
    def __init__(self, limit_for: Callable[[int], int | Awaitable[int]] | None = None) -> None:
        self.limit_for: Callable[[int], int | Awaitable[int]] = limit_for or (lambda _user_id: DEFAULT_TRANSFERS)
        self._running: dict[int, int] = {}

    def running(self, user_id: int) -> int:
        return self._running.get(user_id, 0)

    async def enter(self, user_id: int) -> None:
        """Take one of the user's slots, or refuse (429) when all are taken."""
        found = self.limit_for(user_id)
        limit = await found if inspect.isawaitable(found) else found
        # From here to the increment nothing awaits: two callers cannot both take the last slot.
        now = self._running.get(user_id, 0)
        if now >= limit:
            raise TooManyTransfers(f"you already have {now} image transfer(s) running (at most {limit} at once); "
                                   "wait for one to finish and try again")
        self._running[user_id] = now + 1

    def leave(self, user_id: int) -> None:
        left = self._running.get(user_id, 0) - 1
        if left > 0:
            self._running[user_id] = left
        else:
            self._running.pop(user_id, None)

    @contextlib.asynccontextmanager
    async def slot(self, user_id: int) -> AsyncIterator[None]:
        await self.enter(user_id)
        try:
            yield
        finally:
            self.leave(user_id)


class RefLocks:
    def __init__(self) -> None:
        self._locks: dict[tuple[int, str], tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, node_id: int, ref: str) -> AsyncIterator[None]:
        key = (node_id, ref)
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]  # nobody waits: the table stays as small as the work in flight
            else:
                self._locks[key] = (lock, users - 1)
