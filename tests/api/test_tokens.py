"""Personal API tokens."""

import datetime as dt

from dmd.core import DM
from dmd.db.schema import api_tokens
from tests.conftest import add_user, login, make_token


async def test_token_lifecycle(client):
    await add_user(client, "u@example.org")
    h = await login(client, "u@example.org")
    r = await client.post("/api/v1/tokens", json={"name": "laptop", "expires_in_days": 30}, headers=h)
    assert r.status == 201
    created = await r.json()
    secret = created["token"]
    assert secret.startswith("dm_") and created["prefix"] == secret[:10]
    bearer = {"Authorization": f"Bearer {secret}"}
    assert (await client.get("/api/v1/me", headers=bearer)).status == 200
    listed = await (await client.get("/api/v1/tokens")).json()
    assert [t["name"] for t in listed["items"]] == ["laptop"]
    assert secret not in str(listed)
    # Only a hash is stored.
    async with client.app[DM].db.read() as conn:
        stored = (await conn.execute(api_tokens.select())).all()
    assert secret not in str(stored)
    assert (await client.delete(f"/api/v1/tokens/{created['id']}", headers=h)).status == 204
    r = await client.get("/api/v1/me", headers=bearer)
    assert r.status == 401 and "revoked" in (await r.json())["error"]["message"]


async def test_cannot_revoke_someone_elses_token(client):
    await add_user(client, "a@example.org")
    await add_user(client, "b@example.org")
    a = await make_token(client, "a@example.org")
    b = await make_token(client, "b@example.org")
    a_tokens = await (await client.get("/api/v1/tokens", headers=a)).json()
    tid = a_tokens["items"][0]["id"]
    assert (await client.delete(f"/api/v1/tokens/{tid}", headers=b)).status == 404
    assert (await client.get("/api/v1/me", headers=a)).status == 200


async def test_expired_token_refused(client):
    await add_user(client, "u@example.org")
    bearer = await make_token(client, "u@example.org")
    async with client.app[DM].db.begin() as conn:
        await conn.execute(api_tokens.update().values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))
    client.app[DM].token_cache._entries.clear()  # as if the 5 s cache had run out
    assert (await client.get("/api/v1/me", headers=bearer)).status == 401


async def test_malformed_authorization_headers(client):
    for value in ("Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer dm_short", "Bearer dm_" + "x" * 300,
                  "Bearer dm_' OR '1'='1' -- padpadpadpad", "Bearer dm_ünïcödé-padpadpadpadpad"):
        r = await client.get("/api/v1/me", headers={"Authorization": value})
        assert r.status == 401, value
        assert (await r.json())["error"]["code"] == "unauthenticated"
