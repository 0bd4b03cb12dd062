"""dist/dmc, the one-file agent binary: size, it runs, and it holds no server-only module.

Builds the binary first (scripts/build-agent.sh, about half a minute) when it is missing or
older than the agent's sources.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agent import __version__
from agent import protocol as p
from agent.config import AgentConfig, save_config
from tests.agent.test_link import FakeDmd
from tests.agent.test_no_server_imports import SERVER_ONLY

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BINARY = REPO / "dist" / "dmc"
MAX_BYTES = 25 * 1000 * 1000


def _sources() -> list[Path]:
    return [*sorted((REPO / "agent").rglob("*.py")), REPO / "scripts" / "build-agent.sh"]


@pytest.fixture(scope="module")
def binary() -> Path:
    newest = max(path.stat().st_mtime for path in _sources())
    if not BINARY.exists() or BINARY.stat().st_mtime < newest:
        result = subprocess.run([str(REPO / "scripts" / "build-agent.sh")], cwd=REPO, capture_output=True,
                                text=True, timeout=900, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "dist/dmc is" in result.stdout
    assert BINARY.exists() and os.access(BINARY, os.X_OK)
    return BINARY


def test_size(binary: Path) -> None:
    size = binary.stat().st_size
    assert size <= MAX_BYTES, f"dist/dmc is {size / 1e6:.1f} MB, over the 25 MB goal"


def test_version(binary: Path) -> None:
    result = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"dmc {__version__} (protocol {p.PROTOCOL_VERSION})"


def test_facts(binary: Path) -> None:
    result = subprocess.run([str(binary), "facts", "--docker-host", "unix:///nonexistent/docker.sock"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["cpu_count"] >= 1 and facts["memory_total_mb"] > 0 and isinstance(facts["gpus"], list)
    assert facts["runtime"] is None and "nonexistent" in facts["runtime_error"]


def test_bad_config_exit_status(binary: Path, tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"server": "http://dm:3150", "node_id": 1, "credential": "x", "heartbeat_s": "soon"}')
    result = subprocess.run([str(binary), "run", "--config", str(path)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "heartbeat_s" in result.stderr


def test_archive_holds_no_server_only_module(binary: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "PyInstaller.utils.cliutils.archive_viewer", "-r", "-b",
                             str(binary)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    names = {line.strip() for line in result.stdout.splitlines() if line.startswith(" ")}
    top = {name.replace("/", ".").split(".")[0] for name in names}
    assert {"agent", "aiohttp", "aiodocker"} <= top, sorted(top)  # the listing is what we think it is
    assert "agent.link" in names and "agent.protocol" in names
    assert sorted(top & set(SERVER_ONLY)) == []


async def test_frozen_agent_links_and_stops_on_sigterm(binary: Path, aiohttp_server: Any, tmp_path: Path) -> None:
    fake = FakeDmd()
    server = await aiohttp_server(fake.app)
    path = tmp_path / "config.json"
    save_config(AgentConfig(server=str(server.make_url("/prefix")), node_id=7, credential="dmn_good",
                            docker_host="unix:///nonexistent/d.sock"), str(path))
    proc = await asyncio.create_subprocess_exec(str(binary), "run", "--config", str(path),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        end = time.monotonic() + 60
        while fake.ws is None:
            assert time.monotonic() < end and proc.returncode is None, "the frozen agent did not connect"
            await asyncio.sleep(0.05)
        assert (await fake.call(p.PING)).ok is True
        assert (await fake.call("no.such")).error == {"code": "unknown_type",
                                                      "message": "this agent does not handle 'no.such'"}
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    assert fake.agent_close_codes == [p.CLOSE_NORMAL]
