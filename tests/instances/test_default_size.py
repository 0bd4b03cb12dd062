"""Instances created without cpus/memory_mb get their node's default size (issue 10, hole 11):
recorded, counted, and applied by Docker as cgroup limits. Real dmd, real Docker Engine through
the local node, all three databases."""

from __future__ import annotations

from tests.conftest import add_user, make_token
from tests.instances.conftest import IMAGE, containers_of, wait_status

MIB = 1024 * 1024


async def limits(docker, client, iid: int) -> tuple[int, int, int]:
    [c] = await containers_of(docker, iid, client)
    host = (await docker.containers.get(c["Id"]))["HostConfig"]
    return host["NanoCpus"], host["Memory"], host["MemorySwap"]


async def test_an_unsized_instance_runs_with_the_default_limits(client, admin, local, docker):
    body = {"image": IMAGE, "command": ["sleep", "3600"], "ssh": False}
    r = await client.post("/api/v1/instances", headers=admin, json={"name": "plain", **body})
    assert r.status == 201, await r.text()
    plain = await r.json()
    assert (plain["cpus"], plain["memory_mb"]) == (1.0, 1024)
    await wait_status(client, admin, plain["id"], "running")
    assert await limits(docker, client, plain["id"]) == (1_000_000_000, 1024 * MIB, 1024 * MIB)

    # An administrator sets the node's defaults: the next unsized instance gets them.
    r = await client.put(f"/api/v1/nodes/{local['id']}/instance-defaults", headers=admin,
                         json={"cpus": 0.5, "memory_mb": 96})
    assert r.status == 200, await r.text()
    assert await r.json() == {"node_id": local["id"], "cpus": 0.5, "memory_mb": 96, "effective_cpus": 0.5,
                              "effective_memory_mb": 96}
    cap = [c for c in await (await client.get("/api/v1/capacity", headers=admin)).json() if c["node_id"] == local["id"]]
    assert (cap[0]["default_cpus"], cap[0]["default_memory_mb"]) == (0.5, 96)
    r = await client.post("/api/v1/instances", headers=admin, json={"name": "small", **body, "cpus": 0.25})
    assert r.status == 201, await r.text()
    small = await r.json()
    assert (small["cpus"], small["memory_mb"]) == (0.25, 96)  # what is given is kept
    await wait_status(client, admin, small["id"], "running")
    assert await limits(docker, client, small["id"]) == (250_000_000, 96 * MIB, 96 * MIB)

    # Back to DM's defaults.
    r = await client.put(f"/api/v1/nodes/{local['id']}/instance-defaults", headers=admin, json={})
    assert (r.status, (await r.json())["effective_memory_mb"]) == (200, 1024)


async def test_only_administrators_set_a_node_s_defaults(client, admin, local):
    await add_user(client, "u@example.org")
    user = await make_token(client, "u@example.org")
    url = f"/api/v1/nodes/{local['id']}/instance-defaults"
    r = await client.put(url, headers=user, json={"cpus": 64})
    assert (r.status, (await r.json())["error"]["code"]) == (403, "forbidden")
    r = await client.put("/api/v1/nodes/999999/instance-defaults", headers=admin, json={"cpus": 1})
    assert (r.status, (await r.json())["error"]["code"]) == (404, "not_found")
    r = await client.put(url, headers=admin, json={"cpus": 0})
    body = await r.json()
    assert (r.status, body["error"]["code"], body["error"]["field"]) == (422, "invalid", "cpus")
    r = await client.put(url, headers=admin, json={"memory_mb": 5})
    body = await r.json()
    assert (r.status, body["error"]["field"]) == (422, "memory_mb")
