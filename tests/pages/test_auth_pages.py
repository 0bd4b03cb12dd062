"""The front door without JavaScript: /, setup link, log in and out, CSRF, redirects."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from aiohttp import ClientSession, CookieJar

from dmd.core import DM
from dmd.queries import audit
from tests.conftest import PASSWORD, add_user, setup_link
from tests.pages.conftest import csrf_of, get_csrf, page_login, post_form


def _token(client) -> str:
    link = setup_link(client)
    assert link
    return link.split("token=", 1)[1]


async def _actions(client) -> list[str]:
    async with client.app[DM].db.read() as conn:
        return [e["action"] for e in await audit.list_entries(conn, limit=500)]


async def test_root_sends_newcomer_to_setup_without_the_token(client):
    token = _token(client)
    r = await client.get("/", allow_redirects=False)
    assert r.status == 303
    assert r.headers["Location"] == "/setup"
    r = await client.get("/setup")
    text = await r.text()
    assert r.status == 200 and token not in text
    assert "setup link" in text.lower()


async def test_root_goes_to_login_then_nodes(client):
    await add_user(client, "a@example.org", role="admin")
    r = await client.get("/", allow_redirects=False)
    assert r.headers["Location"] == "/login"
    await page_login(client, "a@example.org")
    r = await client.get("/", allow_redirects=False)
    assert r.headers["Location"] == "/nodes"


async def test_plain_users_land_on_instances_and_admins_on_nodes(client):
    await add_user(client, "a@example.org", role="admin")
    await add_user(client, "u@example.org")
    r = await page_login(client, "u@example.org")
    assert r.headers["Location"] == "/instances"
    assert (await client.get("/", allow_redirects=False)).headers["Location"] == "/instances"
    assert (await client.get("/login", allow_redirects=False)).headers["Location"] == "/instances"
    # The account page shows this login at once (it was "never" until the next one).
    html = await (await client.get("/account")).text()
    last = html.split("Last login</dt><dd>", 1)[1].split("</dd>", 1)[0]
    assert "never" not in last.lower(), last
    # A next page asked for still wins; the admin lands on the nodes.
    await post_form(client, "/logout", {}, csrf_from="/instances")
    r = await page_login(client, "u@example.org", next_path="/ssh-keys")
    assert r.headers["Location"] == "/ssh-keys"
    await post_form(client, "/logout", {}, csrf_from="/instances")
    r = await page_login(client, "a@example.org")
    assert r.headers["Location"] == "/nodes"


async def test_setup_through_the_link_creates_admin_and_logs_in(client):
    token = _token(client)
    r = await client.get(f"/setup?token={token}")
    html = await r.text()
    assert r.status == 200
    assert token not in html, "the page must not contain the token"
    assert "<form" in html and 'action="' not in html.split("<form", 1)[1].split(">", 1)[0]
    csrf = csrf_of(html)
    r = await client.post(f"/setup?token={token}", allow_redirects=False, data={
        "csrf_token": csrf, "email": "Boss@Example.org", "username": "boss",
        "password": "a long password", "password2": "a long password",
    })
    assert r.status == 303 and r.headers["Location"] == "/nodes"
    r = await client.get("/nodes")
    html = await r.text()
    assert r.status == 200
    assert "boss" in html and 'href="/users"' in html and 'href="/audit"' in html
    assert "administrator account is ready" in html  # the flash message
    assert "setup.complete" in await _actions(client)
    # The link is spent.
    # Setting up was the administrator's first login: the account page says when, not "never".
    html = await (await client.get("/account")).text()
    last = html.split("Last login</dt><dd>", 1)[1].split("</dd>", 1)[0]
    assert "Never" not in last and "never" not in last, last
    r = await client.get(f"/setup?token={token}", allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/nodes"  # logged in: straight to the nodes
    async with ClientSession(base_url=str(client.make_url("")), cookie_jar=CookieJar(unsafe=True)) as s:
        r = await s.get(f"/setup?token={token}")
        assert r.status == 200 and "already set up" in await r.text()


async def test_wrong_setup_token_is_refused_and_never_shown(client):
    token = _token(client)
    r = await client.get("/setup?token=not-the-token-123")
    html = await r.text()
    assert r.status == 403
    assert "not-the-token-123" not in html and token not in html
    assert "<form" not in html.replace('action="/logout"', "")
    csrf = await get_csrf(client, "/login")
    r = await client.post("/setup?token=not-the-token-123", allow_redirects=False, data={
        "csrf_token": csrf, "email": "x@example.org", "password": "a long password",
        "password2": "a long password",
    })
    assert r.status == 403
    html = await r.text()
    assert token not in html and "not-the-token-123" not in html
    r = await client.get("/", allow_redirects=False)
    assert r.headers["Location"] == "/setup"  # still no user


async def test_setup_form_errors_keep_input_but_not_the_password(client):
    token = _token(client)
    csrf = csrf_of(await (await client.get(f"/setup?token={token}")).text())
    r = await client.post(f"/setup?token={token}", data={
        "csrf_token": csrf, "email": "boss@example.org", "password": "secret-one-1",
        "password2": "secret-two-2",
    })
    html = await r.text()
    assert r.status == 422
    assert 'value="boss@example.org"' in html and "secret-one-1" not in html
    assert "not the same" in html
    r = await client.post(f"/setup?token={token}", data={
        "csrf_token": csrf, "email": "not-an-email", "password": "short", "password2": "short",
    })
    assert r.status == 422
    r = await client.post(f"/setup?token={token}", data={
        "csrf_token": csrf, "email": "nobody", "password": "long enough pw",
        "password2": "long enough pw",
    })
    assert r.status == 422 and "valid email" in await r.text()


async def test_login_success_and_failure(client):
    await add_user(client, "alice@example.org", username="alice")
    csrf = await get_csrf(client, "/login")
    r = await client.post("/login", data={"csrf_token": csrf, "email": "alice@example.org",
                                          "password": "wrong password!"})
    html = await r.text()
    assert r.status == 401
    assert "Wrong email or password" in html
    assert 'value="alice@example.org"' in html and "wrong password!" not in html
    assert "auth.login_failed" in await _actions(client)
    r = await client.post("/login", allow_redirects=False, data={
        "csrf_token": csrf, "email": "alice@example.org", "password": PASSWORD, "next": "/account"})
    assert r.status == 303 and r.headers["Location"] == "/account"
    assert "dm_session" in {c.key for c in client.session.cookie_jar}
    r = await client.get("/account")
    assert r.status == 200 and "alice@example.org" in await r.text()
    assert "auth.login" in await _actions(client)


async def test_disabled_account_cannot_log_in(client):
    uid = await add_user(client, "bob@example.org")
    from dmd.queries import users

    async with client.app[DM].db.begin() as conn:
        await users.update(conn, uid, {"disabled": True})
    csrf = await get_csrf(client, "/login")
    r = await client.post("/login", data={"csrf_token": csrf, "email": "bob@example.org",
                                          "password": PASSWORD})
    # Exactly like a wrong password (issue 10): the page does not tell that the account exists.
    html = await r.text()
    assert r.status == 401 and "Wrong email or password" in html and "disabled" not in html


async def test_login_throttled_after_failures(client):
    await add_user(client, "carol@example.org")
    csrf = await get_csrf(client, "/login")
    statuses = []
    for _ in range(6):
        r = await client.post("/login", data={"csrf_token": csrf, "email": "carol@example.org",
                                              "password": "nope nope nope"})
        statuses.append(r.status)
    # Three failures are free, then each attempt comes too soon.
    assert statuses == [401, 401, 401, 429, 429, 429]
    assert "Too many failed logins" in await r.text()


async def test_anonymous_forms_need_the_csrf_cookie(client):
    await add_user(client, "alice@example.org")
    # No token at all.
    r = await client.post("/login", data={"email": "alice@example.org", "password": PASSWORD})
    assert r.status == 403
    html = await r.text()
    assert "form has expired" in html and r.content_type == "text/html"
    # A token that does not match the cookie.
    await get_csrf(client, "/login")
    r = await client.post("/login", data={"csrf_token": "x" * 43, "email": "alice@example.org",
                                          "password": PASSWORD})
    assert r.status == 403
    # The login page sets the cookie it expects, SameSite=Lax.
    async with ClientSession(base_url=str(client.make_url(""))) as s:
        r = await s.get("/login")
        cookie = [h for h in r.headers.getall("Set-Cookie") if h.startswith("dm_csrf=")]
        assert cookie and "SameSite=Lax" in cookie[0]


async def test_logged_in_forms_need_the_session_csrf(client):
    await add_user(client, "alice@example.org")
    await page_login(client, "alice@example.org")
    r = await client.post("/account/tokens", data={"name": "no csrf"}, allow_redirects=False)
    assert r.status == 403 and "form has expired" in await r.text()
    r = await client.post("/account/tokens", data={"name": "bad", "csrf_token": "nope"})
    assert r.status == 403
    r = await client.post("/logout", allow_redirects=False)
    assert r.status == 403  # logging out needs the token too
    r = await post_form(client, "/account/tokens", {"name": "good"})
    assert r.status == 303


async def test_logout(client):
    await add_user(client, "alice@example.org")
    await page_login(client, "alice@example.org")
    r = await post_form(client, "/logout", {})
    assert r.status == 303 and r.headers["Location"] == "/login"
    r = await client.get("/login")
    assert "You have logged out" in await r.text()
    r = await client.get("/account", allow_redirects=False)
    assert r.status == 303 and r.headers["Location"].startswith("/login")
    assert "auth.logout" in await _actions(client)


async def test_anonymous_is_sent_to_login_and_back(client):
    await add_user(client, "alice@example.org")
    for path in ("/nodes", "/instances", "/images", "/ssh-keys", "/port-maps", "/account",
                 "/users", "/audit", "/users/1"):
        r = await client.get(path, allow_redirects=False)
        assert r.status == 303, path
        loc = urlsplit(r.headers["Location"])
        assert loc.path == "/login" and parse_qs(loc.query)["next"] == [path]
    r = await client.get("/audit?action=user.", allow_redirects=False)
    assert parse_qs(urlsplit(r.headers["Location"]).query)["next"] == ["/audit?action=user."]
    r = await client.get("/login?next=/ssh-keys")
    assert 'name="next" value="/ssh-keys"' in await r.text()
    r = await page_login(client, "alice@example.org", next_path="/ssh-keys")
    assert r.headers["Location"] == "/ssh-keys"
    # An anonymous POST (a session that ended) goes to the login page with a note.
    await post_form(client, "/logout", {})
    r = await client.post("/account/tokens", data={"name": "x"}, allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/login"
    assert "session has ended" in await (await client.get("/login")).text()


async def test_open_redirects_are_refused(client):
    await add_user(client, "alice@example.org")
    bad_targets = ("//evil.example/x", "https://evil.example/", "/\\evil.example",
                   "javascript:alert(1)", "evil.example", "/x\r\nSet-Cookie: a=1")
    for bad in bad_targets:
        r = await client.get("/login", params={"next": bad})
        assert 'name="next" value=""' in await r.text(), bad
        r = await client.get("/prefs", params={"lang": "ja", "next": bad}, allow_redirects=False)
        assert r.status == 303 and r.headers["Location"] == "/", bad
    for bad in bad_targets:
        csrf = await get_csrf(client, "/login")
        r = await client.post("/login", allow_redirects=False, data={
            "csrf_token": csrf, "email": "alice@example.org", "password": PASSWORD, "next": bad})
        assert r.status == 303 and r.headers["Location"] == "/instances", bad  # alice's landing page
        await post_form(client, "/logout", {}, csrf_from="/instances")
