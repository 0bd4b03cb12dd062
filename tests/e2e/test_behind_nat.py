"""A node behind NAT: its agent process and its dockerd in a network namespace that can dial out
and cannot be dialed (tests/netns.py). Nothing of the node is reachable from dmd's side, yet a
terminal (the browser terminal's WebSocket) and a TCP connection into its instance work, over
the link the agent opened. (SSH and -L through the gateway: test_gateway_behind_nat.py.)"""

from __future__ import annotations

import asyncio
import json
import socket
import sys

import aiohttp
import pytest

from agent import protocol as p
from dmd.core import DM
from dmd.models import Actor
from dmd.usecases import accounts
from dmd.usecases.streams import instance_stream
from tests.conftest import add_user, make_token
from tests.e2e.procs import Agent
from tests.instances.conftest import wait_status
from tests.pages.conftest import get_csrf, page_login
from tests.runtime.images import BUSYBOX_REF
from tests.streams.test_instance_streams import read_until
from tests.waiting import wait_for

pytestmark = pytest.mark.slow

WEB = ["/bin/busybox", "sh", "-c", "mkdir -p /www && echo behind-nat > /www/index.html && "
       "exec /bin/busybox httpd -f -p 8080 -h /www"]


def served(host: str, port: int) -> bool:
    """Whether our web server answers there (a connection alone proves nothing: this machine's
    network may accept connections to any address and answer for them)."""
    try:
        with socket.create_connection((host, port), timeout=1.5) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            s.settimeout(1.5)
            return b"behind-nat" in s.recv(4096)
    except OSError:
        return False


async def test_terminal_and_tcp_into_a_node_behind_nat(nat, make_client, tmp_path):
    if True:
        client = await make_client(host=nat.host_ip)
        dm = client.app[DM]
        await add_user(client, "admin@example.org", role="admin")
        headers = await make_token(client, "admin@example.org")
        (root,) = await accounts.list_users(dm, limit=5)
        r = await client.post("/api/v1/nodes", json={"name": "natted"}, headers=headers)
        assert r.status == 201, await r.text()
        token = (await r.json())["join_token"]
        url = f"http://{nat.host_ip}:{client.port}"
        agent = Agent(nat.inside([sys.executable, "-m", "agent"]), tmp_path / "nat-node.json")
        joined = await asyncio.to_thread(agent.join, url, token)
        assert joined.returncode == 0, joined.stderr
        config = json.loads((tmp_path / "nat-node.json").read_text())
        config["docker_host"] = nat.docker_host  # the namespace's own dockerd
        (tmp_path / "nat-node.json").write_text(json.dumps(config))
        await asyncio.to_thread(agent.start)
        try:
            node_id = agent.node_id
            await wait_for(lambda: dm.hub.is_online(node_id), "the node behind NAT online", 60)
            r = await client.post("/api/v1/instances", json={
                "name": "natweb", "image": BUSYBOX_REF, "node_id": node_id, "command": WEB, "ssh": False},
                headers=headers)
            assert r.status == 201, await r.text()
            iid = int((await r.json())["id"])
            got = await wait_status(client, headers, iid, "running", 90)
            # Neither the node nor its instance can be dialed from here.
            address = (await dm.hub.ask(node_id, p.InstanceInspect(iid))).container
            assert address is not None and address.ip_address and address.ip_address.startswith("10.232.")
            assert not await asyncio.to_thread(served, address.ip_address, 8080)
            assert got["status"] == "running"

            # The browser terminal's own WebSocket, as the page opens it (session cookie, CSRF, Origin).
            await page_login(client, "admin@example.org")
            csrf = await get_csrf(client, "/account")
            ws = await client.ws_connect(f"/instances/{iid}/terminal/ws?csrf={csrf}&cols=100&rows=30",
                                         headers={"Origin": url})
            await ws.send_bytes(b"echo dm-$((6*7)); stty size\n")
            seen = b""
            async with asyncio.timeout(15):
                while b"30 100" not in seen.split(b"dm-42", 1)[-1]:
                    msg = await ws.receive()
                    assert msg.type == aiohttp.WSMsgType.BINARY, msg
                    seen += msg.data
            await ws.close()
            actor = Actor(root, "127.0.0.1")
            opening = p.StreamOpen("tcp", iid, tcp=p.TcpParams(8080))
            async with instance_stream(dm, actor, root, iid, opening, via="tunnel") as opened:
                await opened.stream.write(b"GET / HTTP/1.0\r\n\r\n")
                assert b"behind-nat" in await read_until(opened.stream, b"behind-nat")
            await client.delete(f"/api/v1/instances/{iid}", headers=headers)
            await dm.reconciler.idle()
        finally:
            await asyncio.to_thread(agent.stop)

