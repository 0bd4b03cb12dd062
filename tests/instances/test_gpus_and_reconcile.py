"""GPU placement and the ledger on fake-GPU nodes, and convergence after lost replies."""

import asyncio
import time

from agent import protocol as p
from agent.gpu import nvidia
from dmd.core import DM
from tests.agent.helpers import FIXTURES
from tests.conftest import add_user, make_token, share_node
from tests.instances.conftest import instance, wait_for, wait_status
from tests.nodes.helpers import FakeAgent, container, hello_v1


def a5000_gpus() -> list[dict]:
    text = (FIXTURES / "nvidia-smi-q-x.rtx-a5000x2.v13.no-supported-clocks.xml").read_text()
    return [g.to_dict() for g in nvidia.parse_xml(text)]


class GpuNode(FakeAgent):
    """A fake agent with GPUs whose 'runtime' records what dmd asks of it."""

    def __init__(self, *a, gpus, **kw):
        super().__init__(*a, **kw)
        self.gpus = gpus
        self.containers: dict[int, dict] = {}
        self.ensures: list[dict] = []
        self.answers[p.INSTANCE_ENSURE] = self._ensure
        self.answers[p.INSTANCE_REMOVE] = lambda d: {"removed": self.containers.pop(d["instance_id"], None) is not None}
        self.answers[p.INSTANCE_SYNC] = lambda d: {"removed": []}
        self.answers[p.IMAGES_LIST] = lambda d: {"images": [{"id": "sha256:1", "repo_tags": ["cuda:12"]}]}

    def _ensure(self, data):
        spec = data["spec"]
        self.ensures.append(spec)
        c = self.containers.setdefault(spec["instance_id"], container(spec["instance_id"], "created"))
        c["state"] = "running" if data["desired"] == "running" else "exited"
        return {"container": c}

    def facts(self):  # what the hello says of the host (subclasses add theirs)
        return {"hostname": "gpu", "cpu_count": 64, "memory_total_mb": 256000, "gpus": self.gpus}

    def hello_state(self):
        return {"images": [{"id": "sha256:1", "repo_tags": ["cuda:12"]}], "containers": []}

    async def start(self):
        ws = await self.open()
        await ws.send_str(p.message(p.HELLO, hello_v1(self.node_id, self.facts(), self.hello_state())).to_json())
        msg = await ws.receive(timeout=5)
        assert p.decode(msg.data).type == p.WELCOME
        self._reader = asyncio.create_task(self._read())


async def gpu_node(client, admin, name, gpus, node_cls=None, **kw) -> GpuNode:
    """A scripted node (GpuNode, or `node_cls`) joined, connected and holding its image."""
    created = await (await client.post("/api/v1/nodes", json={"name": name}, headers=admin)).json()
    joined = await (await client.post("/api/v1/nodes/join", json={"token": created["join_token"]})).json()
    node = (node_cls or GpuNode)(str(client.make_url("")), joined["credential"], joined["node_id"], gpus=gpus, **kw)
    await node.start()

    async def has_image():
        r = await client.get(f"/api/v1/nodes/{node.node_id}/images", headers=admin)
        return r.status == 200 and await r.json()

    await wait_for(has_image, "the GPU node's catalogue")
    return node


async def test_gpu_placement_and_ledger(client, admin):
    gpus = a5000_gpus()
    uuids = [g["uuid"] for g in gpus]
    small = await gpu_node(client, admin, "one-gpu", gpus[:1])
    big = await gpu_node(client, admin, "two-gpus", gpus)
    try:
        # Two GPUs: only the two-GPU node can take it.
        r = await client.post("/api/v1/instances", headers=admin, json={"name": "train", "image": "cuda:12", "gpus": 2})
        assert r.status == 201, await r.text()
        train = await r.json()
        assert train["node_id"] == big.node_id and sorted(train["gpus"]) == sorted(uuids)
        await wait_status(client, admin, train["id"], "running")
        spec = big.ensures[-1]
        assert sorted(g["uuid"] for g in spec["gpus"]) == sorted(uuids)
        assert all(g["vendor"] == "nvidia" for g in spec["gpus"])
        # Now a specific GPU that is taken: refused, saying what is free where.
        r = await client.post("/api/v1/instances", headers=admin,
                              json={"name": "again", "image": "cuda:12", "gpus": [uuids[1]], "node_id": big.node_id})
        assert r.status == 409
        msg = (await r.json())["error"]["message"]
        assert "0 of 2 GPUs free" in msg
        # One GPU by count lands on the one-GPU node.
        r = await client.post("/api/v1/instances", headers=admin, json={"name": "infer", "image": "cuda:12", "gpus": 1})
        assert (await r.json())["node_id"] == small.node_id
        # Nothing left anywhere: the message names each node's free GPUs.
        r = await client.post("/api/v1/instances", headers=admin, json={"name": "more", "image": "cuda:12", "gpus": 1})
        assert r.status == 409
        msg = (await r.json())["error"]["message"]
        assert "one-gpu" in msg and "two-gpus" in msg and "0 of 1 GPUs free" in msg
        # A uuid from another node.
        r = await client.post("/api/v1/instances", headers=admin,
                              json={"name": "x", "image": "cuda:12", "gpus": [uuids[1]], "node_id": small.node_id})
        assert r.status == 422 and "is not a GPU of node one-gpu" in (await r.json())["error"]["message"]
        # Deleting frees the GPUs.
        await client.delete(f"/api/v1/instances/{train['id']}", headers=admin)

        async def freed():
            return (await client.get(f"/api/v1/instances/{train['id']}", headers=admin)).status == 404

        await wait_for(freed, "the GPU instance deleted")
        cap = await (await client.get("/api/v1/capacity", headers=admin)).json()
        assert {c["name"]: len(c["gpus_free"]) for c in cap}["two-gpus"] == 2
        r = await client.post("/api/v1/instances", headers=admin,
                              json={"name": "pinned", "image": "cuda:12", "gpus": [uuids[1]]})
        assert r.status == 201 and (await r.json())["gpus"] == [uuids[1]]
    finally:
        await small.close()
        await big.close()


async def test_gpu_quota(client, admin):
    gpus = a5000_gpus()
    node = await gpu_node(client, admin, "gpus", gpus)
    try:
        await add_user(client, "g@example.org")
        user = await make_token(client, "g@example.org")
        me = await (await client.get("/api/v1/me", headers=user)).json()
        await client.patch(f"/api/v1/users/{me['id']}", json={"gpu_limit": 1}, headers=admin)
        await share_node(client, node.node_id, "g", admin)
        images = await (await client.get(f"/api/v1/nodes/{node.node_id}/images", headers=admin)).json()
        await client.patch(f"/api/v1/images/{images[0]['id']}", json={"public": True}, headers=admin)
        r = await client.post("/api/v1/instances", headers=user, json={"name": "a", "image": "cuda:12", "gpus": 2})
        assert r.status == 403 and "at most 1 GPU" in (await r.json())["error"]["message"]
        r = await client.post("/api/v1/instances", headers=user, json={"name": "a", "image": "cuda:12", "gpus": 1})
        assert r.status == 201
        r = await client.post("/api/v1/instances", headers=user, json={"name": "b", "image": "cuda:12", "gpus": 1})
        assert r.status == 403
    finally:
        await node.close()


def four_gpus() -> list[dict]:
    """Four devices with distinct uuids, modelled on the A5000 fixture."""
    base = a5000_gpus()[0]
    return [{**base, "index": i, "uuid": f"GPU-0000000{i}-race-race-race-000000000000"} for i in range(4)]


async def test_gpu_quota_holds_under_parallel_requests(client, admin):
    """Ten parallel one-GPU requests of a user who may hold two, on a node with four free: two
    are placed and eight refused for the quota (not for capacity), whatever the database."""
    node = await gpu_node(client, admin, "gpus4", four_gpus())
    try:
        await add_user(client, "g@example.org")
        user = await make_token(client, "g@example.org")
        me = await (await client.get("/api/v1/me", headers=user)).json()
        await client.patch(f"/api/v1/users/{me['id']}", json={"gpu_limit": 2}, headers=admin)
        await share_node(client, node.node_id, "g", admin)
        images = await (await client.get(f"/api/v1/nodes/{node.node_id}/images", headers=admin)).json()
        await client.patch(f"/api/v1/images/{images[0]['id']}", json={"public": True}, headers=admin)
        replies = await asyncio.gather(*(
            client.post("/api/v1/instances", headers=user, json={"name": f"g{i}", "image": "cuda:12", "gpus": 1})
            for i in range(10)))
        bodies = [await r.json() for r in replies]
        assert sorted(r.status for r in replies) == [201] * 2 + [403] * 8, bodies
        assert {b["error"]["code"] for b in bodies if "error" in b} == {"quota_exceeded"}
        held = [g for b in bodies if "gpus" in b for g in b["gpus"]]
        assert len(held) == len(set(held)) == 2
        cap = await (await client.get("/api/v1/capacity", headers=admin)).json()
        assert len(next(c for c in cap if c["name"] == "gpus4")["gpus_free"]) == 2
    finally:
        await node.close()


async def test_parallel_requests_never_share_a_gpu(client, admin):
    """Eight users ask for one GPU each at once on a two-GPU node (users of their own, so that
    nothing but the node's lock orders them): two get one device each, six are refused for
    capacity (409, not a failed insert into the ledger)."""
    gpus = a5000_gpus()
    node = await gpu_node(client, admin, "pair", gpus)
    try:
        images = await (await client.get(f"/api/v1/nodes/{node.node_id}/images", headers=admin)).json()
        await client.patch(f"/api/v1/images/{images[0]['id']}", json={"public": True}, headers=admin)
        users = []
        for i in range(8):
            await add_user(client, f"u{i}@example.org")
            await share_node(client, node.node_id, f"u{i}", admin)
            users.append(await make_token(client, f"u{i}@example.org"))
        replies = await asyncio.gather(*(
            client.post("/api/v1/instances", headers=h, json={"name": "p", "image": "cuda:12", "gpus": 1})
            for h in users))
        bodies = [await r.json() for r in replies]
        assert sorted(r.status for r in replies) == [201] * 2 + [409] * 6, bodies
        assert {b["error"]["code"] for b in bodies if "error" in b} == {"no_capacity"}
        held = sorted(g for b in bodies if "gpus" in b for g in b["gpus"])
        assert held == sorted(g["uuid"] for g in gpus)
    finally:
        await node.close()


async def test_cordoned_and_offline_nodes_are_skipped(client, admin):
    node = await gpu_node(client, admin, "n1", [])
    try:
        await client.post(f"/api/v1/nodes/{node.node_id}/cordon", headers=admin)
        r = await client.post("/api/v1/instances", headers=admin, json={"name": "a", "image": "cuda:12"})
        assert r.status == 409 and "n1: cordoned" in (await r.json())["error"]["message"]
        await client.post(f"/api/v1/nodes/{node.node_id}/uncordon", headers=admin)
    finally:
        await node.close()
    await offline(client, node.node_id)
    r = await client.post("/api/v1/instances", headers=admin, json={"name": "a", "image": "cuda:12"})
    assert r.status == 409 and "n1: offline" in (await r.json())["error"]["message"]


async def test_lost_reply_and_delete_while_offline(client, admin):
    """The agent runs the create but its reply never arrives; after reconnecting, dmd converges
    on the same container. A delete while the node is offline completes when it returns."""
    node = await gpu_node(client, admin, "flaky", [])
    node.answers[p.INSTANCE_ENSURE] = "silent"  # does the work below, never answers
    r = await client.post("/api/v1/instances", headers=admin, json={"name": "a", "image": "cuda:12"})
    iid = (await r.json())["id"]
    await wait_for(lambda: _status_in(client, admin, iid, ("creating",)), "creating")
    # The agent dies before answering; it had created the container.
    node.containers[iid] = container(iid)
    await node.close()
    await offline(client, node.node_id)
    assert (await instance(client, admin, iid))["status"] == "creating"
    back = GpuNode(node.base_url, node.credential, node.node_id, gpus=[])
    back.containers = node.containers
    await back.start()
    inst = await wait_status(client, admin, iid, "running")
    assert inst["container_id"] == f"c{iid}" and len(back.containers) == 1
    await back.close()
    await offline(client, node.node_id)
    r = await client.delete(f"/api/v1/instances/{iid}", headers=admin)
    assert r.status == 202
    await client.app[DM].reconciler.idle()
    assert (await instance(client, admin, iid))["status"] == "deleting"
    again = GpuNode(node.base_url, node.credential, node.node_id, gpus=[])
    again.containers = back.containers
    await again.start()
    started = time.time()

    async def gone():
        return (await client.get(f"/api/v1/instances/{iid}", headers=admin)).status == 404

    await wait_for(gone, "the delete to complete")
    assert again.containers == {} and time.time() - started < 10
    await again.close()


async def offline(client, node_id: int) -> None:
    """dmd has seen the node's link end."""
    hub = client.app[DM].hub
    await wait_for(lambda: not hub.is_online(node_id), f"node {node_id} offline", 10)


async def _status_in(client, admin, iid, statuses):
    return (await instance(client, admin, iid))["status"] in statuses


async def test_node_and_user_with_instances_cannot_be_deleted(client, admin):
    node = await gpu_node(client, admin, "busy", [])
    try:
        await add_user(client, "owner@example.org")
        owner = await make_token(client, "owner@example.org")
        me = await (await client.get("/api/v1/me", headers=owner)).json()
        await share_node(client, node.node_id, "owner", admin)
        images = await (await client.get(f"/api/v1/nodes/{node.node_id}/images", headers=admin)).json()
        await client.patch(f"/api/v1/images/{images[0]['id']}", json={"public": True}, headers=admin)
        r = await client.post("/api/v1/instances", headers=owner, json={"name": "a", "image": "cuda:12"})
        assert r.status == 201
        r = await client.delete(f"/api/v1/nodes/{node.node_id}", headers=admin)
        assert r.status == 409 and (await r.json())["error"]["code"] == "has_instances"
        r = await client.delete(f"/api/v1/users/{me['id']}", headers=admin)
        assert r.status == 409 and (await r.json())["error"]["code"] == "has_instances"
    finally:
        await node.close()
