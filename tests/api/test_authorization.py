"""Who may call each route: the expected level of every route, written down here, against what
the server does. A route missing from this table fails the test, so a new one must be placed."""

from __future__ import annotations

import pytest

from dmd.api import build_api
from tests.conftest import add_user, make_token

# (method, path) -> "none" (anyone), "optional" (anyone; a login is used when there is one),
# "user" (any logged-in user), "admin" (administrators only).
LEVELS: dict[tuple[str, str], str] = {
    ("GET", "/api/v1/health"): "none",
    ("GET", "/api/v1/openapi.json"): "none",
    ("POST", "/api/v1/auth/login"): "optional",
    ("POST", "/api/v1/auth/logout"): "optional",
    ("POST", "/api/v1/setup"): "none",
    ("POST", "/api/v1/nodes/join"): "none",
    ("GET", "/api/v1/me"): "user",
    ("POST", "/api/v1/me/password"): "user",
    ("GET", "/api/v1/users"): "admin",
    ("POST", "/api/v1/users"): "admin",
    ("GET", "/api/v1/users/{id}"): "admin",
    ("PATCH", "/api/v1/users/{id}"): "admin",
    ("DELETE", "/api/v1/users/{id}"): "admin",
    ("GET", "/api/v1/audit"): "admin",
    ("GET", "/api/v1/tokens"): "user",
    ("POST", "/api/v1/tokens"): "user",
    ("DELETE", "/api/v1/tokens/{id}"): "user",
    ("GET", "/api/v1/nodes"): "user",
    ("POST", "/api/v1/nodes"): "user",
    ("GET", "/api/v1/nodes/{id}"): "user",
    ("PATCH", "/api/v1/nodes/{id}"): "user",
    ("DELETE", "/api/v1/nodes/{id}"): "user",
    ("POST", "/api/v1/nodes/{id}/cordon"): "user",
    ("POST", "/api/v1/nodes/{id}/uncordon"): "user",
    ("POST", "/api/v1/nodes/{id}/join-token"): "user",
    ("POST", "/api/v1/nodes/{id}/rotate-credential"): "user",
    ("GET", "/api/v1/nodes/{id}/metrics"): "user",
    ("POST", "/api/v1/nodes/{id}/ping"): "user",
    ("POST", "/api/v1/nodes/{id}/facts/refresh"): "user",
    ("GET", "/api/v1/nodes/{id}/containers"): "user",
    ("GET", "/api/v1/nodes/{id}/shares"): "user",
    ("POST", "/api/v1/nodes/{id}/shares"): "user",
    ("DELETE", "/api/v1/nodes/{id}/shares/{user_id}"): "user",
    ("POST", "/api/v1/nodes/{id}/public"): "admin",
    ("GET", "/api/v1/shares"): "user",
    ("POST", "/api/v1/shares/{id}/accept"): "user",
    ("DELETE", "/api/v1/shares/{id}"): "user",
    ("GET", "/api/v1/nodes/{id}/images"): "user",
    ("POST", "/api/v1/nodes/{id}/images/pull"): "user",
    ("POST", "/api/v1/nodes/{id}/images/import"): "user",
    ("DELETE", "/api/v1/images/{id}"): "user",
    ("PATCH", "/api/v1/images/{id}"): "user",
    ("POST", "/api/v1/images/{id}/copy"): "user",
    ("POST", "/api/v1/instances"): "user",
    ("GET", "/api/v1/instances"): "user",
    ("GET", "/api/v1/instances/{id}"): "user",
    ("PATCH", "/api/v1/instances/{id}/ssh"): "user",
    ("POST", "/api/v1/instances/{id}/start"): "user",
    ("POST", "/api/v1/instances/{id}/stop"): "user",
    ("POST", "/api/v1/instances/{id}/restart"): "user",
    ("DELETE", "/api/v1/instances/{id}"): "user",
    ("GET", "/api/v1/instances/{id}/logs"): "user",
    ("POST", "/api/v1/instances/{id}/commit"): "user",
    ("GET", "/api/v1/capacity"): "user",
    ("PUT", "/api/v1/nodes/{id}/instance-defaults"): "admin",
    ("POST", "/api/v1/instances/{id}/port-maps"): "user",
    ("GET", "/api/v1/port-maps"): "user",
    ("GET", "/api/v1/port-maps/{id}"): "user",
    ("DELETE", "/api/v1/port-maps/{id}"): "user",
    ("GET", "/api/v1/ssh-keys"): "user",
    ("POST", "/api/v1/ssh-keys"): "user",
    ("GET", "/api/v1/ssh-keys/{id}"): "user",
    ("PATCH", "/api/v1/ssh-keys/{id}"): "user",
    ("DELETE", "/api/v1/ssh-keys/{id}"): "user",
    ("GET", "/api/v1/ssh/gateway"): "user",
    ("GET", "/api/v1/ssh/config"): "user",
    ("GET", "/api/v1/gpus"): "admin",
}


def test_every_route_has_its_level_written_down():
    routes = {(r.method, r.path) for r in build_api().routes}
    assert sorted(routes - set(LEVELS)) == [], "place each new route in LEVELS"
    assert sorted(set(LEVELS) - routes) == [], "a route in LEVELS is gone"


async def test_each_route_refuses_whom_it_must(client, admin):
    """Anonymous callers get 401 on user and admin routes, plain users 403 on admin routes;
    the open routes answer anonymous callers with something else than 401 (and than 403)."""
    await add_user(client, "plain@example.org")
    plain = await make_token(client, "plain@example.org")
    wrong = {}
    for (method, path), level in LEVELS.items():
        url = path.replace("{id}", "1").replace("{user_id}", "1")
        anonymous = await client.request(method, url, json={})
        got = anonymous.status
        if level in ("user", "admin"):
            body = await anonymous.json()
            if (got, body["error"]["code"]) != (401, "unauthenticated") or \
                    anonymous.headers.get("WWW-Authenticate") != 'Bearer realm="dm"':
                wrong[(method, path, "anonymous")] = (got, body)
        elif got in (401, 403):
            wrong[(method, path, "anonymous")] = got
        if level == "admin":
            as_user = await client.request(method, url, json={}, headers=plain)
            body = await as_user.json()
            if (as_user.status, body["error"]["code"]) != (403, "forbidden"):
                wrong[(method, path, "plain user")] = (as_user.status, body)
    assert wrong == {}


@pytest.mark.parametrize("header", ["Basic YWRtaW46YWRtaW4=", "Bearer", "Bearer    ", "Token dm_x", "bearer dm_nope"])
async def test_bad_authorization_headers_are_401_everywhere(client, admin, header):
    for path in ("/api/v1/me", "/api/v1/users", "/api/v1/health"):
        r = await client.get(path, headers={"Authorization": header})
        assert r.status == 401, (path, header, await r.text())
