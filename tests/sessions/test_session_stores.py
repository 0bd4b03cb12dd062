"""Sessions on the in-memory, Redis and Memcached stores (real servers)."""

import json
import os
import stat

import aiomcache
import pytest
from aiohttp import ClientSession, CookieJar
from redis import asyncio as aioredis

from dmd.app import load_session_secret
from dmd.errors import StartupError
from tests.conftest import MEMCACHED_URL, PASSWORD, REDIS_URL, add_user, login, make_config
from tests.pages.live import running_dmd  # at import: importing Playwright on the loop would block it

STORES = {"memory": "memory", "redis": REDIS_URL, "memcached": MEMCACHED_URL}


@pytest.fixture(params=list(STORES))
def sessions_url(request) -> str:
    return STORES[request.param]


async def test_login_logout_on_each_store(make_client, sessions_url):
    client = await make_client(sessions=sessions_url)
    uid = await add_user(client, "u@example.org")
    h = await login(client, "u@example.org")
    me = await client.get("/api/v1/me")
    assert me.status == 200 and (await me.json())["auth"] == "session"
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/"))["dm_session"].value
    key = cookie.split(".")[0]
    if sessions_url.startswith("redis"):
        r = aioredis.from_url(sessions_url)
        stored = await r.get(f"dm_session_{key}")
        ttl = await r.ttl(f"dm_session_{key}")
        assert 0 < ttl <= 14 * 24 * 3600
        await r.aclose()
    elif sessions_url.startswith("memcached"):
        mc = aiomcache.Client("127.0.0.1", 11211)
        stored = await mc.get(f"dm_session_{key}".encode())
        await mc.close()
    if sessions_url != "memory":  # the store holds this login: its user, version and CSRF token
        session = json.loads(stored)["session"]
        assert (session["uid"], session["av"], session["csrf"]) == (uid, 1, h["X-CSRF-Token"]), session
    assert (await client.post("/api/v1/auth/logout", headers=h)).status == 204
    assert (await client.get("/api/v1/me")).status == 401


async def test_password_change_ends_sessions_on_each_store(make_client, sessions_url):
    client = await make_client(sessions=sessions_url)
    await add_user(client, "u@example.org")
    h = await login(client, "u@example.org")
    async with ClientSession(base_url=str(client.make_url("")), cookie_jar=CookieJar(unsafe=True)) as other:
        assert (await other.post("/api/v1/auth/login",
                                 json={"email": "u@example.org", "password": PASSWORD})).status == 200
        r = await client.post("/api/v1/me/password",
                              json={"current_password": PASSWORD, "new_password": "another-pass"}, headers=h)
        assert r.status == 204
        assert (await other.get("/api/v1/me")).status == 401
    assert (await client.get("/api/v1/me")).status == 200


async def test_forged_cookie_never_reaches_the_store(make_client, sessions_url):
    client = await make_client(sessions=sessions_url)
    await add_user(client, "u@example.org")
    await login(client, "u@example.org")
    good = client.session.cookie_jar.filter_cookies(client.make_url("/"))["dm_session"].value
    key, mac = good.split(".")
    for forged in (f"{key}.{mac[:-2]}xx", f"{'0' * 32}.{mac}", "x y\r\nset evil 0 0 1", key):
        client.session.cookie_jar.clear()
        client.session.cookie_jar.update_cookies({"dm_session": forged})
        assert (await client.get("/api/v1/me")).status == 401


@pytest.mark.parametrize(("store", "survives"), [("memory", False), ("redis", True), ("memcached", True)])
async def test_sessions_across_a_restart_of_dmd(tmp_path, store, survives):
    """A real `dmd serve` is stopped and started again on the same data dir (so the same session
    secret) and the same store: a browser's login goes on on Redis and Memcached, and a cookie
    write with its CSRF token still works; memory sessions end with the process."""

    flags = ("--sessions", STORES[store])
    async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as browser:
        async with running_dmd(tmp_path, *flags) as first:
            token = first.setup_link.split("token=", 1)[1]
            r = await browser.post(f"{first.base}/api/v1/setup",
                                   json={"token": token, "email": "boss@example.org", "password": PASSWORD})
            assert r.status == 201, await r.text()
            csrf = (await r.json())["csrf_token"]
            assert (await browser.get(f"{first.base}/api/v1/me")).status == 200
            port = int(first.base.rsplit(":", 1)[1])
        async with running_dmd(tmp_path, *flags, port=port, first_start=False) as second:
            assert second.proc.pid != first.proc.pid
            me = await browser.get(f"{second.base}/api/v1/me")
            if not survives:
                assert me.status == 401
                return
            assert me.status == 200, await me.text()
            body = await me.json()
            assert (body["auth"], body["email"]) == ("session", "boss@example.org"), body
            r = await browser.post(f"{second.base}/api/v1/tokens", json={"name": "after the restart"},
                                   headers={"X-CSRF-Token": csrf})
            assert r.status == 201, await r.text()


def test_session_secret_generated_once_and_private(tmp_path):
    cfg = make_config(tmp_path)
    s1 = load_session_secret(cfg)
    s2 = load_session_secret(cfg)
    assert s1 == s2 and len(s1) == 32
    path = tmp_path / "data" / "session_secret"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    configured = make_config(tmp_path, session_secret="z" * 40)
    assert load_session_secret(configured) == b"z" * 40


async def test_unreachable_store_fails_at_start(make_client):
    with pytest.raises(StartupError, match="sessions: cannot reach redis://127.0.0.1:1/0"):
        await make_client(sessions="redis://127.0.0.1:1/0")
    with pytest.raises(StartupError, match="sessions: cannot reach memcached://127.0.0.1:1"):
        await make_client(sessions="memcached://127.0.0.1:1")
