"""The authorization matrix: every API route and every page POST, called by each of five callers
(anonymous, the owner of the objects, another user, a user the node is shared with, an admin),
answers exactly the status written down in tests/authz/table.py.

The routes come from the registry (API) and the application's router (pages), so a route added
without its row fails, and the failure says the row to add, with the statuses observed."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from dmd.api import build_api
from tests.authz import table
from tests.authz.world import CALLERS, IMAGE, World, _new_key, build, session_of
from tests.conftest import PASSWORD

pytestmark = pytest.mark.slow

_PARAM = re.compile(r"\{(\w+)\}")
Body = dict[str, Any] | Callable[[World], dict[str, Any]] | None

# --- what each route's path parameters name ------------------------------------------------

_COLLECTION = {"nodes": "node", "instances": "instance", "port-maps": "map", "ssh-keys": "key", "tokens": "token",
               "images": "image", "users": "user", "account": "token", "shares": "node"}


def _kind(path: str, param: str) -> str:
    if param == "user_id":
        return "shared_user"
    if param == "node_id":
        return "node"
    parts = [p for p in path.removeprefix("/api/v1").split("/") if p]
    if param != "id" or parts[0] not in _COLLECTION:
        raise AssertionError(f"{path}: say in _kind/_COLLECTION of tests/authz/test_matrix.py which of the world's "
                             f"objects {{{param}}} names (and make one in tests/authz/world.py if it has none)")
    return _COLLECTION[parts[0]]


# Cells that would destroy what later cells need get a fresh object of the owner's (and so do
# those that would widen what later callers see, such as making an image public).
FRESH_API = {
    ("DELETE", "/api/v1/users/{id}"), ("PATCH", "/api/v1/users/{id}"), ("DELETE", "/api/v1/tokens/{id}"),
    ("DELETE", "/api/v1/nodes/{id}"), ("POST", "/api/v1/nodes/{id}/cordon"), ("POST", "/api/v1/nodes/{id}/uncordon"),
    ("POST", "/api/v1/nodes/{id}/join-token"), ("POST", "/api/v1/nodes/{id}/rotate-credential"),
    ("DELETE", "/api/v1/nodes/{id}/shares/{user_id}"), ("DELETE", "/api/v1/instances/{id}"),
    ("DELETE", "/api/v1/port-maps/{id}"), ("DELETE", "/api/v1/images/{id}"), ("PATCH", "/api/v1/images/{id}"),
    ("DELETE", "/api/v1/ssh-keys/{id}"), ("DELETE", "/api/v1/shares/{id}"), ("POST", "/api/v1/nodes/{id}/public"),
    ("PUT", "/api/v1/nodes/{id}/instance-defaults"),
}
_FRESH_PAGE = re.compile(r"/(delete|revoke|leave|cordon|uncordon|rotate-credential|join-token|public|private|disable|"
                         r"enable|password)$|^/users/\{id\}$")


def _fresh(method: str, path: str) -> bool:
    if path.startswith("/api/"):
        return (method, path) in FRESH_API
    return "{" in path and bool(_FRESH_PAGE.search(path))


def _rand(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(3)}"


# --- a valid body for each route that takes one (so validation does not answer first) ------

API_BODIES: dict[tuple[str, str], Body] = {
    ("POST", "/api/v1/auth/login"): {"email": "owner@example.org", "password": PASSWORD},
    ("POST", "/api/v1/me/password"): {"current_password": "not-the-password", "new_password": "a new long password"},
    ("POST", "/api/v1/setup"): {"token": "nope", "email": "setup@example.org", "password": PASSWORD},
    ("POST", "/api/v1/users"): lambda w: {"email": f"{_rand('n')}@example.org", "password": PASSWORD},
    ("PATCH", "/api/v1/users/{id}"): {"disabled": True},
    ("POST", "/api/v1/tokens"): {"name": "t"},
    ("POST", "/api/v1/nodes"): lambda w: {"name": _rand("n-")},
    ("POST", "/api/v1/nodes/join"): {"token": "nope"},
    ("PATCH", "/api/v1/nodes/{id}"): {"name": "renamed"},
    ("POST", "/api/v1/nodes/{id}/shares"): {"username": "shared"},
    ("POST", "/api/v1/instances"): lambda w: {"name": _rand("i-"), "image": IMAGE, "node_id": w.ids["node"]},
    ("PATCH", "/api/v1/instances/{id}/ssh"): {"enabled": True},
    ("POST", "/api/v1/instances/{id}/port-maps"): lambda w: {"instance_port": 1000 + secrets.randbelow(50000)},
    ("POST", "/api/v1/nodes/{id}/images/pull"): {"ref": "busybox:latest"},
    ("PATCH", "/api/v1/images/{id}"): {"public": True},
    ("POST", "/api/v1/images/{id}/copy"): lambda w: {"node_id": w.ids["node"]},
    ("POST", "/api/v1/nodes/{id}/public"): {"public": True},
    ("PUT", "/api/v1/nodes/{id}/instance-defaults"): {"cpus": 0.5, "memory_mb": 256},
    ("POST", "/api/v1/instances/{id}/commit"): {"repository": "authz/commit", "tag": "v1"},
    ("POST", "/api/v1/ssh-keys"): lambda w: {"name": _rand("k-"), "public_key": _new_key()},
    ("PATCH", "/api/v1/ssh-keys/{id}"): {"name": "renamed"},
}

# Routes whose body is not JSON: (query string, raw body).
RAW: dict[tuple[str, str], tuple[str, bytes]] = {
    ("POST", "/api/v1/nodes/{id}/images/import"): ("?repository=authz/imported&tag=v1", b"not a tarball"),
}

PAGE_FORMS: dict[str, Body] = {
    "/account/password": {"current_password": "not-the-password", "new_password": "a new long password",
                          "new_password2": "a new long password"},
    "/account/tokens": {"name": "t"},
    "/images/import": lambda w: {"node_id": str(w.ids["node"]), "repository": "authz/imported", "tag": "v1"},
    "/images/pull": lambda w: {"node_id": str(w.ids["node"]), "ref": "busybox:latest"},
    "/images/{id}/copy": lambda w: {"node_id": str(w.ids["node"])},
    "/instances": lambda w: {"name": _rand("i-"), "image": IMAGE, "node": str(w.ids["node"])},
    "/instances/{id}/commit": {"repository": "authz/commit", "tag": "v1"},
    "/instances/{id}/port-maps": lambda w: {"instance_port": str(1000 + secrets.randbelow(50000))},
    "/instances/{id}/ssh": {"enabled": "on"},
    "/login": {"email": "owner@example.org", "password": PASSWORD},
    "/nodes": lambda w: {"name": _rand("n-")},
    "/nodes/{id}/rename": {"name": "renamed"},
    "/nodes/{id}/shares": {"username": "shared"},
    "/port-maps": lambda w: {"instance_id": str(w.ids["instance"]),
                             "instance_port": str(1000 + secrets.randbelow(50000))},
    "/setup": {"token": "nope", "email": "setup@example.org", "password": PASSWORD, "password2": PASSWORD},
    "/ssh-keys": lambda w: {"name": _rand("k-"), "public_key": _new_key()},
    "/ssh-keys/{id}/rename": {"name": "renamed"},
    "/users": lambda w: {"email": f"{_rand('n')}@example.org", "password": PASSWORD, "password2": PASSWORD,
                         "role": "user"},
    "/users/{id}": lambda w: {"email": f"{_rand('e')}@example.org", "username": _rand("e"), "role": "user"},
    "/users/{id}/password": {"password": PASSWORD, "password2": PASSWORD},
}
MULTIPART = {"/images/import"}
# Page POSTs that take their arguments in the query (the body is the file itself).
PAGE_QUERY: dict[str, str] = {"/instances/{id}/files": "?dir=/tmp&name=authz.txt"}
# Page POSTs after which the caller's cookie session is another (or gone): logged in again.
_NEW_SESSION = {"/login", "/logout", "/setup"}


def api_routes() -> list[tuple[str, str]]:
    return sorted((r.method, r.path) for r in build_api().routes)


def page_routes(app: Any) -> list[str]:
    out = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method == "POST" and not path.startswith(("/api/", "/agent/")):
            out.add(path)
    return sorted(out)


def _row(key: Any, got: tuple[int | str, ...]) -> str:
    return f"    {key!r}: {got!r},"


def _missing(rows: dict[Any, Any], present: list[Any], name: str) -> list[str]:
    out = [f"add to {name} in tests/authz/table.py (columns {', '.join(CALLERS)}):\n    {k!r}: (...),"
           for k in present if k not in rows]
    if out:
        out.append("(a route that takes a body needs a valid one in API_BODIES of tests/authz/test_matrix.py, or "
                   "its cells answer 422 before any check of who may call it)")
    out += [f"remove from {name} in tests/authz/table.py (the route is gone): {k!r}" for k in rows if k not in present]
    return out


async def _path(w: World, method: str, path: str, prefix: str = "") -> str:
    fresh = _fresh(method, path)
    url = path
    for param in _PARAM.findall(path):
        kind = _kind(path, param)
        if fresh and kind == "shared_user":
            await w.fresh("share")
            value = w.ids[kind]
        elif fresh:
            value = await w.fresh(kind)
        else:
            value = w.ids[kind]
        url = url.replace("{" + param + "}", str(value))
    return prefix + url


def _body(body: Body, w: World) -> dict[str, Any] | None:
    return body(w) if callable(body) else body


async def _api_cell(w: World, method: str, path: str, who: str) -> int:
    url = await _path(w, method, path)
    body = _body(API_BODIES.get((method, path)), w)
    caller = w.callers[who]
    if (method, path) in RAW:
        query, data = RAW[(method, path)]
        r = await w.bare().request(method, url + query, data=data, headers={
            **caller.headers, "Content-Type": "application/x-tar"})
    else:
        if method in ("POST", "PATCH") and body is None:
            body = {}
        r = await w.bare().request(method, url, json=body, headers=caller.headers)
    status = r.status
    r.release()
    return status


async def _page_cell(w: World, path: str, who: str) -> int | str:
    url = await _path(w, "POST", path) + PAGE_QUERY.get(path, "")
    fields = {k: str(v) for k, v in (_body(PAGE_FORMS.get(path), w) or {}).items()}
    caller = w.callers[who]
    assert caller.session is not None
    form = aiohttp.FormData({"csrf_token": caller.csrf, **fields})
    if path in MULTIPART:  # the file comes last, after the fields it is checked against
        form.add_field("file", b"not a tarball", filename="image.tar", content_type="application/x-tar")
    r = await caller.session.post(url, data=form, allow_redirects=False)
    status: int | str = r.status
    if r.status == 303 and r.headers.get("Location", "").startswith("/login"):
        status = "login"
    r.release()
    if path in _NEW_SESSION:
        await caller.session.close()
        caller.session, caller.csrf = await session_of(w, who)
    return status


def test_every_route_has_its_row():
    """Fast, without a world: the table names exactly the registry's API routes. (The page
    routes are checked by the matrix itself, from the application's router.)"""
    problems = _missing(table.API, api_routes(), "API")
    assert not problems, "\n".join(problems) + "\n(run tests/authz/test_matrix.py to see the statuses observed)"


async def test_api_matrix(client):
    w = await build(client)
    try:
        wrong, missing = [], []
        for method, path in api_routes():
            got = tuple([await _api_cell(w, method, path, who) for who in CALLERS])
            want = table.API.get((method, path))
            if want is None:
                missing.append(_row((method, path), got))
            elif got != want:
                wrong.append(f"{method} {path}: want {dict(zip(CALLERS, want, strict=True))}, "
                             f"got {dict(zip(CALLERS, got, strict=True))}")
    finally:
        await w.close()
    assert not missing and not wrong, (
        ("add these rows to API in tests/authz/table.py (statuses as observed: check each is right; a route "
         "that takes a body needs a valid one in API_BODIES here first):\n"
         + "\n".join(missing) + "\n" if missing else "") + "\n".join(wrong))


async def test_page_matrix(client):
    w = await build(client)
    try:
        routes = page_routes(client.app)
        wrong, missing = [], []
        for path in routes:
            got = tuple([await _page_cell(w, path, who) for who in CALLERS])
            want = table.PAGES.get(path)
            if want is None:
                missing.append(_row(path, got))
            elif got != want:
                wrong.append(f"POST {path}: want {dict(zip(CALLERS, want, strict=True))}, "
                             f"got {dict(zip(CALLERS, got, strict=True))}")
        gone = [p for p in table.PAGES if p not in routes]
    finally:
        await w.close()
    assert not missing and not wrong and not gone, (
        ("add these rows to PAGES in tests/authz/table.py (statuses as observed: check each is right):\n"
         + "\n".join(missing) + "\n" if missing else "") + "\n".join(wrong)
        + "".join(f"\nremove {p!r} from PAGES: the route is gone" for p in gone))
