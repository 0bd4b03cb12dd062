"""Who is inside an instance right now: the open terminals, SSH sessions, tunnels and file copies.

Every such session registers here while it is open, with a way to end it. Revoking access ends
them: a disabled or deleted user (all of theirs), a deleted SSH key (the sessions that logged
in with it), a stopped or deleted instance (all sessions into it). In memory, per process: a
session is a connection held open by this process.

Public API::

    live = LiveSessions()
    handle = live.add(user_id=3, instance_id=7, via="terminal", end=coro_fn, key_id=None)
    live.count(user_id=3)                       # open sessions of the user
    await live.end_for_user(3, "user disabled") # -> how many were ended
    await live.end_for_key(12, "SSH key deleted")
    await live.end_for_instance(7, "instance stopped")
    live.remove(handle)                          # the session ended by itself
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

__all__ = ["BY_WEB_SESSION", "LiveSession", "LiveSessions"]

# The sessions a browser's login opened (they end with it: a new password ends them).
BY_WEB_SESSION = frozenset({"terminal", "files", "logs"})

log = logging.getLogger("dmd.live")

Ender = Callable[[str], Awaitable[None]]


@dataclass(slots=True)
class LiveSession:
    id: int
    user_id: int
    instance_id: int | None  # None: a gateway connection not yet into an instance
    via: str  # terminal | ssh | tunnel | files | logs | gateway
    end: Ender = field(repr=False)
    key_id: int | None = None  # the SSH key it logged in with
    opened_at: float = field(default_factory=time.time)


class LiveSessions:
    def __init__(self) -> None:
        self._sessions: dict[int, LiveSession] = {}
        self._ids = itertools.count(1)

    def add(self, *, user_id: int, instance_id: int | None, via: str, end: Ender,
            key_id: int | None = None) -> LiveSession:
        session = LiveSession(next(self._ids), user_id, instance_id, via, end, key_id)
        self._sessions[session.id] = session
        return session

    def remove(self, session: LiveSession) -> None:
        self._sessions.pop(session.id, None)

    def count(self, *, user_id: int, vias: frozenset[str] | None = None) -> int:
        return sum(1 for s in self._sessions.values()
                   if s.user_id == user_id and (vias is None or s.via in vias))

    def of_user(self, user_id: int) -> list[LiveSession]:
        return [s for s in self._sessions.values() if s.user_id == user_id]

    async def end_for_user(self, user_id: int, reason: str, *, vias: frozenset[str] | None = None) -> int:
        """End the user's sessions (only those opened ``vias`` these ways, when given)."""
        return await self._end([s for s in self._sessions.values()
                                if s.user_id == user_id and (vias is None or s.via in vias)], reason)

    async def end_for_key(self, key_id: int, reason: str) -> int:
        return await self._end([s for s in self._sessions.values() if s.key_id == key_id], reason)

    async def end_for_instance(self, instance_id: int, reason: str) -> int:
        return await self._end([s for s in self._sessions.values() if s.instance_id == instance_id], reason)

    async def end_all(self, reason: str) -> int:
        return await self._end(list(self._sessions.values()), reason)

    async def _end(self, sessions: list[LiveSession], reason: str) -> int:
        for s in sessions:
            self._sessions.pop(s.id, None)
        results = await asyncio.gather(*(s.end(reason) for s in sessions), return_exceptions=True)
        for s, result in zip(sessions, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("ending %s session %s of user %s failed: %s", s.via, s.id, s.user_id, result)
        if sessions:
            log.info("ended %d session(s): %s", len(sessions), reason)
        return len(sessions)
