"""The login throttle on its own, on a clock the test moves (LoginThrottle takes `now`)."""

from __future__ import annotations

from dmd.auth.throttle import LoginThrottle, _State

ACCT, IP = "acct:u@example.org", "ip:192.0.2.1"


def failures(t: LoginThrottle, keys: list[str], n: int, at: float) -> None:
    for _ in range(n):
        t.failure(keys, now=at)


def test_free_failures_then_doubling_delays_up_to_the_cap():
    t = LoginThrottle(free=3, lock_after=100, max_delay=30.0)
    assert t.retry_after([ACCT], now=0) == 0.0
    failures(t, [ACCT], 2, at=0)
    assert t.retry_after([ACCT], now=0) == 0.0
    failures(t, [ACCT], 1, at=0)  # the third: from now on each attempt waits
    assert t.retry_after([ACCT], now=0) == 1.0  # 2 ** 0
    assert t.retry_after([ACCT], now=0.25) == 0.75
    assert t.retry_after([ACCT], now=1.0) == 0.0
    waits = []
    for n in range(4, 12):
        t.failure([ACCT], now=100.0 * n)
        waits.append(t.retry_after([ACCT], now=100.0 * n))
    assert waits == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]  # doubling, then max_delay


def test_locked_after_lock_after_failures_for_lock_for_seconds():
    t = LoginThrottle(free=3, lock_after=5, lock_for=900.0, max_delay=1.0)
    failures(t, [ACCT], 4, at=10.0)
    assert t.retry_after([ACCT], now=12.0) == 0.0  # delays only (1 s at most)
    t.failure([ACCT], now=12.0)  # the fifth
    assert t.retry_after([ACCT], now=12.0) == 900.0
    assert t.retry_after([ACCT], now=911.0) == 1.0
    assert t.retry_after([ACCT], now=912.0 + 0.5) == 0.0  # the lock is over; the delay too


def test_addresses_get_three_times_the_room():
    t = LoginThrottle(free=3, lock_after=10, address_factor=3)
    failures(t, [IP], 8, at=0)
    assert t.retry_after([IP], now=0) == 0.0
    t.failure([IP], now=0)  # the ninth
    assert t.retry_after([IP], now=0) == 1.0
    failures(t, [IP], 21, at=0)  # the 30th locks an address
    assert t.retry_after([IP], now=0) == 900.0
    failures(t, ["acct:v@example.org"], 10, at=0)
    assert t.retry_after(["acct:v@example.org"], now=0) == 900.0  # an account: locked at 10


def test_the_longest_wait_of_the_keys_counts_and_keys_are_apart():
    t = LoginThrottle(free=1, lock_after=100)
    failures(t, [ACCT], 3, at=0)  # waits 4 s
    failures(t, [IP], 3, at=0)  # an address gets free * 3 = 3: waits 1 s
    assert t.retry_after([ACCT], now=0) == 4.0
    assert t.retry_after([IP], now=0) == 1.0
    assert t.retry_after([IP, ACCT], now=0) == 4.0
    assert t.retry_after(["acct:other@example.org", "ip:192.0.2.2"], now=0) == 0.0


def test_a_quiet_window_forgets_and_a_success_clears_the_account_only():
    t = LoginThrottle(free=3, window=900.0)
    failures(t, [ACCT, IP], 3, at=0)
    assert t.retry_after([ACCT], now=900.0) == 0.0  # the delay is long over
    assert t._keys[ACCT].failures == 3  # still counted inside the window
    t.failure([ACCT], now=900.0)
    assert t.retry_after([ACCT], now=900.0) == 2.0  # the fourth counts with the three
    assert t.retry_after([ACCT], now=900.0 + 901.0) == 0.0  # quiet for longer than the window
    assert ACCT not in t._keys  # forgotten
    t.failure([ACCT], now=2000.0)
    assert t._keys[ACCT].failures == 1  # starts again from one
    assert t._keys[IP].failures == 3
    t.success(ACCT)
    assert ACCT not in t._keys and t._keys[IP].failures == 3  # the address keeps its count
    t.success("acct:never@example.org")  # unknown: nothing happens


def test_a_failure_after_a_quiet_window_starts_a_new_count():
    t = LoginThrottle(free=3, window=100.0, lock_after=100)
    failures(t, [ACCT], 3, at=0)
    t.failure([ACCT], now=150.0)  # more than the window after the last one: a fresh count
    assert (t._keys[ACCT].failures, t._keys[ACCT].first) == (1, 150.0)
    assert t.retry_after([ACCT], now=150.0) == 0.0


def test_a_locked_key_is_not_forgotten_while_locked():
    t = LoginThrottle(free=3, lock_after=4, window=10.0, lock_for=100.0)
    failures(t, [ACCT], 4, at=0)
    assert t.retry_after([ACCT], now=50.0) == 50.0  # the window is over, the lock is not
    t.failure([ACCT], now=60.0)  # still locked: counts on, and the lock starts again
    assert t._keys[ACCT].failures == 5
    assert t.retry_after([ACCT], now=60.0) == 100.0


def test_a_lock_ends_at_its_very_second():
    t = LoginThrottle(free=3, lock_after=4, window=10.0, lock_for=100.0)
    failures(t, [ACCT], 4, at=0)
    assert t.retry_after([ACCT], now=99.5) == 0.5
    assert t.retry_after([ACCT], now=100.0) == 0.0 and ACCT not in t._keys  # over, and forgotten
    failures(t, [IP], 30, at=0)  # an address locks at 30
    t.failure([IP], now=100.0)  # the lock ends at 100: this one starts a new count
    assert t._keys[IP].failures == 1 and t._keys[IP].locked_until == 0.0


def test_memory_stays_bounded_under_a_spray_of_addresses():
    full = LoginThrottle()
    full._keys.update({f"ip:{i}": _State(1, 0.0, 0.0) for i in range(100_000)})
    full.failure([ACCT], now=0)
    # At the bound the oldest tenth goes (the keys expired by now go first), the newest stays.
    assert len(full._keys) == 90_001 and "ip:0" not in full._keys and "ip:99999" in full._keys
    assert full._keys[ACCT].failures == 1
    below = LoginThrottle()
    below._keys.update({f"ip:{i}": _State(1, 0.0, 0.0) for i in range(99_999)})
    below.failure([ACCT], now=0)
    assert len(below._keys) == 100_000  # below the bound: nothing dropped


def test_a_spray_of_addresses_never_lifts_a_lock():
    t = LoginThrottle(free=1, lock_after=2, address_factor=1, max_keys=100)
    t.failure(["ip:192.0.2.1"], now=1000.0)
    t.failure(["ip:192.0.2.1"], now=1000.0)
    locked = t.retry_after(["ip:192.0.2.1"], now=1001.0)
    assert locked > 0
    for i in range(1000):  # ten times the bound, each a new address
        t.failure([f"ip:198.51.100.{i}"], now=1001.0)
    assert len(t._keys) <= 100
    assert t.retry_after(["ip:192.0.2.1"], now=1001.0) == locked
