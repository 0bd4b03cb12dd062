"""Login throttling per account and per client address.

After `free` failures inside `window` seconds each further attempt must wait an
exponentially growing delay; after `lock_after` failures the key is locked for `lock_for`
seconds. A success clears the account's counter (not the address's). Kept in memory:
one dmd process sees all of its logins; with several daemons each throttles on its own.

An attempt is counted *before* it is checked (`reserve`): as a failure, until it turns out
right (`succeeded` takes it back). So parallel attempts cannot all pass the check before the
first failure is counted: past the free ones, the others wait. Besides logins, every failed
authentication counts against the client's address (`ip:` keys): bad bearer tokens, a wrong
current password, bad agent credentials.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(slots=True)
class _State:
    failures: int
    first: float
    last: float
    locked_until: float = 0.0


class LoginThrottle:
    def __init__(
        self,
        *,
        free: int = 3,
        lock_after: int = 10,
        window: float = 900.0,
        lock_for: float = 900.0,
        max_delay: float = 30.0,
        address_factor: int = 3,
        max_keys: int = 100_000,
    ) -> None:
        self.free = free
        self.lock_after = lock_after
        self.window = window
        self.lock_for = lock_for
        self.max_delay = max_delay
        # An address may try several accounts (a shared NAT), so it gets more room.
        self.address_factor = address_factor
        self.max_keys = max_keys  # bounded memory under a spray of addresses
        self._keys: dict[str, _State] = {}

    def _limits(self, key: str) -> tuple[int, int]:
        f = self.address_factor if key.startswith("ip:") else 1
        return self.free * f, self.lock_after * f

    def retry_after(self, keys: list[str], now: float | None = None) -> float:
        """Seconds the caller must still wait before trying these keys; 0 when free to try."""
        now = time.time() if now is None else now
        wait = 0.0
        for key in keys:
            st = self._keys.get(key)
            if st is None:
                continue
            if now - st.last > self.window and now >= st.locked_until:
                del self._keys[key]
                continue
            if now < st.locked_until:
                wait = max(wait, st.locked_until - now)
                continue
            free, _ = self._limits(key)
            if st.failures >= free:
                delay = min(self.max_delay, 2.0 ** (st.failures - free))
                wait = max(wait, st.last + delay - now)
        return max(0.0, wait)

    def failure(self, keys: list[str], now: float | None = None) -> None:
        now = time.time() if now is None else now
        if len(self._keys) >= self.max_keys:
            self._make_room(now)
        for key in keys:
            st = self._keys.get(key)
            if st is None or (now - st.last > self.window and now >= st.locked_until):
                st = self._keys[key] = _State(0, now, now)
            st.failures += 1
            st.last = now
            _, lock_after = self._limits(key)
            if st.failures >= lock_after:
                st.locked_until = now + self.lock_for

    def _make_room(self, now: float) -> None:
        """Forget what has expired, then the oldest keys that are not locked: a spray of new
        addresses never lifts a lock (clearing everything would let the sprayer start afresh)."""
        for key, st in list(self._keys.items()):
            if now - st.last > self.window and now >= st.locked_until:
                del self._keys[key]
        excess = len(self._keys) - self.max_keys * 9 // 10
        for key, st in list(self._keys.items()):
            if excess <= 0:
                break
            if now >= st.locked_until:
                del self._keys[key]
                excess -= 1

    def success(self, account_key: str) -> None:
        self._keys.pop(account_key, None)

    def reserve(self, keys: list[str], now: float | None = None) -> float:
        """Count an attempt on `keys` before it is checked. Returns 0 when it may go ahead (it
        counts as a failure until `succeeded`), else the seconds to wait (nothing counted).
        Synchronous, so no other attempt runs between the check and the count."""
        wait = self.retry_after(keys, now)
        if wait <= 0:
            self.failure(keys, now)
        return wait

    def succeeded(self, keys: list[str]) -> None:
        """The reserved attempt was right: an account's (`acct:`) counter clears; any other key
        gets its reserved count back."""
        for key in keys:
            if key.startswith("acct:"):
                self.success(key)
                continue
            st = self._keys.get(key)
            if st is not None:
                st.failures = max(0, st.failures - 1)
                if st.failures < self._limits(key)[1]:
                    st.locked_until = 0.0  # the lock came from this very reservation
