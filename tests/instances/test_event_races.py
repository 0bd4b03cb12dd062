"""A container event that arrives before a user's action but is handled after it must not undo
the action: the "die" of a stop, handled after the next start, once turned the instance's
desired state back to stopped (seen as a rare timeout of test_lifecycle)."""

from __future__ import annotations

import asyncio

from agent import protocol as p
from dmd.core import DM
from tests.instances.conftest import instance, wait_status
from tests.instances.test_gpus_and_reconcile import gpu_node


async def test_a_stops_late_die_event_does_not_undo_the_next_start(client, admin, monkeypatch):
    node = await gpu_node(client, admin, "racy", [])
    inspects: list[int] = []

    def inspect(d):
        inspects.append(d["instance_id"])
        return {"container": node.containers.get(d["instance_id"])}

    node.answers[p.INSTANCE_INSPECT] = inspect
    reconciler = client.app[DM].reconciler
    # The hook: the event's handler says when it is in (and so, with nothing to await before
    # the node's lock, waiting for that lock) and when it is done.
    order: list[str] = []
    entered, handled = asyncio.Event(), asyncio.Event()
    real_handler = reconciler._container_event

    async def handler(node_id, data, received):
        entered.set()
        try:
            await real_handler(node_id, data, received)
        finally:
            order.append(f"event {data.action} handled")
            handled.set()

    monkeypatch.setattr(reconciler, "_container_event", handler)
    try:
        r = await client.post("/api/v1/instances", headers=admin,
                              json={"name": "web", "image": "cuda:12", "node_id": node.node_id, "ssh": False})
        iid = (await r.json())["id"]
        await wait_status(client, admin, iid, "running")
        assert (await client.post(f"/api/v1/instances/{iid}/stop", headers=admin)).status == 202
        await wait_status(client, admin, iid, "stopped")
        await reconciler.idle()

        # The stop's "die" arrives while the node is busy (this test holds its lock); the user
        # presses start meanwhile; the event is handled after the start.
        async with reconciler.lock(node.node_id):
            await node.send(p.EVENT, {"kind": "container", "instance_id": iid, "container_id": f"c{iid}",
                                      "action": "die", "exit_code": 0})
            async with asyncio.timeout(10):
                await entered.wait()
            assert not handled.is_set()  # held at the node's lock
            assert (await client.post(f"/api/v1/instances/{iid}/start", headers=admin)).status == 202
            order.append("start accepted")
        async with asyncio.timeout(10):
            await handled.wait()
        await reconciler.idle()
        assert order == ["start accepted", "event die handled"]  # the race happened, in this order
        assert inspects == []  # the stale event was recognised as such: not even inspected
        got = await instance(client, admin, iid)
        assert (got["desired"], got["status"]) == ("running", "running"), got

        # A container that dies by itself (no action after the event) is still recorded as stopped.
        entered.clear()
        handled.clear()
        node.containers[iid]["state"] = "exited"
        await node.send(p.EVENT, {"kind": "container", "instance_id": iid, "container_id": f"c{iid}",
                                  "action": "die", "exit_code": 1})
        async with asyncio.timeout(10):
            await handled.wait()
        assert inspects == [iid]
        got = await instance(client, admin, iid)
        assert (got["desired"], got["status"]) == ("stopped", "stopped"), got
    finally:
        await node.close()


async def test_a_die_event_received_after_the_start_but_handled_before_its_round_does_not_undo_it(
        client, admin, monkeypatch):
    """The same stop's "die", but it reaches dmd only after the user pressed start (an agent's
    events can lag), and is handled before the round that start asked for (the node's worker was
    busy): it still says nothing about what the user wants now. Seen as test_lifecycle timing out
    on PostgreSQL and MariaDB, instance stopped with "exited with code 143" after its start."""
    node = await gpu_node(client, admin, "lagging", [])
    inspects: list[int] = []

    def inspect(d):
        inspects.append(d["instance_id"])
        return {"container": node.containers.get(d["instance_id"])}

    node.answers[p.INSTANCE_INSPECT] = inspect
    reconciler = client.app[DM].reconciler
    entered, handled = asyncio.Event(), asyncio.Event()
    real_handler = reconciler._container_event

    async def handler(node_id, data, received):
        entered.set()
        try:
            await real_handler(node_id, data, received)
        finally:
            handled.set()

    monkeypatch.setattr(reconciler, "_container_event", handler)
    try:
        r = await client.post("/api/v1/instances", headers=admin,
                              json={"name": "web", "image": "cuda:12", "node_id": node.node_id, "ssh": False})
        iid = (await r.json())["id"]
        await wait_status(client, admin, iid, "running")
        assert (await client.post(f"/api/v1/instances/{iid}/stop", headers=admin)).status == 202
        await wait_status(client, admin, iid, "stopped")
        await reconciler.idle()

        # The start's round is held back (the hook keeps its kick) until the event is handled.
        kicks: list[int] = []
        real_kick = reconciler.kick
        monkeypatch.setattr(reconciler, "kick", kicks.append)
        async with reconciler.lock(node.node_id):
            assert (await client.post(f"/api/v1/instances/{iid}/start", headers=admin)).status == 202
            await node.send(p.EVENT, {"kind": "container", "instance_id": iid, "container_id": f"c{iid}",
                                      "action": "die", "exit_code": 143})
            async with asyncio.timeout(10):
                await entered.wait()
        async with asyncio.timeout(10):
            await handled.wait()
        assert kicks == [node.node_id]  # the round had not run when the event was handled
        assert inspects == []  # the event was recognised as older than the start's round
        monkeypatch.setattr(reconciler, "kick", real_kick)
        real_kick(node.node_id)
        await reconciler.idle()
        got = await instance(client, admin, iid)
        assert (got["desired"], got["status"]) == ("running", "running"), got
    finally:
        await node.close()
