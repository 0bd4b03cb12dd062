"""The shape of replies the route registry makes: a 204 has no body, ids in paths are numbers
that fit the databases' 32-bit ids (larger ones are not found without a query: PostgreSQL
would refuse the query itself)."""

from __future__ import annotations

from tests.conftest import add_user, make_token


async def test_a_204_has_no_body(client, admin):
    await add_user(client, "u@example.org")
    user = await make_token(client, "u@example.org")
    made = await (await client.post("/api/v1/tokens", json={"name": "spare"}, headers=user)).json()
    r = await client.delete(f"/api/v1/tokens/{made['id']}", headers=user)
    assert r.status == 204 and await r.read() == b""
    assert "Content-Type" not in r.headers or not r.headers["Content-Type"].startswith("application/json")


async def test_ids_in_paths(client, admin):
    for raw, message in (("abc", "no such id: 'abc'"), ("-1", "no such id: '-1'"),
                         ("9" * 19, f"no such id: '{'9' * 19}'"), ("9" * 11, f"no such id: '{'9' * 11}'"),
                         ("2147483648", "no such id: '2147483648'"), ("2147483647", "no such user: 2147483647"),
                         ("0" * 11 + "7", f"no such id: '{'0' * 11}7'"), ("0000000007", "no such user: 7")):
        r = await client.get(f"/api/v1/users/{raw}", headers=admin)
        assert (r.status, (await r.json())["error"]["message"]) == (404, message), raw
    r = await client.delete(f"/api/v1/nodes/1/shares/{'1' * 19}", headers=admin)
    assert (r.status, (await r.json())["error"]["message"]) == (404, f"no such user: '{'1' * 19}'")


async def test_ids_beyond_the_databases_are_refused_naming_the_field(client, admin):
    """PostgreSQL refuses a number above 2**31 - 1 where an id goes (it once made these 500s)."""
    big = 2**31
    for method, path, body, field in (
        ("GET", f"/api/v1/users?cursor={big}", None, "cursor"),
        ("GET", f"/api/v1/nodes?cursor={'9' * 11}", None, "cursor"),
        ("GET", f"/api/v1/instances?cursor={big}", None, "cursor"),
        ("GET", f"/api/v1/port-maps?cursor={big}", None, "cursor"),
        ("GET", f"/api/v1/tokens?cursor={big}", None, "cursor"),
        ("GET", f"/api/v1/audit?actor_id={big}", None, "actor_id"),
        ("GET", f"/api/v1/ssh-keys?user_id={big}", None, "user_id"),
        ("POST", "/api/v1/nodes/1/shares", {"user_id": big}, "user_id"),
        ("POST", "/api/v1/instances", {"name": "x", "image": "i:1", "node_id": big}, "node_id"),
        ("POST", "/api/v1/instances", {"name": "x", "image": "i:1", "ssh_key_ids": [big]}, "ssh_key_ids.0"),
    ):
        r = await client.request(method, path, json=body, headers=admin)
        got = await r.json()
        assert (r.status, got["error"]["field"]) == (422, field), (method, path, got)
    # The largest id is an id: not found, without an error.
    for path in (f"/api/v1/users?cursor={big - 1}", f"/api/v1/audit?actor_id={big - 1}"):
        r = await client.get(path, headers=admin)
        assert r.status == 200 and (await r.json())["items"] == [], path
