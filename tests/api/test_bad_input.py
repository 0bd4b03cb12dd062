"""Bad input of every kind gets a clear 4xx, never a traceback, and changes nothing."""

import json

import pytest
import sqlalchemy as sa

from dmd.core import DM
from dmd.db.schema import api_tokens, audit_log, users
from tests.conftest import PASSWORD, add_user, login

SQL_NASTIES = ["'; DROP TABLE users; --", "\" OR 1=1 --", "admin'--", "1; DELETE FROM api_tokens", "%_\\",
               "Robert'); DROP TABLE audit_log;--"]


async def _counts(client):
    async with client.app[DM].db.read() as conn:
        return tuple([(await conn.execute(sa.select(sa.func.count()).select_from(t))).scalar_one()
                      for t in (users, api_tokens)])


def _assert_clean_error(status, body, expected):
    assert status == expected, body
    assert "Traceback" not in body and "File \"" not in body
    err = json.loads(body)["error"]
    assert err["code"] and err["message"]
    return err


@pytest.mark.parametrize("raw, ctype, status, code", [
    (b"{not json", "application/json", 400, "malformed_json"),
    (b"[1, 2, 3]", "application/json", 400, "malformed_json"),
    (b"\"just a string\"", "application/json", 400, "malformed_json"),
    (b"\xff\xfe\x00", "application/json", 400, "malformed_json"),
    (b"[" * 100000 + b"]" * 100000, "application/json", 400, "malformed_json"),
    (b"", "application/json", 400, "malformed_json"),
    (b"name=x", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    (b"{\"name\": \"x\"}", "text/plain", 415, "unsupported_media_type"),
])
async def test_malformed_bodies(client, admin, raw, ctype, status, code):
    before = await _counts(client)
    r = await client.post("/api/v1/tokens", data=raw, headers={**admin, "Content-Type": ctype})
    err = _assert_clean_error(r.status, await r.text(), status)
    assert err["code"] == code
    assert await _counts(client) == before


async def test_huge_body_is_413(client, admin):
    r = await client.post("/api/v1/tokens", data=b"{\"name\": \"" + b"x" * 2_000_000 + b"\"}",
                          headers={**admin, "Content-Type": "application/json"})
    err = _assert_clean_error(r.status, await r.text(), 413)
    assert err["code"] == "too_large"


@pytest.mark.parametrize("body, field", [
    ({"name": "x", "admin": True}, "admin"),
    ({"name": 123}, "name"),
    ({"name": None}, "name"),
    ({"name": ""}, "name"),
    ({"name": "x" * 101}, "name"),
    ({"name": "line\nbreak"}, "name"),
    ({"name": "x", "expires_in_days": "30"}, "expires_in_days"),
    ({"name": "x", "expires_in_days": 0}, "expires_in_days"),
    ({"name": "x", "expires_in_days": True}, "expires_in_days"),
    ({}, "name"),
])
async def test_invalid_fields_name_the_field(client, admin, body, field):
    before = await _counts(client)
    r = await client.post("/api/v1/tokens", json=body, headers=admin)
    err = _assert_clean_error(r.status, await r.text(), 422)
    assert err["field"] == field and field in err["message"]
    assert await _counts(client) == before


@pytest.mark.parametrize("body, field", [
    ({"email": "not-an-email", "password": PASSWORD}, "email"),
    ({"email": "a@b.c" + "x" * 300, "password": PASSWORD}, "email"),
    ({"email": "x@example.org", "password": PASSWORD, "role": "superuser"}, "role"),
    ({"email": "x@example.org", "password": PASSWORD, "username": "Bad Name!"}, "username"),
    ({"email": "x@example.org", "password": PASSWORD, "username": "../../etc"}, "username"),
    ({"email": "x@example.org", "password": "x" * 2000}, "password"),
    ({"email": "x@example.org", "password": PASSWORD, "gpu_limit": 1.5}, "gpu_limit"),
])
async def test_invalid_user_fields(client, admin, body, field):
    before = await _counts(client)
    r = await client.post("/api/v1/users", json=body, headers=admin)
    err = _assert_clean_error(r.status, await r.text(), 422)
    assert err["field"] == field
    assert await _counts(client) == before


@pytest.mark.parametrize("nasty", SQL_NASTIES)
async def test_sql_metacharacters_are_just_data(client, admin, nasty):
    # Free-text fields keep the text exactly; constrained ones refuse it; nothing breaks.
    r = await client.post("/api/v1/tokens", json={"name": nasty}, headers=admin)
    assert r.status == 201
    assert (await r.json())["name"] == nasty.strip()
    r = await client.post("/api/v1/users", json={"email": f"{nasty}@example.org", "password": PASSWORD},
                          headers=admin)
    if " " in nasty:  # no email address has a space
        assert _assert_clean_error(r.status, await r.text(), 422)["field"] == "email"
    else:
        assert r.status == 201 and (await r.json())["email"] == f"{nasty}@example.org".lower()
    r = await client.post("/api/v1/users", json={"email": "ok@example.org", "password": nasty + "-long-enough",
                                                  "username": nasty}, headers=admin)
    _assert_clean_error(r.status, await r.text(), 422)
    r = await client.post("/api/v1/auth/login", json={"email": nasty, "password": nasty})
    assert r.status == 401
    r = await client.get(f"/api/v1/audit?action={nasty}", headers=admin)
    assert r.status == 422
    r = await client.get("/api/v1/audit", params={"target_id": nasty}, headers=admin)
    assert r.status == 200 and (await r.json())["items"] == []
    async with client.app[DM].db.read() as conn:
        for t in (users, api_tokens, audit_log):
            await conn.execute(sa.select(sa.func.count()).select_from(t))  # every table is still there


@pytest.mark.parametrize("cookie", [
    "garbage", "a" * 5000, "0123456789abcdef0123456789abcdef.forgedsignature", "\u00e9\u00e8",
    "0123456789abcdef0123456789abcdef", "; DROP TABLE users", ".", "..",
])
async def test_bad_session_cookies_are_anonymous(client, cookie):
    await add_user(client, "u@example.org")
    client.session.cookie_jar.update_cookies({"dm_session": cookie})
    r = await client.get("/api/v1/me")
    _assert_clean_error(r.status, await r.text(), 401)
    r = await client.post("/api/v1/auth/login", json={"email": "u@example.org", "password": PASSWORD})
    assert r.status == 200


async def test_routes_and_methods(client, admin):
    r = await client.get("/api/v1/no/such/thing", headers=admin)
    assert _assert_clean_error(r.status, await r.text(), 404)["code"] == "not_found"
    r = await client.put("/api/v1/me", headers=admin)
    assert _assert_clean_error(r.status, await r.text(), 405)["code"] == "method_not_allowed"
    r = await client.get("/api/v1/users/1;DROP", headers=admin)
    _assert_clean_error(r.status, await r.text(), 404)


async def test_unexpected_failure_is_a_clean_500(client, admin, monkeypatch):
    from dmd.queries import tokens

    async def boom(*a, **k):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(tokens, "list_for", boom)
    r = await client.get("/api/v1/tokens", headers=admin)
    body = await r.text()
    err = _assert_clean_error(r.status, body, 500)
    assert "secret internals" not in body and err["code"] == "internal"


async def test_login_rejects_wrong_shapes(client):
    for body in ({"email": "a@b.c"}, {"email": 5, "password": "x"}, {"email": "a@b.c", "password": "x", "remember": 1}):
        r = await client.post("/api/v1/auth/login", json=body)
        _assert_clean_error(r.status, await r.text(), 422)
    h = None
    await add_user(client, "u@example.org")
    h = await login(client, "u@example.org")
    assert h
