"""Property-based requests against the API, generated from its own OpenAPI document
(schemathesis), as a plain user and as an administrator, against dmd as a real process.

Every reply must be below 500, have a status the document lists for its operation and, where
the document gives a schema for that status, match it; dmd's log must hold no traceback.
Bounded (a few examples per operation, derandomized: the same requests every run) so that it
stays well under a minute; DM_FUZZ_EXAMPLES raises the count for a longer hunt."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import PASSWORD
from tests.databases import MYSQL_ADMIN_URL, PG_ADMIN_URL, create_database
from tests.dmd_process import DmdProcess, create_user, running_dmd

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("DM_FUZZ_EXAMPLES", "6"))
CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHQEbZ7ph/DGNFm8urRF1lcZI5qsN/GYOEf/Vn08IOM/ fuzz"
EXTREMES = [2**31, 2**63, 10**31, -(2**63) - 1]
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
_PARAM = re.compile(r"\{(\w+)\}")


class World:
    """dmd with an admin, a plain user, another user, and a few objects of theirs whose ids the
    fuzzer uses as well as random ones (random ids alone almost never reach past the lookup)."""

    def __init__(self, dmd: DmdProcess) -> None:
        self.dmd = dmd
        self.api = f"{dmd.base}/api/v1"
        self.headers: dict[str, dict[str, str]] = {}
        self.ids: dict[str, int] = {}

    def token(self, email: str) -> dict[str, str]:
        with requests.Session() as s:
            r = s.post(f"{self.api}/auth/login", json={"email": email, "password": PASSWORD}, timeout=30)
            assert r.status_code == 200, r.text
            csrf = r.json()["csrf_token"]
            r = s.post(f"{self.api}/tokens", json={"name": "fuzz"}, headers={"X-CSRF-Token": csrf}, timeout=30)
            assert r.status_code == 201, r.text
            return {"Authorization": f"Bearer {r.json()['token']}"}

    def post(self, who: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = requests.post(f"{self.api}{path}", json=body, headers=self.headers[who], timeout=30)
        assert r.status_code in (200, 201), (path, r.status_code, r.text)
        got: dict[str, Any] = r.json()
        return got

    def fresh(self, who: str) -> dict[str, str]:
        """The caller's headers, with a new token when an operation revoked theirs (a revoked
        token's 401s are documented answers, but they would test nothing further)."""
        r = requests.get(f"{self.api}/me", headers=self.headers[who], timeout=30)
        if r.status_code == 401:
            self.headers[who] = self.token(f"{who}@example.org")
        return self.headers[who]


@pytest.fixture(scope="module")
def database() -> Iterator[dict[str, str]]:
    """SQLite; DM_FUZZ_DATABASE=postgresql or mysql hunts on a fresh database of that server."""
    backend = os.environ.get("DM_FUZZ_DATABASE", "sqlite")
    if backend == "sqlite":
        yield {}
        return
    loop = asyncio.new_event_loop()  # one loop: the drop uses the connection the create opened
    try:
        url, drop = loop.run_until_complete(
            create_database(PG_ADMIN_URL if backend == "postgresql" else MYSQL_ADMIN_URL))
        try:
            yield {"DMD_DATABASE": url}
        finally:
            loop.run_until_complete(drop())
    finally:
        loop.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, database: dict[str, str]) -> Iterator[World]:
    data = Path(tmp_path_factory.mktemp("fuzz"))
    create_user(data, "admin@example.org", admin=True, env=database)
    create_user(data, "user@example.org", env=database)
    create_user(data, "other@example.org", env=database)
    with running_dmd(data, env=database) as dmd:
        w = World(dmd)
        for who in ("admin", "user", "other"):
            w.headers[who] = w.token(f"{who}@example.org")
        me = requests.get(f"{w.api}/me", headers=w.headers["other"], timeout=30).json()
        w.ids["other"] = me["id"]
        user_id = requests.get(f"{w.api}/me", headers=w.headers["user"], timeout=30).json()["id"]
        r = requests.patch(f"{w.api}/users/{user_id}", json={"node_limit": 2}, headers=w.headers["admin"], timeout=30)
        assert r.status_code == 200, r.text  # plain users create nodes only when an admin allows it
        w.ids["node"] = w.post("user", "/nodes", {"name": "fuzz-node"})["id"]
        w.ids["token"] = w.post("user", "/tokens", {"name": "spare"})["id"]
        w.ids["key"] = w.post("user", "/ssh-keys", {"name": "k", "public_key": KEY})["id"]
        yield w
    log = dmd.log()
    assert "Traceback" not in log and " ERROR " not in log, log


def _real_ids(w: World, path: str) -> dict[str, int]:
    """The world's ids for a path's parameters ({id} by the collection it names)."""
    collection = path.removeprefix("/api/v1/").split("/", 1)[0]
    by_collection = {"nodes": "node", "users": "other", "tokens": "token", "ssh-keys": "key"}
    out = {}
    for name in _PARAM.findall(path):
        key = "other" if name == "user_id" else by_collection.get(collection)
        if key is None or key not in w.ids:
            return {}
        out[name] = w.ids[key]
    return out


def _operations(w: World) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{w.api}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def _is_integer(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "integer" or any(_is_integer(s) for s in schema.get("anyOf", []))


def _integer_fields(doc: dict[str, Any], method: str, path: str) -> tuple[list[str], list[str]]:
    """The integer query parameters and top-level body fields of an operation."""
    op = doc["paths"][path][method.lower()]
    query = [p["name"] for p in op.get("parameters", []) if p["in"] == "query" and _is_integer(p["schema"])]
    body: list[str] = []
    ref = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
    if ref:
        model = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
        body = [name for name, s in model.get("properties", {}).items() if _is_integer(s)]
    return query, body


def _with_extremes(strategy: Any, query: list[str], body: list[str]) -> Any:
    """Cases with one integer field set beyond what any column holds (hypothesis rarely draws
    such numbers itself, and a field the document leaves unbounded would let them through)."""
    fields = [("query", n) for n in query] + [("body", n) for n in body]

    @st.composite
    def build(draw: st.DrawFn) -> Any:
        case = draw(strategy)
        where, name = draw(st.sampled_from(fields))
        value = draw(st.sampled_from(EXTREMES))
        if where == "query":
            case.query = {**(case.query or {}), name: value}
        elif isinstance(case.body, dict):
            case.body = {**case.body, name: value}
        return case

    return build()


def _run(w: World, strategy: Any, headers: dict[str, str]) -> None:
    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(base_url=w.dmd.base, headers=headers, timeout=30)
        assert response.status_code < 500, (case.method, case.formatted_path, case.query, case.body,
                                            response.status_code, response.text[:500])
        case.validate_response(response, checks=CHECKS)

    run()


def _fuzz(w: World, who: str) -> None:
    failures: list[str] = []
    doc = requests.get(f"{w.api}/openapi.json", timeout=30).json()
    for op in _operations(w):
        headers = w.fresh(who)  # a new token when an operation before revoked the caller's
        # Valid requests, and requests that break the document (wrong types, numbers out of
        # range, unknown fields): those must be refused with a documented 4xx.
        strategies = [op.as_strategy(generation_mode=mode) for mode in MODES]
        fixed = _real_ids(w, op.path)
        if fixed:
            strategies += [op.as_strategy(generation_mode=mode, path_parameters=fixed) for mode in MODES]
        query, body = _integer_fields(doc, op.method, op.path)
        if query or body:
            strategies.append(_with_extremes(op.as_strategy(), query, body))
        try:
            _run(w, st.one_of(strategies), headers)
        except Exception as e:  # every operation is tried; all failures are reported at once
            failures.append(f"{op.method.upper()} {op.path}: {str(e)[:2000]}")
    assert not failures, "\n\n".join(failures)
    log = w.dmd.log()
    assert "Traceback" not in log and " ERROR " not in log, log


def test_fuzz_as_a_plain_user(world: World) -> None:
    _fuzz(world, "user")


def test_fuzz_as_an_admin(world: World) -> None:
    _fuzz(world, "admin")
