"""Account page without JavaScript: password change, API tokens."""

from __future__ import annotations

import re

from aiohttp import ClientSession, CookieJar

from dmd.core import DM
from dmd.queries import audit
from tests.conftest import PASSWORD, add_user
from tests.pages.conftest import csrf_of, get_csrf, page_login, post_form

SECRET_RE = re.compile(r'id="new-token-value">(dm_[A-Za-z0-9_-]+)<')


async def test_account_page_shows_profile(user_client):
    r = await user_client.get("/account")
    html = await r.text()
    assert r.status == 200
    assert "alice@example.org" in html and "alice" in html
    assert "You have no API tokens" in html
    assert r.headers["Cache-Control"] == "no-store"


async def test_password_change_ends_other_sessions(client):
    await add_user(client, "alice@example.org")
    await page_login(client, "alice@example.org")
    base = str(client.make_url(""))
    async with ClientSession(base_url=base, cookie_jar=CookieJar(unsafe=True)) as other:
        r = await other.get("/login")
        csrf = csrf_of(await r.text())
        r = await other.post("/login", data={"csrf_token": csrf, "email": "alice@example.org",
                                             "password": PASSWORD}, allow_redirects=False)
        assert r.status == 303
        assert (await other.get("/account", allow_redirects=False)).status == 200

        # Wrong current password: 403, the form again, no password echoed.
        r = await post_form(client, "/account/password", {
            "current_password": "not my password", "new_password": "brand new secret",
            "new_password2": "brand new secret"})
        html = await r.text()
        assert r.status == 403 and "current password is wrong" in html
        assert "brand new secret" not in html and "not my password" not in html
        # Repeat does not match: 422.
        r = await post_form(client, "/account/password", {
            "current_password": PASSWORD, "new_password": "brand new secret",
            "new_password2": "brand new secrex"})
        assert r.status == 422 and "not the same" in await r.text()
        # Too short: 422.
        r = await post_form(client, "/account/password", {
            "current_password": PASSWORD, "new_password": "short", "new_password2": "short"})
        assert r.status == 422 and "8 to 1024" in await r.text()

        r = await post_form(client, "/account/password", {
            "current_password": PASSWORD, "new_password": "brand new secret",
            "new_password2": "brand new secret"})
        assert r.status == 303 and r.headers["Location"] == "/account"
        r = await client.get("/account")
        assert r.status == 200 and "password has been changed" in await r.text()
        # The other browser's session is over.
        r = await other.get("/account", allow_redirects=False)
        assert r.status == 303 and r.headers["Location"].startswith("/login")
    async with client.app[DM].db.read() as conn:
        assert await audit.list_entries(conn, limit=10, action="user.password_change")
    # The new password works, the old one does not.
    await post_form(client, "/logout", {})
    csrf = await get_csrf(client, "/login")
    r = await client.post("/login", data={"csrf_token": csrf, "email": "alice@example.org",
                                          "password": PASSWORD})
    assert r.status == 401
    await page_login(client, "alice@example.org", "brand new secret")


async def test_token_is_shown_once_then_only_its_prefix(user_client):
    client = user_client
    r = await post_form(client, "/account/tokens", {"name": "laptop CLI", "expires_in_days": "30"})
    assert r.status == 303 and r.headers["Location"].startswith("/account")
    html = await (await client.get("/account")).text()
    m = SECRET_RE.search(html)
    assert m, "the new secret is on the page"
    secret = m.group(1)
    assert "will not be shown again" in html and "laptop CLI" in html
    # It works as a bearer token.
    r = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert r.status == 200 and (await r.json())["email"] == "alice@example.org"
    # Shown once: the next view lists only the prefix.
    html = await (await client.get("/account")).text()
    assert secret not in html
    assert secret[:10] + "…" in html
    assert "laptop CLI" in html
    async with client.app[DM].db.read() as conn:
        entries = await audit.list_entries(conn, limit=10, action="token.create")
    assert entries and entries[0]["detail"]["name"] == "laptop CLI"

    # Revoke it.
    token_id = re.search(r'action="/account/tokens/(\d+)/revoke"', html).group(1)
    r = await post_form(client, f"/account/tokens/{token_id}/revoke", {})
    assert r.status == 303
    html = await (await client.get("/account")).text()
    assert "has been revoked" in html and secret[:10] not in html
    r = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert r.status == 401
    async with client.app[DM].db.read() as conn:
        assert await audit.list_entries(conn, limit=10, action="token.revoke")
    # Revoking again, or someone else's token: 404 page.
    r = await post_form(client, f"/account/tokens/{token_id}/revoke", {})
    assert r.status == 404 and "text/html" in r.headers["Content-Type"]


async def test_token_form_errors(user_client):
    client = user_client
    r = await post_form(client, "/account/tokens", {"name": "   ", "expires_in_days": ""})
    assert r.status == 422 and "1 to 100 characters" in await r.text()
    r = await post_form(client, "/account/tokens", {"name": "ok name", "expires_in_days": "soon"})
    html = await r.text()
    assert r.status == 422 and "1 to 3650" in html and 'value="ok name"' in html
    r = await post_form(client, "/account/tokens", {"name": "ok name", "expires_in_days": "0"})
    assert r.status == 422
    r = await post_form(client, "/account/tokens", {"name": "never expires", "expires_in_days": ""})
    assert r.status == 303
    html = await (await client.get("/account")).text()
    assert "never expires" in html


async def test_cannot_revoke_someone_elses_token(client):
    await add_user(client, "alice@example.org")
    await add_user(client, "bob@example.org")
    await page_login(client, "bob@example.org")
    await post_form(client, "/account/tokens", {"name": "bobs"})
    html = await (await client.get("/account")).text()
    token_id = re.search(r'action="/account/tokens/(\d+)/revoke"', html).group(1)
    await post_form(client, "/logout", {})
    await page_login(client, "alice@example.org")
    r = await post_form(client, f"/account/tokens/{token_id}/revoke", {})
    assert r.status == 404
