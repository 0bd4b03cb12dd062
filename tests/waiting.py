"""Waiting in tests: poll a condition until a deadline, never sleep a fixed time and hope.

`wait_for` is for coroutines (the check may be a plain function or a coroutine function);
`wait_until` is its twin for plain threads (the end-to-end tests drive real processes).
Both return the check's first truthy value and fail naming what they waited for.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def wait_for(check: Callable[[], Awaitable[T] | T], what: str, timeout: float = 30.0,
                   every: float = 0.05) -> T:
    """Poll `check` until it returns something truthy (returned); fail after `timeout` seconds,
    however long each check takes."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {result!r})")
        await asyncio.sleep(every)


def wait_until(check: Callable[[], T], what: str, timeout: float = 60.0, every: float = 0.1) -> T:
    """`wait_for` for a thread without an event loop."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {result!r})")
        time.sleep(every)
