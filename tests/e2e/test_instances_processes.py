"""Real processes, real Docker: kill -9 the agent in the middle of a create."""

from __future__ import annotations

import json
import sys
import time
import urllib.request

import pytest

from tests.e2e.procs import Agent, Dmd, wait_until
from tests.runtime.images import BUSYBOX_REF

pytestmark = pytest.mark.slow


def _containers(iid: int) -> list[dict]:
    """Containers labelled with the instance id, straight from the Engine API (no docker CLI)."""
    import http.client
    import socket

    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect("/var/run/docker.sock")

    conn = UnixConnection("docker")
    filters = urllib.request.quote(json.dumps({"label": [f"dm.instance={iid}"]}))
    conn.request("GET", f"/containers/json?all=1&filters={filters}")
    found = json.loads(conn.getresponse().read())
    # Other DM installations on this Docker Engine may have an instance with the same id.
    return [c for c in found if any(n.startswith("/dm-") and n.endswith(f"-{iid}-survivor") for n in c["Names"])]


def test_kill_9_during_create_leaves_exactly_one_container(tmp_path, docker_test_image):
    dmd = Dmd(tmp_path / "dmd", DMD_AGENT_HEARTBEAT_S="1")
    dmd.create_admin()
    dmd.start()
    dmd.login_token()
    agent = Agent([sys.executable, "-m", "agent"], tmp_path / "node.json")
    try:
        created = dmd.request("POST", "/api/v1/nodes", {"name": "docker-node"})
        assert agent.join(dmd.url, created["join_token"]).returncode == 0
        agent.start()
        dmd.wait_status(agent.node_id, "online", timeout=30)
        wait_until(lambda: [i for i in dmd.request("GET", f"/api/v1/nodes/{agent.node_id}/images")
                       if i["ref"] == BUSYBOX_REF], "the catalogue")
        inst = dmd.request("POST", "/api/v1/instances", {"name": "survivor", "image": BUSYBOX_REF,
                                                          "command": ["sleep", "600"]})
        iid = inst["id"]
        time.sleep(0.05)
        agent.kill9()  # somewhere inside (or just before, or after) the create on the node
        dmd.wait_status(agent.node_id, "offline", timeout=10)
        agent.start()
        try:
            final = wait_until(
                lambda: (x := dmd.request("GET", f"/api/v1/instances/{iid}"))["status"] == "running" and x,
                "the instance running after the restart")
        except AssertionError:
            raise AssertionError(f"{dmd.request('GET', f'/api/v1/instances/{iid}')}\n{_containers(iid)}\n"
                                 f"{agent.log.read_text()[-3000:]}\n{dmd.log.read_text()[-3000:]}") from None
        found = _containers(iid)
        assert len(found) == 1, found
        assert found[0]["Id"] == final["container_id"] and found[0]["State"] == "running"
        dmd.request("DELETE", f"/api/v1/instances/{iid}")
        wait_until(lambda: not _containers(iid), "the container removed")
    finally:
        agent.stop()
        dmd.stop()
