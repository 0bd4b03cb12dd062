"""argon2id password hashing, always off the event loop."""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections.abc import Callable
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory profile (64 MiB, t=3, p=4)
# Each hash holds 64 MiB for ~50 ms: bound how many run at once so a login flood
# cannot exhaust memory or every executor thread.
# One semaphore per event loop: a semaphore that ever made a caller wait belongs to that loop
# (tests, and a dmd started again in one process, run several loops one after another).
_SLOTS = 2
_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()

MIN_LENGTH = 8
MAX_LENGTH = 1024

# Verified against when the account does not exist, so that an unknown email and a
# wrong password take the same time.
_DUMMY_HASH = _hasher.hash("dm-timing-equaliser")


T = TypeVar("T")


async def _run(fn: Callable[[], T]) -> T:
    loop = asyncio.get_running_loop()
    slots = _slots.get(loop)
    if slots is None:
        slots = _slots[loop] = asyncio.Semaphore(_SLOTS)
    async with slots:
        return await loop.run_in_executor(None, fn)


async def hash_password(password: str) -> str:
    return await _run(functools.partial(_hasher.hash, password))


def _verify(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_password(stored: str | None, password: str) -> bool:
    """True when `password` matches `stored`; with stored=None it spends the same time and fails."""
    ok = await _run(functools.partial(_verify, stored or _DUMMY_HASH, password))
    return ok and stored is not None


def needs_rehash(stored: str) -> bool:
    return _hasher.check_needs_rehash(stored)
