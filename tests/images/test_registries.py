"""Pulls from registries on loopback or private addresses are refused unless `registry_allow`
names them (issue 10, hole 13): the check runs in dmd, before the node's agent is asked."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from agent import protocol as p
from dmd import registries
from dmd.config import Config, ConfigError
from tests.conftest import add_user, make_token, share_node
from tests.nodes.helpers import FakeAgent

PRIVATE = ("127.0.0.1:5000/x", "localhost:5000/x", "10.0.0.5/x", "192.168.1.2:443/team/x:1", "169.254.169.254/x",
           "[::1]:5000/x", "100.64.0.1/x", "0.0.0.0:5000/x")
PUBLIC_LOOKING = "registry.example.com/team/x:1"


class Pulling(FakeAgent):
    """A node that records each pull it is asked for and answers with an image."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.pulls: list[str] = []
        self.answers[p.IMAGES_LIST] = lambda d: {"images": []}
        self.answers[p.IMAGE_PULL] = self._pull

    def _pull(self, data: dict[str, Any]) -> dict[str, Any]:
        self.pulls.append(data["ref"])
        return {"image": {"id": f"sha256:{secrets.token_hex(32)}", "repo_tags": [data["ref"]], "size": 1}}


@pytest.fixture
def public_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """registry.example.com resolves to a public address (no real DNS in tests); other names as usual."""
    real = registries.system_resolve

    async def resolve(host: str) -> list[str]:
        return ["93.184.216.34"] if host == "registry.example.com" else await real(host)

    monkeypatch.setattr(registries, "system_resolve", resolve)


async def node_of(client, admin) -> Pulling:  # type: ignore[no-untyped-def]
    created = await (await client.post("/api/v1/nodes", json={"name": "puller"}, headers=admin)).json()
    joined = await (await client.post("/api/v1/nodes/join", json={"token": created["join_token"]})).json()
    agent = Pulling(str(client.make_url("")), joined["credential"], joined["node_id"])
    await agent.connect({"hostname": "puller", "cpu_count": 2, "memory_total_mb": 4000, "gpus": []})
    return agent


async def dmd_with(make_client, **config: Any) -> tuple[Any, dict[str, str]]:  # type: ignore[no-untyped-def]
    """A dmd of its own (this folder's `client` allows the test registry) and an admin's token."""
    client = await make_client(**config)
    await add_user(client, "root@example.org", role="admin")
    return client, await make_token(client, "root@example.org")


async def test_private_registries_are_refused_before_the_agent_is_asked(make_client, public_dns):
    client, admin = await dmd_with(make_client)
    await add_user(client, "alice@example.org")
    alice = await make_token(client, "alice@example.org")
    agent = await node_of(client, admin)
    try:
        await share_node(client, agent.node_id, "alice", admin)
        for who in (admin, alice):  # administrators too: it is about where the node connects
            for ref in PRIVATE:
                for accept in ("application/json", "application/x-ndjson"):
                    r = await client.post(f"/api/v1/nodes/{agent.node_id}/images/pull",
                                          headers={**who, "Accept": accept}, json={"ref": ref})
                    body = await r.json()
                    assert r.status == 422, (ref, body)
                    if not ref.startswith("["):  # an IPv6 literal is not even a reference dmd takes
                        assert body["error"]["code"] == "registry_not_allowed", (ref, body)
                        assert body["error"]["field"] == "ref"
                        assert "registry_allow" in body["error"]["message"], body
        assert agent.pulls == []
        # A public registry (and Docker Hub) reach the node.
        for ref in (PUBLIC_LOOKING, "busybox:1"):
            r = await client.post(f"/api/v1/nodes/{agent.node_id}/images/pull", headers=alice, json={"ref": ref})
            assert r.status == 201, await r.text()
        assert agent.pulls == [PUBLIC_LOOKING, "busybox:1"]
    finally:
        await agent.close()


async def test_registry_allow_lets_an_admin_name_them(make_client, public_dns):
    client, admin = await dmd_with(make_client, registry_allow="127.0.0.1:5000, localhost 10.0.0.0/8")
    agent = await node_of(client, admin)
    try:
        for ref in ("127.0.0.1:5000/x", "localhost:5000/x", "10.0.0.5/x"):
            r = await client.post(f"/api/v1/nodes/{agent.node_id}/images/pull", headers=admin, json={"ref": ref})
            assert r.status == 201, (ref, await r.text())
        r = await client.post(f"/api/v1/nodes/{agent.node_id}/images/pull", headers=admin,
                              json={"ref": "127.0.0.1:5001/x"})  # another port of an allowed host:port
        assert r.status == 422 and (await r.json())["error"]["code"] == "registry_not_allowed"
        assert agent.pulls == ["127.0.0.1:5000/x:latest", "localhost:5000/x:latest", "10.0.0.5/x:latest"]
    finally:
        await agent.close()


async def test_the_check_itself(public_dns):
    none = registries.parse_allow("")
    for ref in (*PRIVATE, "[::ffff:127.0.0.1]:5000/x", "[fd00::1]/x", "0x7f.1:5000/x"):
        assert await registries.refusal(ref, none) is not None, ref
    for ref in (PUBLIC_LOOKING, "busybox", "library/busybox:1", "docker.io/library/busybox:1", "93.184.216.34/x"):
        assert await registries.refusal(ref, none) is None, ref

    async def mixed(host: str) -> list[str]:  # one private address among public ones is enough
        return ["93.184.216.34", "10.1.2.3"]

    assert await registries.refusal("mixed.example.com/x", none, mixed) is not None

    async def unknown(host: str) -> list[str]:
        raise OSError("no such host")

    why = await registries.refusal("nowhere.example/x", none, unknown)
    assert why is not None and "cannot resolve" in why
    allowed = registries.parse_allow("[::1]:5000 fd00::/8 nowhere.example")
    assert await registries.refusal("[::1]:5000/x", allowed) is None
    assert await registries.refusal("[fd00::1]/x", allowed) is None
    assert await registries.refusal("nowhere.example/x", allowed, unknown) is None
    with pytest.raises(ConfigError) as e:
        Config(data_dir="/tmp/x", registry_allow="10.0.0.0/33").validate()
    assert e.value.key == "registry_allow"
