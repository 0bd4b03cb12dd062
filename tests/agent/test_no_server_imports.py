"""The agent package must not import the daemon's server-only dependencies (the binary stays small).

asyncssh is the agent's too since it serves SSH for instances without a server (agent.access.sshserver)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SERVER_ONLY = [
    "sqlalchemy", "alembic", "aiohttp_session", "aiohttp_jinja2", "jinja2", "argon2", "asyncpg",
    "aiomysql", "aiosqlite", "redis", "aiomcache", "pydantic", "dmd",
]

# Imports every module of the agent package in a fresh interpreter (and builds the facts, which
# touches the lazily imported Docker client too), then reports the top-level modules loaded.
PROBE = """
import asyncio, importlib, json, pkgutil, sys
import agent
names = sorted(m.name for m in pkgutil.walk_packages(agent.__path__, "agent."))
for name in names:
    importlib.import_module(name)
from agent.docker_info import node_facts
asyncio.run(node_facts("unix:///nonexistent/docker.sock", gpu_timeout=2))
print(json.dumps({"imported": names, "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def test_agent_imports_no_server_only_module() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # Every module was really imported, including the ones this issue added.
    for name in ("agent.protocol", "agent.config", "agent.link", "agent.handlers", "agent.cli", "agent.__main__",
                 "agent.docker_info", "agent.facts", "agent.metrics", "agent.gpu", "agent.gpu.nvidia",
                 "agent.access.sshserver", "agent.access.sftp", "agent.access.inroot"):
        assert name in report["imported"], name
    loaded = set(report["modules"])
    assert "aiohttp" in loaded and "aiodocker" in loaded  # the probe did exercise the client side
    assert sorted(loaded & set(SERVER_ONLY)) == []


def test_the_probe_would_notice() -> None:
    """The check itself works: importing a server-only module is seen."""
    probe = "import sys, json, jinja2; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60,
                            check=True)
    assert "jinja2" in json.loads(result.stdout)
