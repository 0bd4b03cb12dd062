"""dmd plus three agents as real processes over real sockets: kill -9, restart, dmd restart."""

from __future__ import annotations

import stat
import sys
import time

import pytest

from agent import protocol as p
from tests.e2e.procs import Agent, Dmd

pytestmark = pytest.mark.slow
HEARTBEAT_S = 1.0


@pytest.fixture
def dmd(tmp_path):
    d = Dmd(tmp_path / "dmd", DMD_AGENT_HEARTBEAT_S=str(HEARTBEAT_S))
    d.create_admin()
    d.start()
    d.login_token()
    yield d
    if d.proc and d.proc.poll() is None:
        d.stop()


def _join(dmd: Dmd, tmp_path, name: str, cmd: list[str]) -> Agent:
    created = dmd.request("POST", "/api/v1/nodes", {"name": name})
    agent = Agent(cmd, tmp_path / f"{name}.json")
    r = agent.join(dmd.url, created["join_token"])
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(agent.config.stat().st_mode) == 0o600
    again = Agent(cmd, tmp_path / f"{name}-again.json").join(dmd.url, created["join_token"])
    assert again.returncode == 1 and "refused" in again.stderr
    return agent


def test_three_agents_kill_restart_and_dmd_restart(dmd, tmp_path):
    cmd = [sys.executable, "-m", "agent"]
    agents = [_join(dmd, tmp_path, f"node-{i}", cmd) for i in range(3)]
    try:
        for a in agents:
            a.start()
        for a in agents:
            dmd.wait_status(a.node_id, "online", timeout=30)
        n = dmd.node(agents[0].node_id)
        assert n["facts"]["hostname"] and n["facts"]["cpu_count"] >= 1 and "gpus" in n["facts"]

        # kill -9 one agent: offline within three heartbeats (plus the watchdog's tick), others unaffected.
        agents[0].kill9()
        took = dmd.wait_status(agents[0].node_id, "offline", timeout=3 * HEARTBEAT_S + 5)
        assert took <= 3 * HEARTBEAT_S + 2.5
        for a in agents[1:]:
            assert dmd.node(a.node_id)["status"] == "online"
            assert dmd.request("POST", f"/api/v1/nodes/{a.node_id}/ping")["rtt_ms"] >= 0

        agents[0].start()
        dmd.wait_status(agents[0].node_id, "online", timeout=15)

        # Restart dmd on the same port: every agent reconnects by itself.
        assert dmd.stop() == 0
        time.sleep(1)
        dmd.start()
        for a in agents:
            dmd.wait_status(a.node_id, "online", timeout=30)
        for a in agents:
            assert a.proc is not None and a.proc.poll() is None
    finally:
        codes = [a.stop() for a in agents]
    assert codes == [0, 0, 0], [a.log.read_text()[-2000:] for a in agents]
    log = agents[1].log.read_text()
    assert "reconnecting" in log or "link to dmd down" in log


def test_deleted_node_stops_its_agent(dmd, tmp_path):
    agent = _join(dmd, tmp_path, "doomed", [sys.executable, "-m", "agent"])
    agent.start()
    dmd.wait_status(agent.node_id, "online", timeout=30)
    node_id = agent.node_id
    dmd.request("DELETE", f"/api/v1/nodes/{node_id}")
    assert agent.proc is not None
    assert agent.proc.wait(timeout=15) == 0
    assert '"credential": null' in agent.config.read_text().replace("'", '"')


def test_the_binary_joins_reports_facts_and_goes_offline(dmd, tmp_path, binary):
    """CI builds dist/dmc and uses it here: join, online, facts, offline."""
    agent = _join(dmd, tmp_path, "binary-node", [str(binary)])
    agent.start()
    try:
        dmd.wait_status(agent.node_id, "online", timeout=30)
        n = dmd.node(agent.node_id)
        facts = n["facts"]
        assert facts["cpu_count"] >= 1 and facts["memory_total_mb"] > 0 and facts["kernel"]
        assert n["agent_version"] and n["protocol_version"] == p.PROTOCOL_VERSION == 2
        assert dmd.request("POST", f"/api/v1/nodes/{agent.node_id}/ping")["rtt_ms"] >= 0
    finally:
        assert agent.stop() == 0
    dmd.wait_status(agent.node_id, "offline", timeout=5)
