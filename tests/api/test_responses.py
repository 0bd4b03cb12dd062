"""The shape of replies the route registry makes: a 204 has no body, ids in paths are numbers
of at most 18 digits (longer ones are not found without a query)."""

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
                         ("9" * 19, f"no such id: '{'9' * 19}'"),
                         ("9" * 18, f"no such user: {'9' * 18}")):
        r = await client.get(f"/api/v1/users/{raw}", headers=admin)
        assert (r.status, (await r.json())["error"]["message"]) == (404, message), raw
    r = await client.delete(f"/api/v1/nodes/1/shares/{'1' * 19}", headers=admin)
    assert (r.status, (await r.json())["error"]["message"]) == (404, f"no such user: '{'1' * 19}'")
