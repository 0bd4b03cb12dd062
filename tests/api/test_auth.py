"""Login, logout, setup, sessions, CSRF and throttling through the JSON API."""

import datetime as dt
from http.cookies import SimpleCookie

from aiohttp import ClientSession, CookieJar

from dmd.core import DM
from tests.conftest import PASSWORD, add_user, login, make_token, setup_link


def _cookies(resp) -> SimpleCookie:
    jar: SimpleCookie = SimpleCookie()
    for h in resp.headers.getall("Set-Cookie", []):
        jar.load(h)
    return jar


async def test_setup_link_creates_first_admin_once(client):
    link = setup_link(client)
    assert link and "/setup?token=" in link
    token = link.split("token=", 1)[1]
    bad = await client.post("/api/v1/setup", json={"token": "nope", "email": "a@example.org", "password": PASSWORD})
    assert bad.status == 403
    r = await client.post("/api/v1/setup", json={"token": token, "email": "Boss@Example.org", "password": PASSWORD})
    assert r.status == 201, await r.text()
    body = await r.json()
    assert body["user"]["role"] == "admin" and body["user"]["email"] == "boss@example.org"
    assert body["user"]["username"] == "boss"
    me = await client.get("/api/v1/me")
    assert me.status == 200 and (await me.json())["auth"] == "session"
    again = await client.post("/api/v1/setup", json={"token": token, "email": "x@example.org", "password": PASSWORD},
                              headers={"X-CSRF-Token": body["csrf_token"]})
    assert again.status == 409


async def test_no_setup_link_once_users_exist(make_client, tmp_path):
    c1 = await make_client()
    await add_user(c1, "a@example.org", role="admin")
    await c1.close()
    c2 = await make_client()
    assert setup_link(c2) is None


async def test_login_cookies_are_httponly_and_samesite(client):
    await add_user(client, "u@example.org")
    r = await client.post("/api/v1/auth/login", json={"email": "u@example.org", "password": PASSWORD})
    assert r.status == 200
    jar = _cookies(r)
    sess, csrf = jar["dm_session"], jar["dm_csrf"]
    assert sess["httponly"] and sess["samesite"] == "Lax" and not sess["secure"]
    assert not csrf["httponly"] and csrf["samesite"] == "Lax"
    assert (await r.json())["csrf_token"] == csrf.value


async def test_secure_cookies_behind_trusted_proxy(make_client):
    c = await make_client(trust_proxy=True)
    await add_user(c, "u@example.org")
    r = await c.post("/api/v1/auth/login", json={"email": "u@example.org", "password": PASSWORD},
                     headers={"X-Forwarded-Proto": "https"})
    jar = _cookies(r)
    assert jar["dm_session"]["secure"] and jar["dm_csrf"]["secure"]


async def test_forwarded_proto_ignored_without_trust_proxy(client):
    await add_user(client, "u@example.org")
    r = await client.post("/api/v1/auth/login", json={"email": "u@example.org", "password": PASSWORD},
                          headers={"X-Forwarded-Proto": "https"})
    assert not _cookies(r)["dm_session"]["secure"]


async def test_unknown_email_and_wrong_password_look_identical(client):
    await add_user(client, "u@example.org")
    a = await client.post("/api/v1/auth/login", json={"email": "u@example.org", "password": "wrong-password"})
    b = await client.post("/api/v1/auth/login", json={"email": "nobody@example.org", "password": "wrong-password"})
    assert a.status == b.status == 401
    assert await a.json() == await b.json()


async def test_throttling_slows_then_locks(make_client):
    """The throttle counts per account and per client address, each on its own: failures for
    one account from one address hold back that account from every address, and no other
    account; many accounts failing from one address hold back that address, and no other."""
    client = await make_client(trust_proxy=True)  # X-Forwarded-For names the client's address

    async def log_in(email, password, address):
        r = await client.post("/api/v1/auth/login", json={"email": email, "password": password},
                              headers={"X-Forwarded-For": address})
        return r.status, await r.json()

    for email in ("u@example.org", "v@example.org", "w@example.org"):
        await add_user(client, email)
    statuses = [(await log_in("u@example.org", "wrong-password", "192.0.2.1"))[0] for _ in range(3)]
    assert statuses == [401, 401, 401]
    # The fourth comes too soon after three failures: it must wait, even with the right password,
    # and from another address too (the account is what was guessed at).
    for address in ("192.0.2.1", "192.0.2.2"):
        status, body = await log_in("u@example.org", PASSWORD, address)
        assert status == 429 and body["error"]["code"] == "too_many_requests", (address, body)
        assert 1 <= body["error"]["retry_after"] <= 2, body
    # Another account is unaffected, from the same address and from another.
    assert (await log_in("v@example.org", PASSWORD, "192.0.2.1"))[0] == 200
    assert (await log_in("v@example.org", PASSWORD, "192.0.2.2"))[0] == 200
    # Locked after lock_after failures: simulate the passage of the delays.
    throttle = client.app[DM].throttle
    for _ in range(10):
        throttle.failure(["acct:u@example.org"])
    assert throttle.retry_after(["acct:u@example.org"]) > 600
    status, body = await log_in("u@example.org", PASSWORD, "192.0.2.3")
    assert status == 429 and body["error"]["retry_after"] > 600
    assert (await log_in("w@example.org", PASSWORD, "192.0.2.3"))[0] == 200
    # One address trying many accounts: nine failures are free (three times an account's), then it
    # waits, whichever account it names; other addresses go on.
    for i in range(9):
        assert (await log_in(f"nobody{i}@example.org", "wrong-password", "198.51.100.7"))[0] == 401
    status, body = await log_in("w@example.org", PASSWORD, "198.51.100.7")
    assert status == 429 and body["error"]["retry_after"] >= 1
    assert (await log_in("w@example.org", PASSWORD, "198.51.100.8"))[0] == 200


async def test_disabled_account(client, admin):
    uid = await add_user(client, "u@example.org")
    tok = await make_token(client, "u@example.org")
    await login(client, "u@example.org")
    assert (await client.get("/api/v1/me")).status == 200
    r = await client.patch(f"/api/v1/users/{uid}", json={"disabled": True}, headers=admin)
    assert r.status == 200
    assert (await client.get("/api/v1/me")).status == 401  # the session ended
    assert (await client.get("/api/v1/me", headers=tok)).status == 401  # and tokens stop
    r = await client.post("/api/v1/auth/login", json={"email": "u@example.org", "password": PASSWORD})
    # Exactly like a wrong password (issue 10): nobody learns the account exists and is disabled.
    assert r.status == 401 and (await r.json())["error"]["code"] == "bad_credentials"


async def test_logout_ends_session(client):
    await add_user(client, "u@example.org")
    h = await login(client, "u@example.org")
    assert (await client.get("/api/v1/me")).status == 200
    assert (await client.post("/api/v1/auth/logout", headers=h)).status == 204
    assert (await client.get("/api/v1/me")).status == 401


async def test_csrf_required_for_cookie_writes_only(client):
    await add_user(client, "u@example.org")
    h = await login(client, "u@example.org")
    r = await client.post("/api/v1/tokens", json={"name": "x"})
    assert r.status == 403 and (await r.json())["error"]["code"] == "csrf"
    r = await client.post("/api/v1/tokens", json={"name": "x"}, headers={"X-CSRF-Token": "forged"})
    assert r.status == 403
    r = await client.post("/api/v1/tokens", json={"name": "x"}, headers=h)
    assert r.status == 201
    bearer = {"Authorization": f"Bearer {(await r.json())['token']}"}
    async with ClientSession(base_url=str(client.make_url(""))) as anon:
        r = await anon.post("/api/v1/tokens", json={"name": "y"}, headers=bearer)
        assert r.status == 201


async def test_password_change_ends_other_sessions(client):
    await add_user(client, "u@example.org")
    h = await login(client, "u@example.org")
    jar = CookieJar(unsafe=True)
    async with ClientSession(base_url=str(client.make_url("")), cookie_jar=jar) as other:
        r = await other.post("/api/v1/auth/login", json={"email": "u@example.org", "password": PASSWORD})
        assert r.status == 200
        assert (await other.get("/api/v1/me")).status == 200
        r = await client.post("/api/v1/me/password",
                              json={"current_password": "wrong", "new_password": "n3w-password"}, headers=h)
        assert r.status == 403
        r = await client.post("/api/v1/me/password",
                              json={"current_password": PASSWORD, "new_password": "n3w-password"}, headers=h)
        assert r.status == 204
        assert (await other.get("/api/v1/me")).status == 401
        assert (await client.get("/api/v1/me")).status == 200  # the session that changed it goes on
    r = await client.post("/api/v1/auth/login", json={"email": "u@example.org", "password": "n3w-password"})
    assert r.status == 200


async def test_session_rotates_on_login(client):
    await add_user(client, "u@example.org")
    r1 = await client.post("/api/v1/auth/login", json={"email": "u@example.org", "password": PASSWORD})
    r2 = await client.post("/api/v1/auth/login", json={"email": "u@example.org", "password": PASSWORD})
    assert _cookies(r1)["dm_session"].value != _cookies(r2)["dm_session"].value


async def test_audit_records_logins(client, admin):
    await add_user(client, "u@example.org")
    await client.post("/api/v1/auth/login", json={"email": "u@example.org", "password": "bad-password"})
    r = await client.get("/api/v1/audit?action=auth.", headers=admin)
    actions = [e["action"] for e in (await r.json())["items"]]
    # Newest first: u's failure, then the admin's login (the admin fixture's token).
    assert actions == ["auth.login_failed", "auth.login"], actions


async def test_a_success_clears_the_accounts_count(client):
    await add_user(client, "u@example.org")

    async def attempt(password):
        return (await client.post("/api/v1/auth/login", json={"email": "u@example.org", "password": password})).status

    assert [await attempt("wrong-password") for _ in range(2)] == [401, 401]
    assert await attempt(PASSWORD) == 200
    # Counted from zero again: three more failures are free (without the reset the second would wait).
    assert [await attempt("wrong-password") for _ in range(3)] == [401, 401, 401]


async def test_a_login_is_recorded_and_an_old_hash_is_replaced(client, admin):
    from argon2 import PasswordHasher

    from dmd.auth import passwords
    from dmd.queries import users

    old = PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1).hash(PASSWORD)  # other parameters
    async with client.app[DM].db.begin() as conn:
        u = await users.create(conn, email="old@example.org", password_hash=old)
    before = dt.datetime.now(dt.UTC)
    r = await client.post("/api/v1/auth/login", json={"email": "old@example.org", "password": PASSWORD})
    assert r.status == 200
    async with client.app[DM].db.read() as conn:
        stored = await users.password_hash_for(conn, u.id)
    assert stored != old and not passwords.needs_rehash(stored) and await passwords.verify_password(stored, PASSWORD)
    shown = await (await client.get(f"/api/v1/users/{u.id}", headers=admin)).json()
    last = dt.datetime.fromisoformat(shown["last_login_at"].replace("Z", "+00:00"))
    assert before - dt.timedelta(seconds=1) <= last <= dt.datetime.now(dt.UTC)
    # The new hash is the one that works from now on; the session from before the rehash goes on.
    assert (await client.get("/api/v1/me")).status == 200
    r = await client.post("/api/v1/auth/login", json={"email": "old@example.org", "password": PASSWORD})
    assert r.status == 200
