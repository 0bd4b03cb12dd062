"""Issue 10, hole 7: anonymous requests create no server-side session on any store (only
logging in does), so a flood of them cannot push a logged-in session out of the memory store;
anonymous forms keep their CSRF protection with a signed double-submit cookie instead."""

from __future__ import annotations

import asyncio
import re

import aiomcache
import pytest
from aiohttp import ClientSession, DummyCookieJar
from redis import asyncio as aioredis

from dmd.sessions import factory
from dmd.sessions.memory import MemoryStorage
from tests.conftest import MEMCACHED_URL, PASSWORD, REDIS_URL, add_user, login

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def _anonymous_flood(client, n: int) -> set[str]:
    """`n` anonymous requests of every kind that used to make a session; the cookies set."""
    set_cookies: set[str] = set()
    kinds = [
        ("POST", "/account/password", {"csrf_token": "x", "current_password": "x"}),  # "log in again"
        ("POST", "/logout", {}),
        ("POST", "/login", {"csrf_token": "forged", "email": "a@b.c", "password": "x"}),
        ("GET", "/login", None),
        ("POST", "/api/v1/auth/logout", None),
        ("GET", "/nodes", None),
    ]
    async with ClientSession(base_url=str(client.make_url("")), cookie_jar=DummyCookieJar()) as anon:
        async def one(i: int) -> None:
            method, path, data = kinds[i % len(kinds)]
            async with anon.request(method, path, data=data, allow_redirects=False) as r:
                set_cookies.update(c.split("=", 1)[0] for c in r.headers.getall("Set-Cookie", []))
        for start in range(0, n, 100):  # a hundred at a time
            await asyncio.gather(*(one(i) for i in range(start, min(n, start + 100))))
    return set_cookies


async def test_a_flood_of_anonymous_requests_leaves_a_logged_in_session_alone(make_client, monkeypatch):
    made: list[MemoryStorage] = []
    init = MemoryStorage.__init__

    def recording(self, *a, **kw):
        init(self, *a, **kw)
        made.append(self)

    monkeypatch.setattr(MemoryStorage, "__init__", recording)
    monkeypatch.setattr(factory, "MEMORY_MAX_SESSIONS", 50)  # a small store shows it quickly
    client = await make_client()
    await add_user(client, "u@example.org")
    await login(client, "u@example.org")
    [store] = made
    assert len(store) == 1
    cookies = await _anonymous_flood(client, 3000)
    assert "dm_session" not in cookies, cookies
    assert len(store) == 1  # nothing anonymous was kept
    r = await client.get("/api/v1/me")
    assert r.status == 200 and (await r.json())["email"] == "u@example.org"


@pytest.mark.parametrize("store", ["redis", "memcached"])
async def test_anonymous_requests_write_nothing_to_redis_or_memcached(make_client, monkeypatch, store):
    writes: list[str] = []
    if store == "redis":
        real_set = aioredis.Redis.set

        async def redis_set(self, name, *a, **kw):
            writes.append(name if isinstance(name, str) else name.decode())
            return await real_set(self, name, *a, **kw)

        monkeypatch.setattr(aioredis.Redis, "set", redis_set)
    else:
        real_mc_set = aiomcache.Client.set

        async def mc_set(self, key, *a, **kw):
            writes.append(key.decode())
            return await real_mc_set(self, key, *a, **kw)

        monkeypatch.setattr(aiomcache.Client, "set", mc_set)
    client = await make_client(sessions=REDIS_URL if store == "redis" else MEMCACHED_URL)
    await add_user(client, "u@example.org")
    await login(client, "u@example.org")
    assert len(writes) == 1 and writes[0].startswith("dm_session_")  # logging in does write
    cookies = await _anonymous_flood(client, 300)
    assert "dm_session" not in cookies and len(writes) == 1, writes[:5]
    # Logging out removes the stored session and stores nothing in its place.
    h = await login(client, "u@example.org")
    assert (await client.post("/api/v1/auth/logout", headers=h)).status == 204
    assert len(writes) == 2
    assert (await client.get("/api/v1/me")).status == 401


async def test_anonymous_forms_keep_csrf_protection_without_a_session(client):
    await add_user(client, "u@example.org")
    r = await client.get("/login")
    token = _CSRF.search(await r.text()).group(1)
    assert "dm_session" not in {c.key for c in client.session.cookie_jar}
    # The form's token and the cookie match: the login goes through, and makes the session.
    r = await client.post("/login", data={"csrf_token": token, "email": "u@example.org", "password": PASSWORD},
                          allow_redirects=False)
    assert r.status == 303 and "dm_session" in {c.key for c in client.session.cookie_jar}
    client.session.cookie_jar.clear()
    # A missing token, another one, or a cookie dmd did not sign (one planted by a sibling site)
    # is refused, even when the form echoes it.
    for cookie, field in ((token, ""), (token, token[:-2] + "xx"), ("planted-" + "a" * 30, "planted-" + "a" * 30)):
        client.session.cookie_jar.update_cookies({"dm_csrf": cookie})
        r = await client.post("/login", data={"csrf_token": field, "email": "u@example.org",
                                              "password": PASSWORD}, allow_redirects=False)
        assert r.status == 403, (cookie, field)
        assert "dm_session" not in {c.key for c in client.session.cookie_jar}
    # The login page replaces a planted cookie with one of its own.
    client.session.cookie_jar.clear()
    client.session.cookie_jar.update_cookies({"dm_csrf": "planted-" + "a" * 30})
    r = await client.get("/login")
    assert _CSRF.search(await r.text()).group(1) != "planted-" + "a" * 30


async def test_an_anonymous_flash_travels_in_a_signed_cookie(client):
    r = await client.post("/account/password", data={}, allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/login"
    assert "dm_session" not in {c.key for c in client.session.cookie_jar}
    assert "session has ended" in await (await client.get("/login")).text()
    assert "session has ended" not in await (await client.get("/login")).text()  # shown once
    # A forged flash cookie shows nothing.
    client.session.cookie_jar.update_cookies({"dm_flash": "W1sib2siLCAiZmxhc2gubG9nZ2VkX291dCIsIHt9XV0.xx"})
    assert "logged out" not in await (await client.get("/login")).text()
