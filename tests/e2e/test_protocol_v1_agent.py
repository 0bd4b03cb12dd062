"""An agent of protocol 1 (the package as it was before the typed protocol, from
tests/fixtures/agent-v1) still joins today's dmd and runs an instance: real processes, real Docker."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.e2e.procs import Agent, Dmd
from tests.runtime.images import BUSYBOX_REF
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

V1 = REPO / "tests" / "fixtures" / "agent-v1" / "agent.tar.gz"


def unpack_v1(into: Path) -> Path:
    with tarfile.open(V1) as tar:
        tar.extractall(into, filter="data")
    return into


def test_an_agent_of_protocol_1_joins_and_runs_an_instance(tmp_path: Path, docker_test_image: str) -> None:
    root = unpack_v1(tmp_path / "v1")
    env = {"PYTHONPATH": str(root)}  # only the old package: it must not find today's
    version = subprocess.run([sys.executable, "-m", "agent", "--version"], cwd=root, env=env, capture_output=True,
                             text=True, timeout=60, check=True).stdout
    assert "(protocol 1)" in version, version
    dmd = Dmd(tmp_path / "dmd", DMD_AGENT_HEARTBEAT_S="1")
    dmd.create_admin()
    dmd.start()
    dmd.login_token()
    agent = Agent([sys.executable, "-m", "agent"], tmp_path / "node.json", cwd=root, env=env)
    iid = None
    try:
        created = dmd.request("POST", "/api/v1/nodes", {"name": "old-agent"})
        joined = agent.join(dmd.url, created["join_token"])
        assert joined.returncode == 0, joined.stderr
        agent.start()
        dmd.wait_status(agent.node_id, "online", timeout=30)
        node = dmd.node(agent.node_id)
        assert node["protocol_version"] == 1 and node["facts"]["cpu_count"] >= 1
        # Its whole state came inside the hello: the catalogue knows the node's images.
        wait_until(lambda: [i for i in dmd.request("GET", f"/api/v1/nodes/{agent.node_id}/images")
                            if i["ref"] == BUSYBOX_REF], "the catalogue")
        inst = dmd.request("POST", "/api/v1/instances", {"name": "old", "image": BUSYBOX_REF,
                                                         "command": ["sleep", "600"], "node_id": agent.node_id})
        iid = inst["id"]
        running = wait_until(lambda: (x := dmd.request("GET", f"/api/v1/instances/{iid}"))["status"] == "running"
                             and x, "the instance running")
        assert running["container_id"]
        # Its SSH port is mapped and forwarded by the old agent too (busybox has no sshd: said plainly).
        wait_until(lambda: dmd.request("GET", f"/api/v1/instances/{iid}")["ssh"]["state"] == "no_server",
                   "the SSH state")
        dmd.request("POST", f"/api/v1/instances/{iid}/stop")
        wait_until(lambda: dmd.request("GET", f"/api/v1/instances/{iid}")["status"] == "stopped", "stopped")
        dmd.request("DELETE", f"/api/v1/instances/{iid}")
        wait_until(lambda: not [i for i in dmd.request("GET", "/api/v1/instances")["items"] if i["id"] == iid],
                   "the instance deleted")
        iid = None
    except AssertionError:
        raise AssertionError(f"{agent.log.read_text()[-3000:]}\n{dmd.log.read_text()[-3000:]}") from None
    finally:
        if iid is not None:
            dmd.request("DELETE", f"/api/v1/instances/{iid}")
        agent.stop()
        dmd.stop()
