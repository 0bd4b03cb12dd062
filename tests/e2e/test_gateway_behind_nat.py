"""SSH through dmd's gateway to a node behind NAT (tests/netns.py: its agent and dockerd can dial
out and cannot be dialed): `ssh` with the config from the API reaches a busybox instance there,
served by the node's agent over the link the agent opened, and `-L` reaches the instance's own
port. Needs the agent's SSH server (i11-ssh-agent)."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from dmd.core import DM
from tests.access.conftest import make_key
from tests.conftest import add_user, make_token
from tests.e2e.procs import Agent
from tests.instances.conftest import wait_status
from tests.runtime.images import BUSYBOX_REF
from tests.ssh.conftest import run, through_tunnel
from tests.waiting import wait_for

pytestmark = pytest.mark.slow

WEB = ["/bin/busybox", "sh", "-c", "mkdir -p /www && echo ssh-behind-nat > /www/index.html && "
       "exec /bin/busybox httpd -f -p 127.0.0.1:8080 -h /www"]


async def test_ssh_and_a_tunnel_through_the_gateway_to_a_node_behind_nat(nat, make_client, tmp_path):
    client = await make_client(host=nat.host_ip, ssh_listen="127.0.0.1:0")
    dm = client.app[DM]
    await add_user(client, "admin@example.org", role="admin")
    headers = await make_token(client, "admin@example.org")
    key = await asyncio.to_thread(make_key, tmp_path, "nat-user")
    r = await client.post("/api/v1/ssh-keys", json={"name": "k", "public_key": key.public}, headers=headers)
    assert r.status == 201, await r.text()
    r = await client.post("/api/v1/nodes", json={"name": "natted"}, headers=headers)
    assert r.status == 201, await r.text()
    token = (await r.json())["join_token"]
    agent = Agent(nat.inside([sys.executable, "-m", "agent"]), tmp_path / "nat-node.json")
    joined = await asyncio.to_thread(agent.join, f"http://{nat.host_ip}:{client.port}", token)
    assert joined.returncode == 0, joined.stderr
    config = json.loads((tmp_path / "nat-node.json").read_text())
    config["docker_host"] = nat.docker_host  # the namespace's own dockerd
    (tmp_path / "nat-node.json").write_text(json.dumps(config))
    await asyncio.to_thread(agent.start)
    try:
        node_id = agent.node_id
        await wait_for(lambda: dm.hub.is_online(node_id), "the node behind NAT online", 60)
        r = await client.post("/api/v1/instances", json={"name": "natbox", "image": BUSYBOX_REF, "node_id": node_id,
                                                         "command": WEB}, headers=headers)
        assert r.status == 201, await r.text()
        iid = int((await r.json())["id"])
        await wait_status(client, headers, iid, "running", 90)

        async def no_server() -> bool:
            got = await (await client.get(f"/api/v1/instances/{iid}", headers=headers)).json()
            return bool(got["ssh"]["state"] == "no_server")

        await wait_for(no_server, "the agent found no sshd", 60)
        known = tmp_path / "known_hosts"
        r = await client.get(f"/api/v1/ssh/config?known_hosts_path={known}", headers=headers)
        body = await r.json()
        known.write_text(body["known_hosts"])
        cfg = tmp_path / "ssh_config"
        cfg.write_text(f"IdentityFile {key.path}\nIdentitiesOnly yes\nBatchMode yes\nStrictHostKeyChecking yes\n"
                       f"ConnectTimeout 10\n\n{body['config']}")

        got = await run(["ssh", "-F", str(cfg), "natbox", "echo dm-$((6*7)); exit 3"], timeout=60)
        assert got.returncode == 3 and got.stdout.strip() == "dm-42", got

        assert await through_tunnel(cfg, "natbox", 8080) == "ssh-behind-nat\n"
        await client.delete(f"/api/v1/instances/{iid}", headers=headers)
        await dm.reconciler.idle()
    finally:
        await asyncio.to_thread(agent.stop)
