"""Issue 10, hole 13: the password form offers "sign out everywhere and revoke my API tokens",
ticked by default; unticked, tokens survive (other sessions end either way)."""

from __future__ import annotations

from tests.conftest import PASSWORD, add_user, make_token
from tests.pages.conftest import get_csrf, page_login


async def _change(client, **extra: str):
    token = await get_csrf(client, "/account")
    return await client.post("/account/password", allow_redirects=False, data={
        "csrf_token": token, "current_password": PASSWORD, "new_password": "another password",
        "new_password2": "another password", **extra})


async def test_the_box_is_ticked_by_default_and_revokes_tokens(client):
    await add_user(client, "u@example.org")
    api = await make_token(client, "u@example.org")
    await page_login(client, "u@example.org")
    html = await (await client.get("/account")).text()
    assert 'name="sign_out_everywhere" value="on" checked' in html
    r = await _change(client, sign_out_everywhere="on")  # what the ticked box sends
    assert r.status == 303
    assert (await client.get("/api/v1/me", headers=api)).status == 401
    page = await (await client.get("/account")).text()  # this browser carries on
    assert "API tokens were revoked" in page


async def test_unticked_tokens_survive(client):
    await add_user(client, "u@example.org")
    api = await make_token(client, "u@example.org")
    await page_login(client, "u@example.org")
    r = await _change(client)  # an unticked box sends nothing
    assert r.status == 303
    assert (await client.get("/api/v1/me", headers=api)).status == 200
    assert (await client.get("/account")).status == 200


async def test_a_failed_attempt_keeps_the_box_as_it_was(client):
    await add_user(client, "u@example.org")
    await page_login(client, "u@example.org")
    token = await get_csrf(client, "/account")
    r = await client.post("/account/password", data={
        "csrf_token": token, "current_password": "wrong password", "new_password": "another password",
        "new_password2": "another password"})
    assert r.status == 403
    assert 'name="sign_out_everywhere" value="on">' in await r.text()  # left unticked
