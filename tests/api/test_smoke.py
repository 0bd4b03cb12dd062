async def test_health(client):
    r = await client.get("/api/v1/health")
    assert r.status == 200
    assert (await r.json())["status"] == "ok"


async def test_admin_token_me(client, admin):
    r = await client.get("/api/v1/me", headers=admin)
    assert r.status == 200
    body = await r.json()
    assert body["role"] == "admin" and body["auth"] == "token"
