"""Port maps on a real node: added to and removed from running instances, kept across stop/start
and an agent restart, freed with the instance; 100 parallel requests; bad input."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from dmd.core import DM
from dmd.db.schema import port_maps
from tests.conftest import add_user, make_token
from tests.portmaps.conftest import answers, create, http_get, instance, refused, wait_for

pytestmark = __import__("pytest").mark.usefixtures("teardown_rules")


async def test_map_added_to_and_removed_from_a_running_instance(client, admin, local, docker):
    inst = await create(client, admin, local["id"], "live")
    # A second web server, started inside the running instance (as a user would in its terminal).
    c = docker.containers.container(inst["container_id"])
    ex = await c.exec(["/bin/busybox", "sh", "-c", "mkdir -p /w2 && echo second > /w2/index.html && "
                       "/bin/busybox httpd -p 9090 -h /w2"])
    await ex.start(detach=True)
    r = await client.post(f"/api/v1/instances/{inst['id']}/port-maps", json={"instance_port": 9090}, headers=admin)
    assert r.status == 201, await r.text()
    m = await r.json()
    assert (m["instance_id"], m["instance_port"], m["protocol"], m["state"]) == (inst["id"], 9090, "tcp", "active")
    assert 20000 <= m["host_port"] <= 29999 and m["address"].endswith(f":{m['host_port']}")
    # Forwarding when the reply comes: no restart, no recreate, no waiting.
    assert "second" in await http_get(m["host_port"])
    assert (await instance(client, admin, inst["id"]))["container_id"] == inst["container_id"]
    listed = (await (await client.get("/api/v1/port-maps", headers=admin)).json())["items"]
    assert [x["id"] for x in listed] == [m["id"]]

    r = await client.delete(f"/api/v1/port-maps/{m['id']}", headers=admin)
    assert r.status == 204
    assert await refused(m["host_port"])  # at once
    assert (await (await client.get("/api/v1/port-maps", headers=admin)).json())["items"] == []


async def test_maps_survive_stop_start_and_an_agent_restart(client, admin, local):
    inst = await create(client, admin, local["id"], "keep", port_maps=[{"instance_port": 8080}])
    (m,) = inst["port_maps"]
    port = m["host_port"]
    await answers(port, "hello-from-")

    r = await client.post(f"/api/v1/instances/{inst['id']}/stop", headers=admin)
    assert r.status == 202

    async def waiting() -> bool:
        got = await instance(client, admin, inst["id"])
        return got["status"] == "stopped" and got["port_maps"][0]["state"] == "waiting"

    await wait_for(waiting, "the map waiting for its stopped instance")
    assert await refused(port)
    r = await client.post(f"/api/v1/instances/{inst['id']}/start", headers=admin)
    assert r.status == 202
    await answers(port, "hello-from-", timeout=30)

    # The agent restarts (the local node's link is stopped and started again): an established
    # connection and the map itself carry on.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    holder = client.app[DM].local_node
    await holder.stop()
    assert "hello-from-" in await http_get(port)  # kernel rules stay while no agent runs
    await client.app[DM].local_node.start(str(client.make_url("")).rstrip("/"))

    async def online() -> bool:
        r = await client.get(f"/api/v1/nodes/{local['id']}", headers=admin)
        return (await r.json())["status"] == "online"

    await wait_for(online, "the local node back online")
    writer.write(b"GET / HTTP/1.0\r\n\r\n")
    await writer.drain()
    assert b"hello-from-" in await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await answers(port, "hello-from-")
    got = await instance(client, admin, inst["id"])
    assert [x["host_port"] for x in got["port_maps"]] == [port]


async def test_deleting_the_instance_frees_its_ports(client, admin, local):
    inst = await create(client, admin, local["id"], "gone", port_maps=[{"instance_port": 8080},
                                                                       {"instance_port": 53, "protocol": "udp"}])
    ports = {(x["protocol"], x["host_port"]) for x in inst["port_maps"]}
    assert len(ports) == 2
    await answers(next(p for proto, p in ports if proto == "tcp"), "hello-from-")
    assert (await client.delete(f"/api/v1/instances/{inst['id']}", headers=admin)).status == 202

    async def freed() -> bool:
        async with client.app[DM].db.read() as conn:
            return (await conn.execute(sa.select(sa.func.count()).select_from(port_maps))).scalar_one() == 0

    await wait_for(freed, "the ledger empty")
    assert await refused(next(p for proto, p in ports if proto == "tcp"))
    # The freed host port can be asked for again.
    other = await create(client, admin, local["id"], "again")
    tcp_port = next(p for proto, p in ports if proto == "tcp")
    r = await client.post(f"/api/v1/instances/{other['id']}/port-maps",
                          json={"instance_port": 8080, "host_port": tcp_port}, headers=admin)
    assert r.status == 201, await r.text()
    await answers(tcp_port, "hello-from-")


async def test_a_hundred_parallel_requests_get_a_hundred_ports(client, admin, local):
    inst = await create(client, admin, local["id"], "many")
    url = f"/api/v1/instances/{inst['id']}/port-maps"
    replies = await asyncio.gather(*(client.post(url, json={"instance_port": 10000 + i}, headers=admin)
                                     for i in range(100)))
    bodies = [await r.json() for r in replies]
    assert [r.status for r in replies] == [201] * 100, bodies
    ports = [b["host_port"] for b in bodies]
    assert len(set(ports)) == 100
    got = await instance(client, admin, inst["id"])
    assert sorted(x["host_port"] for x in got["port_maps"]) == sorted(ports)
    assert {x["state"] for x in got["port_maps"]} == {"active"}


async def test_bad_requests_change_nothing(client, admin, local):
    inst = await create(client, admin, local["id"], "bad", port_maps=[{"instance_port": 8080}])
    taken = inst["port_maps"][0]["host_port"]
    url = f"/api/v1/instances/{inst['id']}/port-maps"
    cases = [
        ({"instance_port": 0}, 422, "instance_port"),
        ({"instance_port": 65536}, 422, "instance_port"),
        ({"instance_port": 80, "protocol": "sctp"}, 422, "protocol"),
        ({"instance_port": 80, "host_port": 19999}, 422, "host_port"),
        ({"instance_port": 80, "host_port": 65536}, 422, "host_port"),
        ({"instance_port": "80"}, 422, "instance_port"),
        ({"instance_port": 80, "extra": 1}, 422, "extra"),
        ({"instance_port": 80, "host_port": taken}, 409, None),
        ({"instance_port": 8080}, 409, None),
    ]
    for body, status, field in cases:
        r = await client.post(url, json=body, headers=admin)
        err = (await r.json())["error"]
        assert r.status == status, (body, err)
        assert err["message"], body
        if field:
            assert field in (err.get("field") or "") + err["message"], (body, err)
    r = await client.post(url, data=b"garbage", headers={**admin, "Content-Type": "application/json"})
    assert r.status == 400
    # Someone else's instance: as if it did not exist.
    await add_user(client, "other@example.org")
    other = await make_token(client, "other@example.org")
    r = await client.post(url, json={"instance_port": 80}, headers=other)
    assert r.status == 404
    r = await client.delete(f"/api/v1/port-maps/{inst['port_maps'][0]['id']}", headers=other)
    assert r.status == 404
    assert (await (await client.get("/api/v1/port-maps", headers=other)).json())["items"] == []
    # Creating an instance with a taken host port creates nothing.
    r = await client.post("/api/v1/instances", json={
        "name": "clash", "image": inst["image"], "node_id": local["id"], "ssh": False,
        "port_maps": [{"instance_port": 80, "host_port": taken}]}, headers=admin)
    assert r.status == 409
    names = [i["name"] for i in (await (await client.get("/api/v1/instances", headers=admin)).json())["items"]]
    assert names == ["bad"]
    got = await instance(client, admin, inst["id"])
    assert [x["host_port"] for x in got["port_maps"]] == [taken]
    await answers(taken, "hello-from-")
