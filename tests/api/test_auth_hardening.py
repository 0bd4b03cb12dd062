"""Issue 10, holes 6 and 13: attempts are counted before they are checked, every failed
authentication counts against the client's address, a disabled account answers like a wrong
password, a password change can sign out everywhere, and health tells strangers only "ok"."""

from __future__ import annotations

import asyncio

import pytest

from dmd.core import DM
from dmd.usecases import auth as auth_uc
from tests.conftest import PASSWORD, add_user, login, make_token
from tests.waiting import wait_for

WRONG = "wrong-password"


def _from(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def _log_in(client, email: str, password: str, address: str):
    r = await client.post("/api/v1/auth/login", json={"email": email, "password": password},
                          headers=_from(address))
    return r.status, await r.json()


@pytest.fixture
async def proxied(make_client):
    """dmd behind a proxy on loopback: X-Forwarded-For names the client's address."""
    return await make_client(trust_proxy=["127.0.0.1"])


async def test_parallel_logins_are_counted_before_they_are_checked(proxied, monkeypatch):
    client = proxied
    await add_user(client, "u@example.org")
    free = client.app[DM].throttle.free
    checked: list[str] = []
    gate = asyncio.Event()
    real = auth_uc.verify_password

    async def held(stored, password):
        checked.append(password)
        await gate.wait()  # every check waits here until all 25 attempts have arrived
        return await real(stored, password)

    monkeypatch.setattr(auth_uc, "verify_password", held)
    passwords = [WRONG] * 24 + [PASSWORD]
    tasks = [asyncio.create_task(_log_in(client, "u@example.org", pw, f"192.0.2.{i}"))
             for i, pw in enumerate(passwords)]
    # The attempts past the free ones are answered at once, while the first are still held.
    await wait_for(lambda: sum(t.done() for t in tasks) == len(tasks) - free and len(checked) == free,
                   "the held-back attempts answered, the free ones being checked")
    assert not any(t.done() for t in tasks[:free])
    gate.set()
    results = await asyncio.gather(*tasks)
    statuses = [s for s, _ in results]
    assert statuses.count(429) == len(tasks) - free and statuses.count(401) == free, statuses
    assert {b["error"]["code"] for s, b in results if s == 429} == {"too_many_requests"}
    assert len(checked) == free  # the right password, last, was never checked
    # Another account, from one of the same addresses and from another, is unaffected.
    await add_user(client, "v@example.org")
    assert (await _log_in(client, "v@example.org", PASSWORD, "192.0.2.0"))[0] == 200
    assert (await _log_in(client, "v@example.org", PASSWORD, "198.51.100.9"))[0] == 200


async def test_a_right_login_gives_its_reserved_attempt_back(proxied):
    await add_user(proxied, "u@example.org")
    for _ in range(10):  # far more than the free attempts: each right one is taken back
        assert (await _log_in(proxied, "u@example.org", PASSWORD, "192.0.2.1"))[0] == 200
    assert proxied.app[DM].throttle.retry_after(["acct:u@example.org", "ip:192.0.2.1"]) == 0


async def test_bad_bearer_tokens_count_against_the_address_only(proxied):
    client = proxied
    await add_user(client, "u@example.org")
    good = await make_token(client, "u@example.org")
    room = client.app[DM].throttle.free * client.app[DM].throttle.address_factor
    for i in range(room):
        bad = {"Authorization": f"Bearer dm_{'x' * 30}{i}", **_from("192.0.2.7")}
        r = await client.get("/api/v1/me", headers=bad)
        assert r.status == 401, i
    r = await client.get("/api/v1/me", headers={"Authorization": "Bearer dm_" + "y" * 40, **_from("192.0.2.7")})
    assert r.status == 429 and (await r.json())["error"]["code"] == "too_many_requests"
    # A login from that address waits too; another address carries on, bad token or good.
    assert (await _log_in(client, "u@example.org", PASSWORD, "192.0.2.7"))[0] == 429
    r = await client.get("/api/v1/me", headers={"Authorization": "Bearer dm_" + "y" * 40, **_from("192.0.2.8")})
    assert r.status == 401
    assert (await client.get("/api/v1/me", headers={**good, **_from("192.0.2.8")})).status == 200


async def test_wrong_current_passwords_are_counted_before_they_are_checked(proxied):
    client = proxied
    await add_user(client, "u@example.org")
    h = {**await login(client, "u@example.org"), **_from("192.0.2.3")}
    free = client.app[DM].throttle.free

    async def change(current):
        r = await client.post("/api/v1/me/password", headers=h,
                              json={"current_password": current, "new_password": "another password"})
        return r.status, (await r.json())["error"]["code"] if r.status != 204 else None

    assert [await change(WRONG) for _ in range(free)] == [(403, "bad_credentials")] * free
    assert await change(PASSWORD) == (429, "too_many_requests")  # even the right one waits now
    # Another account from another address is unaffected.
    await add_user(client, "v@example.org")
    assert (await _log_in(client, "v@example.org", PASSWORD, "198.51.100.1"))[0] == 200


async def test_a_disabled_account_answers_like_a_wrong_password(client, admin, monkeypatch):
    uid = await add_user(client, "u@example.org")
    r = await client.patch(f"/api/v1/users/{uid}", json={"disabled": True}, headers=admin)
    assert r.status == 200
    checked = []
    real = auth_uc.verify_password

    async def spy(stored, password):
        checked.append(stored is not None)
        return await real(stored, password)

    monkeypatch.setattr(auth_uc, "verify_password", spy)
    disabled = await client.post("/api/v1/auth/login", json={"email": "u@example.org", "password": PASSWORD})
    wrong = await client.post("/api/v1/auth/login", json={"email": "u@example.org", "password": WRONG})
    assert disabled.status == wrong.status == 401
    assert await disabled.json() == await wrong.json()
    assert (await disabled.json())["error"]["code"] == "bad_credentials"
    assert checked == [True, True]  # the disabled account's password was verified too (timing)


async def test_password_change_signs_out_everywhere_and_revokes_tokens_by_default(client, make_client):
    await add_user(client, "u@example.org")
    token = await make_token(client, "u@example.org")
    other = await make_client()  # another browser, on the same dmd database
    await login(other, "u@example.org")
    h = await login(client, "u@example.org")
    r = await client.post("/api/v1/me/password", headers=h,
                          json={"current_password": PASSWORD, "new_password": "another password"})
    assert r.status == 204, await r.text()
    assert (await client.get("/api/v1/me")).status == 200  # this session carries on
    assert (await client.get("/api/v1/me", headers=token)).status == 401
    assert (await other.get("/api/v1/me")).status == 401
    assert (await (await client.get("/api/v1/tokens")).json())["items"] == []


async def test_password_change_can_keep_tokens(client):
    await add_user(client, "u@example.org")
    token = await make_token(client, "u@example.org")
    h = await login(client, "u@example.org")
    r = await client.post("/api/v1/me/password", headers=h,
                          json={"current_password": PASSWORD, "new_password": "another password",
                                "sign_out_everywhere": False})
    assert r.status == 204, await r.text()
    assert (await client.get("/api/v1/me", headers=token)).status == 200
    assert (await client.get("/api/v1/me")).status == 200


async def test_health_tells_only_admins_the_details(client, admin):
    await add_user(client, "u@example.org")
    user = await make_token(client, "u@example.org")
    for headers in ({}, user):
        r = await client.get("/api/v1/health", headers=headers)
        assert r.status == 200 and await r.json() == {"status": "ok"}
    body = await (await client.get("/api/v1/health", headers=admin)).json()
    assert body["status"] == "ok" and body["database"] and body["version"] and body["sessions"] == "memory"

