from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import add_user, make_token
from tests.databases import every_database  # noqa: F401 (fixture: each test on all three databases)
from tests.nodes.helpers import FakeAgent


@pytest.fixture
async def alice(client, admin) -> dict[str, str]:
    await add_user(client, "alice@example.org")
    return await make_token(client, "alice@example.org")


@pytest.fixture
async def joined(client, admin):
    """join(name, headers=admin) -> (node_id, credential)."""

    async def _join(name: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        r = await client.post("/api/v1/nodes", json={"name": name}, headers=headers or admin)
        assert r.status == 201, await r.text()
        token = (await r.json())["join_token"]
        r = await client.post("/api/v1/nodes/join", json={"token": token, "hostname": name})
        assert r.status == 200, await r.text()
        body = await r.json()
        return body["node_id"], body["credential"]

    return _join


@pytest.fixture
async def agents(client):
    made: list[FakeAgent] = []

    def _make(node_id: int, credential: str) -> FakeAgent:
        a = FakeAgent(str(client.make_url("")), credential, node_id)
        made.append(a)
        return a

    yield _make
    for a in made:
        await a.close()


async def node(client, headers: dict[str, str], node_id: int) -> dict[str, Any]:
    r = await client.get(f"/api/v1/nodes/{node_id}", headers=headers)
    assert r.status == 200, await r.text()
    return await r.json()
