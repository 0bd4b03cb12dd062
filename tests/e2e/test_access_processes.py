"""Port maps with real processes on real Docker: the pool from the agent's config file, an
established connection through a map surviving kill -9 of the agent, and maps surviving a
restart of dmd."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import urllib.request

import pytest

from tests.e2e.procs import Agent, Dmd
from tests.leftovers import installation_of, remove_installation
from tests.runtime.images import BUSYBOX_REF
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

POOL = (24100, 24199)
# A web server (8080) and a line echo (9000) that outlive the agent, as any workload does.
COMMAND = ["/bin/busybox", "sh", "-c",
           "mkdir -p /www && echo hello > /www/index.html && /bin/busybox httpd -p 8080 -h /www && "
           "exec /bin/busybox nc -ll -p 9000 -e /bin/busybox cat"]


def _http(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=3) as r:
            return str(r.read().decode())
    except OSError:
        return None


def _echo(sock: socket.socket, line: bytes) -> bytes:
    sock.sendall(line)
    got = b""
    while not got.endswith(b"\n"):
        chunk = sock.recv(100)
        assert chunk, "the connection was closed"
        got += chunk
    return got


def test_maps_outlive_agent_and_dmd_restarts(tmp_path, docker_test_image):
    dmd = Dmd(tmp_path / "dmd", DMD_AGENT_HEARTBEAT_S="1")
    dmd.create_admin()
    dmd.start()
    dmd.login_token()
    agent = Agent([sys.executable, "-m", "agent"], tmp_path / "node.json")
    installation = None
    try:
        created = dmd.request("POST", "/api/v1/nodes", {"name": "ports-node"})
        assert agent.join(dmd.url, created["join_token"]).returncode == 0
        config = json.loads(agent.config.read_text())
        config["port_pools"] = {"tcp": f"{POOL[0]}-{POOL[1]}", "udp": f"{POOL[0]}-{POOL[1]}"}
        agent.config.write_text(json.dumps(config))
        agent.start()
        dmd.wait_status(agent.node_id, "online", timeout=30)
        node = dmd.node(agent.node_id)
        assert node["facts"]["ports"]["pools"]["tcp"] == [list(POOL)]
        wait_until(lambda: [i for i in dmd.request("GET", f"/api/v1/nodes/{agent.node_id}/images")
                       if i["ref"] == BUSYBOX_REF], "the catalogue")
        inst = dmd.request("POST", "/api/v1/instances", {
            "name": "svc", "image": BUSYBOX_REF, "command": COMMAND, "ssh": False,
            "port_maps": [{"instance_port": 8080}, {"instance_port": 9000}]})
        ports = {m["instance_port"]: m["host_port"] for m in inst["port_maps"]}
        assert all(POOL[0] <= p <= POOL[1] for p in ports.values()), ports
        installation = installation_of(dmd.data_dir)
        assert wait_until(lambda: _http(ports[8080]), "the web server through its map", 30) == "hello\n"

        # An established connection through the map, while the agent is killed and comes back.
        sock = socket.create_connection(("127.0.0.1", ports[9000]), timeout=5)
        wait_until(lambda: _try_echo(sock), "the echo answering")
        agent.kill9()
        dmd.wait_status(agent.node_id, "offline", timeout=10)
        assert _echo(sock, b"while the agent is down\n") == b"while the agent is down\n"
        assert _http(ports[8080]) == "hello\n"  # new connections too: the kernel forwards
        agent.start()
        dmd.wait_status(agent.node_id, "online", timeout=30)
        assert _echo(sock, b"after the agent came back\n") == b"after the agent came back\n"

        # dmd restarts: the maps are in its database, the agent re-applies the same set.
        dmd.stop()
        dmd.start()
        dmd.wait_ready()
        dmd.wait_status(agent.node_id, "online", timeout=30)
        assert _echo(sock, b"after dmd came back\n") == b"after dmd came back\n"
        sock.close()
        got = dmd.request("GET", f"/api/v1/instances/{inst['id']}")
        assert {m["instance_port"]: m["host_port"] for m in got["port_maps"]} == ports
        wait_until(lambda: {m["state"] for m in dmd.request("GET", f"/api/v1/instances/{inst['id']}")["port_maps"]}
              == {"active"}, "the maps active again")
        assert _http(ports[8080]) == "hello\n"

        # Deleting the instance frees its ports: nothing answers there any more.
        dmd.request("DELETE", f"/api/v1/instances/{inst['id']}")
        wait_until(lambda: not dmd.request("GET", "/api/v1/port-maps")["items"], "the ledger empty")
        wait_until(lambda: _http(ports[8080]) is None, "the host port closed")
    finally:
        agent.stop()
        dmd.stop()
        if installation is not None:
            # The agent's kernel rules stay by design (connections survive its restarts).
            asyncio.run(remove_installation(installation))


def _try_echo(sock: socket.socket) -> bool:
    try:
        return _echo(sock, b"ping\n") == b"ping\n"
    except OSError:
        return False

