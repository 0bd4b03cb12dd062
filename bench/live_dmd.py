"""A real dmd process with its in-process local node, for the benchmarks that drive it through
its API (instance start, port maps): admin, API token, the node online with an image."""

from __future__ import annotations

import asyncio
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "bench-password-123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_model() -> str:
    try:
        m = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
        return m.group(1) if m else platform.processor()
    except OSError:
        return platform.processor()


@dataclass
class Live:
    base: str
    headers: dict[str, str]
    node_id: int
    session: aiohttp.ClientSession


@asynccontextmanager
async def live_dmd(image: str, **settings: str) -> AsyncIterator[Live]:
    """dmd --local-node on SQLite, an admin's token, and the local node online holding `image`;
    `settings` are dmd settings (local_port_forwarding="proxy", say), given as DMD_* variables."""
    data = Path(tempfile.mkdtemp(prefix="dm-bench-"))
    # No SSH gateway unless asked (ssh_listen="127.0.0.1:0"): it would take the default port 2222.
    env = {**os.environ, "HOME": str(data), "DMD_SSH_LISTEN": "off",
           **{f"DMD_{k.upper()}": v for k, v in settings.items()}}
    subprocess.run([sys.executable, "-m", "dmd", "user", "create", "--email", "bench@example.org", "--admin",
                    "--password-stdin", "--data-dir", str(data)], input=PASSWORD + "\n", text=True, check=True,
                   env=env, capture_output=True, cwd=REPO)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "dmd", "serve", "--data-dir", str(data),
                             "--listen", f"127.0.0.1:{port}", "--local-node", "--log-level", "warning"],
                            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
            for _ in range(300):
                try:
                    r = await s.post(f"{base}/api/v1/auth/login",
                                     json={"email": "bench@example.org", "password": PASSWORD})
                    break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            csrf = (await r.json())["csrf_token"]
            r = await s.post(f"{base}/api/v1/tokens", json={"name": "bench"}, headers={"X-CSRF-Token": csrf})
            headers = {"Authorization": f"Bearer {(await r.json())['token']}"}
        async with aiohttp.ClientSession() as s:
            for _ in range(300):
                nodes = (await (await s.get(f"{base}/api/v1/nodes", headers=headers)).json())["items"]
                if nodes and nodes[0]["status"] == "online":
                    imgs = await (await s.get(f"{base}/api/v1/nodes/{nodes[0]['id']}/images", headers=headers)).json()
                    if any(i["ref"] == image for i in imgs):
                        break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError(f"the local node did not come online with {image}")
            yield Live(base, headers, int(nodes[0]["id"]), s)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        # Its containers and forwarding chains (a real dmd keeps them; a benchmark's goes).
        from tests.leftovers import installation_of, remove_installation

        installation = await asyncio.to_thread(installation_of, data)
        if installation is not None:
            await remove_installation(installation)
