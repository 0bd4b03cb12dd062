"""A container event that arrives before a user's action but is handled after it must not undo
the action: the "die" of a stop, handled after the next start, once turned the instance's
desired state back to stopped (seen as a rare timeout of test_lifecycle)."""

from __future__ import annotations

import asyncio

from agent import protocol as p
from dmd.core import DM
from tests.instances.conftest import instance, wait_status
from tests.instances.test_gpus_and_reconcile import gpu_node


async def test_a_stops_late_die_event_does_not_undo_the_next_start(client, admin):
    node = await gpu_node(client, admin, "racy", [])
    node.answers[p.INSTANCE_INSPECT] = lambda d: {"container": node.containers.get(d["instance_id"])}
    reconciler = client.app[DM].reconciler
    try:
        r = await client.post("/api/v1/instances", headers=admin,
                              json={"name": "web", "image": "cuda:12", "node_id": node.node_id, "ssh": False})
        iid = (await r.json())["id"]
        await wait_status(client, admin, iid, "running")
        assert (await client.post(f"/api/v1/instances/{iid}/stop", headers=admin)).status == 202
        await wait_status(client, admin, iid, "stopped")
        await reconciler.idle()

        # The stop's "die" arrives while the node is busy; the user presses start meanwhile.
        async with reconciler.lock(node.node_id):
            await node.send(p.EVENT, {"kind": "container", "instance_id": iid, "container_id": f"c{iid}",
                                      "action": "die", "exit_code": 0})
            await asyncio.sleep(0.2)  # the event is in, waiting for the node's lock
            assert (await client.post(f"/api/v1/instances/{iid}/start", headers=admin)).status == 202
        await reconciler.idle()
        await asyncio.sleep(0.2)
        await reconciler.idle()
        got = await instance(client, admin, iid)
        assert (got["desired"], got["status"]) == ("running", "running"), got

        # A container that dies by itself (no action after the event) is still recorded as stopped.
        node.containers[iid]["state"] = "exited"
        await node.send(p.EVENT, {"kind": "container", "instance_id": iid, "container_id": f"c{iid}",
                                  "action": "die", "exit_code": 1})
        got = await wait_status(client, admin, iid, "stopped")
        assert got["desired"] == "stopped"
    finally:
        await node.close()
