"""The same port maps through dmd, with the local node forwarding by its user-space proxy
(`local_port_forwarding = proxy`, as on a node where iptables cannot be used) and a pool of
its own from dmd's config."""

from __future__ import annotations

import socket

import pytest

from tests.conftest import login
from tests.portmaps.conftest import answers, create, instance, refused

POOL = (23500, 23599)


@pytest.fixture
async def client(make_client):
    return await make_client(local_port_forwarding="proxy", local_port_pool=f"{POOL[0]}-{POOL[1]}")


def host_address() -> str:
    """This host's own non-loopback address (the route a packet to the outside would take)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.123", 9))  # no packet is sent: this only picks the source address
        return str(s.getsockname()[0])


async def test_maps_through_the_proxy(client, admin, local):
    node = await (await client.get(f"/api/v1/nodes/{local['id']}", headers=admin)).json()
    assert node["facts"]["ports"] == {"pools": {"tcp": [list(POOL)], "udp": [list(POOL)]}, "mode": "proxy"}
    await login(client, "admin@example.org")
    page = await (await client.get(f"/nodes/{local['id']}")).text()
    assert "Port pools" in page and f"{POOL[0]}-{POOL[1]}" in page and "forwarded by the agent&#39;s proxy" in page
    inst = await create(client, admin, local["id"], "proxied", port_maps=[{"instance_port": 8080}])
    (m,) = inst["port_maps"]
    assert POOL[0] <= m["host_port"] <= POOL[1]
    await answers(m["host_port"], "hello-from-")  # (the map is applied at the end of the round)
    await answers(m["host_port"], "hello-from-", host=host_address())

    r = await client.post(f"/api/v1/instances/{inst['id']}/stop", headers=admin)
    assert r.status == 202

    async def waiting() -> bool:
        return (await instance(client, admin, inst["id"]))["port_maps"][0]["state"] == "waiting"

    from tests.portmaps.conftest import wait_for

    await wait_for(waiting, "the map waiting")
    assert await refused(m["host_port"])
    assert (await client.post(f"/api/v1/instances/{inst['id']}/start", headers=admin)).status == 202
    await answers(m["host_port"], "hello-from-", timeout=30)

    assert (await client.delete(f"/api/v1/port-maps/{m['id']}", headers=admin)).status == 204
    assert await refused(m["host_port"])
