"""Real processes, real Docker: kill -9 the agent in the middle of a create."""

from __future__ import annotations

import json
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.docker_proxy import HoldingDockerProxy
from tests.e2e.procs import Agent, Dmd
from tests.runtime.images import BUSYBOX_REF
from tests.waiting import wait_until

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


# Where the agent is when it dies: the Engine has made the container (or made and started it),
# and the agent, which never got the Engine's answer, has not told dmd.
HOLDS = {
    "created": rb"POST /[^ ]*containers/create",
    "started": rb"POST /[^ ]*containers/[0-9a-f]{64}/start",
}


@pytest.mark.parametrize("engine_did", list(HOLDS))
def test_kill_9_during_create_leaves_exactly_one_container(tmp_path, docker_test_image, engine_did):
    dmd = Dmd(tmp_path / "dmd", DMD_AGENT_HEARTBEAT_S="1")
    dmd.create_admin()
    dmd.start()
    dmd.login_token()
    agent = Agent([sys.executable, "-m", "agent"], tmp_path / "node.json")
    # A short path: a Unix socket's name has room for about a hundred bytes.
    proxy = HoldingDockerProxy(Path(tempfile.mkdtemp(prefix="dm-")) / "docker.sock", HOLDS[engine_did])
    try:
        created = dmd.request("POST", "/api/v1/nodes", {"name": "docker-node"})
        assert agent.join(dmd.url, created["join_token"]).returncode == 0
        config = json.loads(agent.config.read_text())
        agent.config.write_text(json.dumps({**config, "docker_host": proxy.url}))
        agent.start()
        dmd.wait_status(agent.node_id, "online", timeout=30)
        wait_until(lambda: [i for i in dmd.request("GET", f"/api/v1/nodes/{agent.node_id}/images")
                            if i["ref"] == BUSYBOX_REF], "the catalogue")
        inst = dmd.request("POST", "/api/v1/instances", {"name": "survivor", "image": BUSYBOX_REF,
                                                          "command": ["sleep", "600"]})
        iid = inst["id"]
        assert proxy.answer_held.wait(30), "the agent never asked the Engine for it"
        # The race, as it is when the agent dies: the Engine did its part, dmd knows nothing of it.
        [made] = _containers(iid)
        assert made["State"] == {"created": "created", "started": "running"}[engine_did], made
        assert dmd.request("GET", f"/api/v1/instances/{iid}")["status"] == "creating"
        agent.kill9()
        dmd.wait_status(agent.node_id, "offline", timeout=10)
        proxy.close()
        agent.config.write_text(json.dumps(config))  # straight to the Engine from now on
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
        assert found[0]["Id"] == made["Id"] == final["container_id"] and found[0]["State"] == "running"
        dmd.request("DELETE", f"/api/v1/instances/{iid}")
        wait_until(lambda: not _containers(iid), "the container removed")
    finally:
        proxy.close()
        agent.stop()
        dmd.stop()
