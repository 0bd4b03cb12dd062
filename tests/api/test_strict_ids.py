"""Ids in paths and forms are ASCII digits within what storage holds (1..2^31-1), in the API and
in the pages: anything else is a 404 (a path) or a 422 naming the field (a form), never a 500.

`str.isdigit()` takes '³' (which int() refuses) and '١' (which int() reads as 1), and an id
beyond 32 bits reached the database, where PostgreSQL refuses it outright: both were 500s."""

from __future__ import annotations

import re

import pytest

from dmd.api import build_api
from tests.conftest import add_user, login

# '³' (%C2%B3) and '²' pass str.isdigit() and fail int(); '١' (Arabic-Indic one) and '１'
# (full-width one) pass both; the others are beyond what a 32-bit id column holds, or zero.
BAD_IDS = ["%C2%B3", "%C2%B2", "%D9%A1", "%EF%BC%91", "2147483648", "99999999999", "9" * 31, "0", "00", "-1",
           "1.0", "1e3"]
# The pages share one parser (render.path_id); fewer of them keep the test short.
PAGE_BAD_IDS = ["%C2%B3", "%D9%A1", "2147483648", "0"]
_PARAM = re.compile(r"\{\w+\}")


def _api_paths() -> list[tuple[str, str]]:
    return sorted({(r.method, r.path) for r in build_api().routes if "{" in r.path})


def _page_paths(app) -> list[tuple[str, str]]:
    out = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if "{" in path and not path.startswith(("/api/", "/agent/", "/static")) and route.method in ("GET", "POST"):
            out.add((route.method, path))
    return sorted(out)


async def test_api_path_ids_are_strict(client, admin):
    wrong = {}
    for method, path in _api_paths():
        for bad in BAD_IDS:
            url = _PARAM.sub(bad, path)
            r = await client.request(method, url, json={}, headers=admin)
            body = await r.json()
            if r.status != 404 or body["error"]["code"] != "not_found":
                wrong[(method, url)] = (r.status, body)
    assert wrong == {}


async def test_api_path_ids_at_the_edge_of_storage_reach_the_query(client, admin):
    """The largest id storage holds is looked up (and not found); one more is refused before."""
    for raw in ("2147483647", "0000000001"):
        r = await client.get(f"/api/v1/nodes/{raw}", headers=admin)
        assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"


async def test_page_path_ids_are_strict(client):
    await add_user(client, "admin@example.org", role="admin", username="admin")
    csrf = (await login(client, "admin@example.org"))["X-CSRF-Token"]
    paths = _page_paths(client.app)
    assert ("GET", "/nodes/{id}") in paths and ("POST", "/nodes/{id}/shares/{user_id}/revoke") in paths
    wrong = {}
    for method, path in paths:
        for bad in PAGE_BAD_IDS:
            url = _PARAM.sub(bad, path)
            r = await client.request(method, url, data={"csrf_token": csrf}, allow_redirects=False)
            if r.status != 404:
                wrong[(method, url)] = (r.status, (await r.text())[:200])
    assert wrong == {}


@pytest.mark.parametrize("bad", ["\u00b3", "\u0661", "2147483648", "99999999999999999"])
async def test_page_form_ids_are_strict(client, bad):
    """The forms that carry ids answer 422 naming the field, the page shown again."""
    await add_user(client, "admin@example.org", role="admin", username="admin")
    csrf = (await login(client, "admin@example.org"))["X-CSRF-Token"]
    r = await client.post("/port-maps", data={"csrf_token": csrf, "instance_id": bad, "instance_port": "80"},
                          allow_redirects=False)
    assert r.status == 422, await r.text()
    r = await client.post("/images/1/copy", data={"csrf_token": csrf, "node_id": bad}, allow_redirects=False)
    assert r.status == 404  # no image 1: what the copy's form says comes after
    r = await client.post("/users", data={"csrf_token": csrf, "email": "q@example.org", "password": "x" * 12,
                                          "password2": "x" * 12, "role": "user", "instance_limit": bad},
                          allow_redirects=False)
    assert r.status == 422, await r.text()


@pytest.mark.parametrize("bad", ["\u00b3", "\u0661"])
async def test_page_number_fields_take_ascii_digits_only(client, bad):
    """A quota or a port of '³' was a 500 (int() refuses it); '١' was read as 1."""
    await add_user(client, "admin@example.org", role="admin", username="admin")
    csrf = (await login(client, "admin@example.org"))["X-CSRF-Token"]
    r = await client.post("/users", data={"csrf_token": csrf, "email": "q@example.org", "password": "x" * 12,
                                          "password2": "x" * 12, "role": "user", "gpu_limit": bad},
                          allow_redirects=False)
    assert r.status == 422, await r.text()
