"""--local-node: an agent inside dmd's own process, against the local Docker Engine."""


from pathlib import Path

from agent.access import hostkey
from agent.runtime.docker import CAPABILITIES as DOCKER_CAPABILITIES
from dmd.core import DM
from dmd.local_node import LOCAL_NODE_HOST_KEY
from tests.nodes.conftest import node
from tests.waiting import wait_for


async def _wait_online(client, headers, node_id, timeout=20):
    async def online():
        n = await node(client, headers, node_id)
        return n if n["status"] == "online" and n["facts"] else None

    return await wait_for(online, "the local node online with its facts", timeout)


async def test_local_node_comes_online_with_docker_facts(client, admin):
    base = str(client.make_url("")).rstrip("/")
    await client.app[DM].local_node.start(base)
    nid = client.app[DM].local_node.node_id
    n = await _wait_online(client, admin, nid)
    assert n["local"] is True and n["owner_id"] is None
    facts = n["facts"]
    assert facts["cpu_count"] >= 1 and facts["memory_total_mb"] > 0
    runtime = facts.get("runtime")
    assert runtime and runtime["name"] == "docker" and runtime["version"], facts.get("runtime_error")
    assert facts["capabilities"] == DOCKER_CAPABILITIES.to_dict()
    # The node's SSH host key (the agent's SSH server) is kept in dmd's data folder.
    key_file = Path(client.app[DM].config.data_dir) / LOCAL_NODE_HOST_KEY
    assert facts["ssh_host_key"] == hostkey.public_line(hostkey.load_or_create(str(key_file)))
    r = await client.post(f"/api/v1/nodes/{nid}/ping", headers=admin)
    assert r.status == 200
    # A restart of dmd reuses the same node with a fresh credential.
    await client.app[DM].local_node.stop()
    await client.app[DM].local_node.start(base)
    assert client.app[DM].local_node.node_id == nid
    again = await _wait_online(client, admin, nid)
    assert again["facts"]["ssh_host_key"] == facts["ssh_host_key"]  # the same key after a restart
    nodes = (await (await client.get("/api/v1/nodes", headers=admin)).json())["items"]
    assert [x["id"] for x in nodes if x["local"]] == [nid]
