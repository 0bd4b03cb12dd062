"""One instance cannot stall its node (issue 10, hole 5): env and command are bounded at create,
and an instance whose spec still cannot be sent (one recorded before the bounds) goes to `error`
alone while another user's instance on the same node starts and is deleted. The real dmd, a
scripted agent over the real protocol, all three databases."""

from __future__ import annotations

from agent.protocol import envelope
from dmd.core import DM
from dmd.queries import instances as svc
from dmd.queries import users as user_svc
from dmd.schemas.instances import COMMAND_MAX_BYTES, ENV_MAX_BYTES, ENV_MAX_ENTRIES
from tests.conftest import add_user, make_token
from tests.instances.conftest import wait_for, wait_status
from tests.instances.test_gpus_and_reconcile import gpu_node


async def test_env_and_command_are_bounded_at_create(client, admin):
    node = await gpu_node(client, admin, "bounds", [])
    try:
        base = {"name": "big", "image": "cuda:12", "node_id": node.node_id}
        env = {f"K{n}": "x" * 8000 for n in range(8)} | {"K8": "é" * 10}  # 64 KB: each value and the count allowed
        r = await client.post("/api/v1/instances", headers=admin, json={**base, "env": env})
        body = await r.json()
        assert (r.status, body["error"]["code"], body["error"]["field"]) == (422, "invalid", "env")
        assert body["error"]["message"] == (
            f"env: at most {ENV_MAX_BYTES} bytes in all (as JSON); these are 64150: put large settings in a "
            "file of the image or a volume instead")
        r = await client.post("/api/v1/instances", headers=admin,
                              json={**base, "env": {f"K{n}": "1" for n in range(ENV_MAX_ENTRIES + 1)}})
        body = await r.json()
        assert (r.status, body["error"]["field"]) == (422, "env")
        r = await client.post("/api/v1/instances", headers=admin, json={**base, "command": ["x" * 8000] * 9})
        body = await r.json()
        assert (r.status, body["error"]["code"], body["error"]["field"]) == (422, "invalid", "command")
        assert body["error"]["message"].startswith(f"command: at most {COMMAND_MAX_BYTES} bytes in all (as JSON)")
        # Just under the bound: taken, and sent.
        env = {f"K{n}": "x" * 7000 for n in range(8)} | {"K8": "é" * 10}
        r = await client.post("/api/v1/instances", headers=admin, json={**base, "env": env})
        assert r.status == 201, await r.text()
        await wait_status(client, admin, (await r.json())["id"], "running")
    finally:
        await node.close()


async def test_an_instance_too_large_to_send_does_not_stall_its_node(client, admin, monkeypatch):
    node = await gpu_node(client, admin, "shared-node", [])
    dm = client.app[DM]
    # The link's limit lowered, so that a spec every database can store (MariaDB's TEXT holds
    # 64 KiB) is more than a message may carry: as a 1.6 MB env was before the bounds.
    monkeypatch.setattr(envelope, "MAX_MESSAGE_BYTES", 32 * 1024)
    try:
        # Recorded before the bounds existed: its spec is more than one message may carry.
        async with dm.db.begin() as conn:
            boss = await user_svc.find(conn, 1)
            assert boss is not None
            huge = await svc.create(conn, boss, svc.CreateRequest(
                name="huge", image="cuda:12", node_id=node.node_id, cpus=None, memory_mb=None, gpu_count=0,
                gpu_uuids=None, env={f"K{n}": "x" * 8000 for n in range(5)}, command=None, privileged=False,
                host_network=False), set(dm.hub.conns))
        dm.reconciler.kick(node.node_id)
        stuck = await wait_status(client, admin, huge.id, "error")
        assert stuck["status_message"].startswith("dmd cannot send this instance to its node: instance.ensure message")

        # Another user's instance on the same node starts, and its delete finishes.
        await add_user(client, "other@example.org", role="admin")
        other = await make_token(client, "other@example.org")
        r = await client.post("/api/v1/instances", headers=other,
                              json={"name": "small", "image": "cuda:12", "node_id": node.node_id})
        assert r.status == 201, await r.text()
        small = (await r.json())["id"]
        await wait_status(client, other, small, "running")
        assert node.containers[small]["state"] == "running"
        r = await client.delete(f"/api/v1/instances/{small}", headers=other)
        assert r.status == 202, await r.text()

        async def gone():
            return (await client.get(f"/api/v1/instances/{small}", headers=other)).status == 404

        await wait_for(gone, "the other user's instance deleted")
        assert small not in node.containers
        assert dm.hub.is_online(node.node_id)  # the link itself was never at fault
        assert all(s["instance_id"] != huge.id for s in node.ensures)
    finally:
        await node.close()
