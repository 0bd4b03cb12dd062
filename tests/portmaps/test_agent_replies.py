"""What dmd does with the agent's answers about ports, against a scripted agent: ports host
programs hold (from the hello and from each apply) are never handed out, a port that turns out
busy is replaced, and an agent that cannot forward says so on each map."""

from __future__ import annotations

from agent import protocol as p
from tests.instances.test_gpus_and_reconcile import GpuNode, gpu_node
from tests.portmaps.conftest import wait_for, wait_status


class PortsNode(GpuNode):
    """Answers ports.apply like an agent whose host has programs on `busy` ports."""

    def __init__(self, *a, busy: set[int], forwards: bool = True, **kw):
        super().__init__(*a, **kw)
        self.busy = busy
        self.applied: list[list[dict]] = []
        if forwards:
            self.answers[p.PORTS_APPLY] = self._apply
        self.answers[p.INSTANCE_ACCESS] = lambda d: {"ssh": {"state": "no_server", "user": None, "message": None,
                                                              "host_keys": []}}

    def _apply(self, data):
        maps = data["maps"]
        self.applied.append(maps)
        failed = [{"id": m["id"], "code": "port_busy", "message": "a program listens there"}
                  for m in maps if m["host_port"] in self.busy]
        return {"mode": "kernel", "active": [m["id"] for m in maps if m["host_port"] not in self.busy],
                "waiting": [], "failed": failed, "listening": {"tcp": sorted(self.busy), "udp": []}}

    def facts(self):  # a three-port pool
        return {**super().facts(), "ports": {"pools": {"tcp": [[20000, 20002]], "udp": []}, "mode": "kernel"}}

    def hello_state(self):  # the ports host programs hold, as the hello reports them
        return {**super().hello_state(), "listening": {"tcp": sorted(self.busy), "udp": []}}


async def ports_node(client, admin, **kw) -> PortsNode:
    return await gpu_node(client, admin, "ports", [], node_cls=PortsNode, **kw)


async def _instance(client, admin, node) -> dict:
    r = await client.post("/api/v1/instances", json={"name": "web", "image": "cuda:12", "node_id": node.node_id,
                                                     "ssh": False}, headers=admin)
    assert r.status == 201, await r.text()
    return await r.json()


async def test_busy_ports_are_skipped_and_replaced(client, admin):
    node = await ports_node(client, admin, busy={20000})
    try:
        inst = await _instance(client, admin, node)
        url = f"/api/v1/instances/{inst['id']}/port-maps"
        # Known busy from the hello: refused before anything is recorded.
        r = await client.post(url, json={"instance_port": 80, "host_port": 20000}, headers=admin)
        assert (r.status, (await r.json())["error"]["code"]) == (409, "port_busy")
        # A program takes 20001 after the hello: the agent's reply says so, and DM picks 20002.
        node.busy.add(20001)
        first = await (await client.post(url, json={"instance_port": 80}, headers=admin)).json()
        assert (first["host_port"], first["state"]) == (20002, "active"), first
        # The pool (20000-20002) is now exhausted: a clear 409, nothing recorded.
        r = await client.post(url, json={"instance_port": 81}, headers=admin)
        assert (r.status, (await r.json())["error"]["code"]) == (409, "pool_exhausted")
        maps = (await (await client.get("/api/v1/port-maps", headers=admin)).json())["items"]
        assert [(m["host_port"], m["instance_port"]) for m in maps] == [(20002, 80)]
        # Asking for a port the agent then reports busy: 409, and the ledger keeps nothing of it.
        await client.delete(f"/api/v1/port-maps/{first['id']}", headers=admin)
        node.busy.add(20002)
        r = await client.post(url, json={"instance_port": 80, "host_port": 20002}, headers=admin)
        assert (r.status, (await r.json())["error"]["code"]) == (409, "port_busy"), await r.text()
        assert (await (await client.get("/api/v1/port-maps", headers=admin)).json())["items"] == []
        assert node.applied[-1] == []  # and the agent was told to forward nothing
    finally:
        await node.close()


async def test_an_agent_that_cannot_forward_says_so(client, admin):
    node = await ports_node(client, admin, busy=set(), forwards=False)
    try:
        inst = await _instance(client, admin, node)
        r = await client.post(f"/api/v1/instances/{inst['id']}/port-maps", json={"instance_port": 80},
                              headers=admin)
        assert r.status == 201
        m = await r.json()
        assert m["state"] == "failed" and "update dmc" in m["message"]
        # Nor set up SSH: the instance says so.
        node.answers.pop(p.INSTANCE_ACCESS)
        r = await client.post("/api/v1/instances", json={"name": "ssh", "image": "cuda:12", "node_id": node.node_id},
                              headers=admin)
        iid = (await r.json())["id"]

        async def said():
            got = await (await client.get(f"/api/v1/instances/{iid}", headers=admin)).json()
            return got["ssh"]["state"] == "error" and "update dmc" in got["ssh"]["message"]

        await wait_for(said, "the SSH error on the instance")
    finally:
        await node.close()


async def test_a_container_that_stops_by_itself_refreshes_its_maps(client, admin):
    node = await ports_node(client, admin, busy=set())
    node.answers[p.INSTANCE_INSPECT] = lambda d: {"container": node.containers.get(d["instance_id"])}
    try:
        inst = await _instance(client, admin, node)
        await wait_status(client, admin, inst["id"], "running")
        r = await client.post(f"/api/v1/instances/{inst['id']}/port-maps", json={"instance_port": 80},
                              headers=admin)
        assert r.status == 201
        pushes = len(node.applied)
        node.containers[inst["id"]]["state"] = "exited"
        await node.send(p.EVENT, {"kind": "container", "instance_id": inst["id"], "container_id": "c",
                                  "action": "die", "exit_code": 1})

        async def pushed() -> bool:
            return len(node.applied) > pushes

        await wait_for(pushed, "the maps pushed again after the container stopped")
    finally:
        await node.close()
