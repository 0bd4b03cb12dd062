"""Users administration through the JSON API."""

import asyncio

from tests.conftest import PASSWORD, add_user, make_token


async def test_admin_only(client, admin):
    await add_user(client, "u@example.org")
    user = await make_token(client, "u@example.org")
    assert (await client.get("/api/v1/users")).status == 401
    assert (await client.get("/api/v1/users", headers=user)).status == 403
    assert (await client.post("/api/v1/users", json={"email": "x@example.org", "password": PASSWORD},
                              headers=user)).status == 403
    assert (await client.get("/api/v1/audit", headers=user)).status == 403
    assert (await client.get("/api/v1/users", headers=admin)).status == 200


async def test_create_user_and_username_rules(client, admin):
    r = await client.post("/api/v1/users", json={"email": "Jane.Doe@example.org", "password": PASSWORD}, headers=admin)
    assert r.status == 201, await r.text()
    u = await r.json()
    assert u["username"] == "jane.doe" and u["role"] == "user" and u["instance_limit"] is None
    r = await client.post("/api/v1/users", json={"email": "jane.doe@other.org", "password": PASSWORD}, headers=admin)
    assert (await r.json())["username"] == "jane.doe-2"
    r = await client.post("/api/v1/users", json={"email": "JANE.DOE@example.org", "password": PASSWORD},
                          headers=admin)
    assert r.status == 409 and (await r.json())["error"]["code"] == "email_taken"
    r = await client.post("/api/v1/users", headers=admin,
                          json={"email": "z@example.org", "password": PASSWORD, "username": "jane.doe"})
    assert r.status == 409 and (await r.json())["error"]["code"] == "username_taken"
    r = await client.post("/api/v1/users", json={"email": "z@example.org", "password": "short"}, headers=admin)
    assert r.status == 422 and (await r.json())["error"]["field"] == "password"
    # The new user can log in.
    r = await client.post("/api/v1/auth/login", json={"email": "jane.doe@example.org", "password": PASSWORD})
    assert r.status == 200


async def test_quotas_and_patch(client, admin):
    uid = await add_user(client, "u@example.org")
    r = await client.patch(f"/api/v1/users/{uid}", json={"instance_limit": 5, "node_limit": 1, "gpu_limit": 2},
                           headers=admin)
    assert r.status == 200
    u = await r.json()
    assert (u["instance_limit"], u["node_limit"], u["gpu_limit"]) == (5, 1, 2)
    r = await client.patch(f"/api/v1/users/{uid}", json={"gpu_limit": None}, headers=admin)
    assert (await r.json())["gpu_limit"] is None and (await r.json())["instance_limit"] == 5
    r = await client.patch(f"/api/v1/users/{uid}", json={"instance_limit": "5"}, headers=admin)
    assert r.status == 422 and (await r.json())["error"]["field"] == "instance_limit"
    r = await client.patch(f"/api/v1/users/{uid}", json={"instance_limit": -1}, headers=admin)
    assert r.status == 422
    r = await client.patch(f"/api/v1/users/{uid}", json={"role": "root"}, headers=admin)
    assert r.status == 422 and (await r.json())["error"]["field"] == "role"
    r = await client.patch(f"/api/v1/users/{uid}", json={"role": "admin"}, headers=admin)
    assert (await r.json())["role"] == "admin"
    # An admin reset of the password works and the old one stops.
    r = await client.patch(f"/api/v1/users/{uid}", json={"password": "brand-new-pass"}, headers=admin)
    assert r.status == 200
    r = await client.post("/api/v1/auth/login", json={"email": "u@example.org", "password": "brand-new-pass"})
    assert r.status == 200


async def test_last_admin_is_protected(client, admin):
    me = await (await client.get("/api/v1/me", headers=admin)).json()
    for change in ({"role": "user"}, {"disabled": True}):
        r = await client.patch(f"/api/v1/users/{me['id']}", json=change, headers=admin)
        assert r.status == 409 and (await r.json())["error"]["code"] == "last_admin"
    r = await client.delete(f"/api/v1/users/{me['id']}", headers=admin)
    assert r.status == 409
    await add_user(client, "second@example.org", role="admin")
    r = await client.patch(f"/api/v1/users/{me['id']}", json={"role": "user"}, headers=admin)
    assert r.status == 200


async def test_delete_user_and_404s(client, admin):
    uid = await add_user(client, "u@example.org")
    tok = await make_token(client, "u@example.org")
    assert (await client.delete(f"/api/v1/users/{uid}", headers=admin)).status == 204
    assert (await client.get(f"/api/v1/users/{uid}", headers=admin)).status == 404
    assert (await client.delete(f"/api/v1/users/{uid}", headers=admin)).status == 404
    assert (await client.get("/api/v1/me", headers=tok)).status == 401
    assert (await client.get("/api/v1/users/abc", headers=admin)).status == 404
    assert (await client.get("/api/v1/users/99999999999999999999999", headers=admin)).status == 404


async def test_pagination(client, admin):
    for i in range(6):
        await add_user(client, f"p{i}@example.org")
    seen, cursor, pages = [], None, 0
    while True:
        url = "/api/v1/users?limit=3" + (f"&cursor={cursor}" if cursor else "")
        body = await (await client.get(url, headers=admin)).json()
        seen += [u["email"] for u in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and len(seen) == 7 == len(set(seen))
    r = await client.get("/api/v1/users?limit=0", headers=admin)
    assert r.status == 422 and (await r.json())["error"]["field"] == "limit"
    r = await client.get("/api/v1/users?cursor=x'--", headers=admin)
    assert r.status == 422


async def test_two_admins_demoting_each_other_at_once_leave_one(client, admin, database, monkeypatch):
    """The last-admin rule holds when two admins demote (then disable) each other at once.

    On PostgreSQL and MariaDB both changes are held until both transactions are open, so they
    really overlap (each locks its own target's row: without a lock over the admins both would
    count the other as an admin and pass). SQLite cannot open two write transactions at once."""
    from dmd.queries import users as user_svc

    real_update = user_svc.update
    barrier = asyncio.Barrier(2)

    async def update_when_both_are_in(conn, user_id, changes):
        async with asyncio.timeout(10):
            await barrier.wait()
        return await real_update(conn, user_id, changes)

    if database != "sqlite":
        monkeypatch.setattr(user_svc, "update", update_when_both_are_in)
    me = (await (await client.get("/api/v1/me", headers=admin)).json())["id"]
    admins = {me: admin}
    for n, change in enumerate(({"role": "user"}, {"disabled": True})):
        uid = await add_user(client, f"second{n}@example.org", role="admin")
        admins[uid] = await make_token(client, f"second{n}@example.org")
        (a, a_headers), (b, b_headers) = admins.items()
        replies = await asyncio.gather(client.patch(f"/api/v1/users/{b}", json=change, headers=a_headers),
                                       client.patch(f"/api/v1/users/{a}", json=change, headers=b_headers))
        bodies = [await r.json() for r in replies]
        # SQLite: the second may also find its sender no admin any more (403), once the first committed.
        want = [[200, 409]] if database != "sqlite" else [[200, 409], [200, 403]]
        assert sorted(r.status for r in replies) in want, (change, bodies)
        refused = next(body for r, body in zip(replies, bodies, strict=True) if r.status != 200)
        assert refused["error"]["code"] in ("last_admin", "admin_only"), refused
        survivor = a if replies[0].status == 200 else b
        listed = (await (await client.get("/api/v1/users", headers=admins[survivor])).json())["items"]
        assert [u["id"] for u in listed if u["role"] == "admin" and not u["disabled"]] == [survivor]
        admins = {survivor: admins[survivor]}
