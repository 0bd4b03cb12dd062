"""dmd refuses what a node's runtime cannot do (409 unsupported, naming the node and the
capability) before it asks the node's agent, and records nothing. A node whose facts carry no
capabilities (an agent from before them) is taken to do what Docker does."""

from __future__ import annotations

import dataclasses
from typing import Any

from agent import protocol as p
from agent.gpu.amd import parse_amd_smi_static_json
from agent.protocol.types import LEGACY_CAPABILITIES, Capabilities
from dmd.core import DM
from tests.agent.helpers import FIXTURES
from tests.instances.conftest import wait_status
from tests.instances.test_gpus_and_reconcile import GpuNode, a5000_gpus, gpu_node


class LimitedNode(GpuNode):
    """A scripted node whose facts say what its runtime can do (None: say nothing, as old agents)."""

    def __init__(self, *a: Any, capabilities: Capabilities | None, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.capabilities = capabilities
        self.answers[p.IMAGE_COMMIT] = lambda d: {"image": {"id": "sha256:2", "repo_tags": [f"{d['repository']}:1"]}}

    def facts(self) -> dict[str, Any]:
        facts = super().facts()
        facts["runtime"] = {"name": "lxc"}
        if self.capabilities is not None:
            facts["capabilities"] = self.capabilities.to_dict()
        return facts

    def asked(self, *types: str) -> list[str]:
        """The requests of these types dmd sent this node."""
        return [env.type for env in self.received if env.type in types]


async def limited(client: Any, admin: dict[str, str], name: str, capabilities: Capabilities | None,
                  gpus: list[dict[str, Any]] | None = None) -> LimitedNode:
    node = await gpu_node(client, admin, name, gpus or [], node_cls=LimitedNode, capabilities=capabilities)
    assert isinstance(node, LimitedNode)
    return node


def without(*names: str) -> Capabilities:
    """Docker's capabilities less these."""
    return dataclasses.replace(LEGACY_CAPABILITIES, **{n: () if n == "gpu_vendors" else False for n in names})


async def instances(client: Any, admin: dict[str, str]) -> list[dict[str, Any]]:
    r = await client.get("/api/v1/instances?limit=200", headers=admin)
    assert r.status == 200, await r.text()
    return list((await r.json())["items"])


async def refused(r: Any, *words: str) -> dict[str, Any]:
    assert r.status == 409, await r.text()
    error = (await r.json())["error"]
    assert error["code"] == "unsupported", error
    for word in words:
        assert word in error["message"], (word, error["message"])
    return dict(error)


async def test_facts_carry_the_capabilities(client, admin):
    node = await limited(client, admin, "lxc-box", without("commit"))
    try:
        r = await client.get(f"/api/v1/nodes/{node.node_id}", headers=admin)
        assert (await r.json())["facts"]["capabilities"] == without("commit").to_dict()
    finally:
        await node.close()


async def test_privileged_and_host_network_refused_where_the_runtime_cannot(client, admin):
    node = await limited(client, admin, "plain", without("privileged", "host_network"))
    try:
        r = await client.post("/api/v1/instances", headers=admin, json={
            "name": "p", "image": "cuda:12", "privileged": True, "node_id": node.node_id})
        await refused(r, "node plain", "privileged", "its runtime (lxc)")
        r = await client.post("/api/v1/instances", headers=admin, json={
            "name": "h", "image": "cuda:12", "host_network": True})  # placed automatically: still refused
        await refused(r, "node plain", "host_network")
        assert await instances(client, admin) == [] and node.ensures == []
        # What it can do, it does.
        r = await client.post("/api/v1/instances", headers=admin, json={"name": "ok", "image": "cuda:12"})
        assert r.status == 201, await r.text()
        await wait_status(client, admin, (await r.json())["id"], "running")
        assert [s["privileged"] for s in node.ensures] == [False]
    finally:
        await node.close()


async def test_placement_passes_over_a_node_that_cannot_to_an_old_agent(client, admin):
    """Another node that can (here one that reports nothing: Docker's capabilities) takes it;
    when no node can for a reason of capacity too, it is no_capacity as before."""
    plain = await limited(client, admin, "plain", without("privileged"))
    old = await limited(client, admin, "old", None)
    try:
        r = await client.post("/api/v1/instances", headers=admin, json={
            "name": "p", "image": "cuda:12", "privileged": True})
        assert r.status == 201, await r.text()
        assert (await r.json())["node_id"] == old.node_id
        r = await client.post("/api/v1/instances", headers=admin, json={
            "name": "q", "image": "cuda:12", "privileged": True, "cpus": 1000})
        assert r.status == 409
        error = (await r.json())["error"]
        assert error["code"] == "no_capacity", error
        assert "node plain cannot run privileged containers" in error["message"] and "old:" in error["message"]
        assert plain.ensures == []
    finally:
        await plain.close()
        await old.close()


async def test_gpus_of_a_vendor_the_runtime_cannot_pass(client, admin):
    amd = [g.to_dict() for g in parse_amd_smi_static_json((FIXTURES / "amd-smi-static-json.mi210.json").read_text())]
    nvidia = a5000_gpus()[:1]
    assert [g["vendor"] for g in amd + nvidia] == ["amd", "nvidia"]
    node = await limited(client, admin, "mixed", dataclasses.replace(LEGACY_CAPABILITIES, gpu_vendors=("nvidia",)),
                         gpus=amd + nvidia)  # the AMD GPU first: the one a count would take
    try:
        r = await client.post("/api/v1/instances", headers=admin, json={
            "name": "a", "image": "cuda:12", "gpus": [amd[0]["uuid"]]})
        await refused(r, "node mixed", "amd", "gpu_vendors")
        r = await client.post("/api/v1/instances", headers=admin, json={"name": "b", "image": "cuda:12", "gpus": 2})
        await refused(r, "node mixed", "amd", "gpu_vendors")
        assert await instances(client, admin) == []
        cap = await (await client.get("/api/v1/capacity", headers=admin)).json()
        assert [g["uuid"] for c in cap for g in c["gpus_free"]] == [nvidia[0]["uuid"]]
        # By count, the GPU it can pass.
        r = await client.post("/api/v1/instances", headers=admin, json={"name": "c", "image": "cuda:12", "gpus": 1})
        assert r.status == 201, await r.text()
        assert (await r.json())["gpus"] == [nvidia[0]["uuid"]]
        await wait_status(client, admin, (await r.json())["id"], "running")
        assert [[g["vendor"] for g in s["gpus"]] for s in node.ensures] == [["nvidia"]]
    finally:
        await node.close()


async def test_no_gpu_vendor_at_all(client, admin):
    node = await limited(client, admin, "cpu-only", without("gpu_vendors"), gpus=a5000_gpus())
    try:
        r = await client.post("/api/v1/instances", headers=admin, json={"name": "a", "image": "cuda:12", "gpus": 1})
        await refused(r, "node cpu-only", "nvidia", "gpu_vendors")
        # More GPUs than the node has: capacity, as on any node.
        r = await client.post("/api/v1/instances", headers=admin, json={"name": "a", "image": "cuda:12", "gpus": 3})
        assert r.status == 409 and (await r.json())["error"]["code"] == "no_capacity"
        assert await instances(client, admin) == [] and node.ensures == []
    finally:
        await node.close()


async def test_pull_and_import_refused(client, admin):
    node = await limited(client, admin, "no-images", without("pull", "image_import"))
    try:
        r = await client.post(f"/api/v1/nodes/{node.node_id}/images/pull", headers=admin, json={"ref": "busybox:1"})
        error = await refused(r, "node no-images", "pull")
        assert error["node_id"] == node.node_id and error["capability"] == "pull"
        r = await client.post(f"/api/v1/nodes/{node.node_id}/images/import", headers=admin,
                              params={"repository": "dm-test/x", "tag": "1"}, data=b"not read at all" * 1000)
        error = await refused(r, "node no-images", "image_import")
        assert error["capability"] == "image_import"
        assert node.asked(p.IMAGE_PULL, p.IMAGE_IMPORT) == []
        assert not list(client.app[DM].blobs.dir.iterdir())  # nothing of the upload stored
        r = await client.get(f"/api/v1/nodes/{node.node_id}/images", headers=admin)
        assert [i["ref"] for i in await r.json()] == ["cuda:12"]
    finally:
        await node.close()


async def test_copy_refused_by_either_end(client, admin):
    source = await limited(client, admin, "source", without("image_export"))
    target = await limited(client, admin, "target", without("image_import"))
    old = await limited(client, admin, "old", None)
    try:
        async def image_on(node: GpuNode) -> int:
            r = await client.get(f"/api/v1/nodes/{node.node_id}/images", headers=admin)
            return int((await r.json())[0]["id"])

        r = await client.post(f"/api/v1/images/{await image_on(source)}/copy", headers=admin,
                              json={"node_id": old.node_id})
        assert (await refused(r, "node source", "image_export"))["node_id"] == source.node_id
        r = await client.post(f"/api/v1/images/{await image_on(old)}/copy", headers=admin,
                              json={"node_id": target.node_id})
        assert (await refused(r, "node target", "image_import"))["node_id"] == target.node_id
        for node in (source, target, old):
            assert node.asked(p.IMAGE_EXPORT, p.IMAGE_IMPORT) == []
        assert not list(client.app[DM].blobs.dir.iterdir())
    finally:
        for node in (source, target, old):
            await node.close()


async def test_commit_refused(client, admin):
    node = await limited(client, admin, "no-commit", without("commit"))
    old = await limited(client, admin, "old", None)
    try:
        made = {}
        for n in (node, old):
            r = await client.post("/api/v1/instances", headers=admin, json={
                "name": f"on-{n.node_id}", "image": "cuda:12", "node_id": n.node_id})
            assert r.status == 201, await r.text()
            made[n.node_id] = (await r.json())["id"]
            await wait_status(client, admin, made[n.node_id], "running")
        r = await client.post(f"/api/v1/instances/{made[node.node_id]}/commit", headers=admin,
                              json={"repository": "dm-test/saved", "tag": "1"})
        await refused(r, "node no-commit", "commit")
        assert node.asked(p.IMAGE_COMMIT) == []
        # An old agent's node commits as before.
        r = await client.post(f"/api/v1/instances/{made[old.node_id]}/commit", headers=admin,
                              json={"repository": "dm-test/saved", "tag": "1"})
        assert r.status == 201, await r.text()
        assert old.asked(p.IMAGE_COMMIT) == [p.IMAGE_COMMIT]
    finally:
        await node.close()
        await old.close()
