"""Real processes for end-to-end tests: a dmd and agents, over real sockets."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import PASSWORD

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Dmd:
    """`python -m dmd serve` on a free port with its own data dir."""

    def __init__(self, data_dir: Path, port: int | None = None, **env: str) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.env = {**os.environ, "HOME": str(data_dir), "PYTHONUNBUFFERED": "1", **env}
        self.proc: subprocess.Popen[str] | None = None
        self.log = data_dir / "dmd.log"
        self.token = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Dmd:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "a")  # noqa: SIM115 (lives as long as the process)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dmd", "serve", "--ssh-listen", "off", "--data-dir", str(self.data_dir),
             "--listen", f"127.0.0.1:{self.port}"],
            stdout=out, stderr=subprocess.STDOUT, text=True, env=self.env, cwd=REPO,
        )
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.time() + timeout
        while True:
            try:
                self.request("GET", "/api/v1/health", auth=False)
                return
            except OSError:
                assert self.proc is not None
                if self.proc.poll() is not None or time.time() > deadline:
                    raise AssertionError(f"dmd did not start:\n{self.log.read_text()}") from None
                time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)

    def create_admin(self) -> None:
        r = subprocess.run(
            [sys.executable, "-m", "dmd", "user", "create", "--email", "admin@example.org", "--admin",
             "--password-stdin", "--data-dir", str(self.data_dir)],
            input=PASSWORD + "\n", capture_output=True, text=True, env=self.env, cwd=REPO, timeout=60,
        )
        assert r.returncode == 0, r.stderr

    def login_token(self) -> None:
        """An API token for the admin (through a cookie login, as a browser would)."""
        import http.cookiejar

        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        req = urllib.request.Request(self.url + "/api/v1/auth/login", method="POST",
                                     data=json.dumps({"email": "admin@example.org", "password": PASSWORD}).encode(),
                                     headers={"Content-Type": "application/json"})
        csrf = json.loads(opener.open(req, timeout=10).read())["csrf_token"]
        req = urllib.request.Request(self.url + "/api/v1/tokens", method="POST",
                                     data=json.dumps({"name": "e2e"}).encode(),
                                     headers={"Content-Type": "application/json", "X-CSRF-Token": csrf})
        self.token = json.loads(opener.open(req, timeout=10).read())["token"]

    def request(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, method=method, data=data, headers=headers)
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return json.loads(raw) if raw else None

    def node(self, node_id: int) -> dict[str, Any]:
        return self.request("GET", f"/api/v1/nodes/{node_id}")  # type: ignore[no-any-return]

    def wait_status(self, node_id: int, status: str, timeout: float) -> float:
        """Seconds it took for the node to reach `status`."""
        start = time.time()
        while True:
            n = self.node(node_id)
            if n["status"] == status:
                return time.time() - start
            if time.time() - start > timeout:
                raise AssertionError(f"node {node_id} is {n['status']}, not {status}, after {timeout} s")
            time.sleep(0.1)


class Agent:
    """An agent process: `python -m agent` (or the built binary) with its own config file."""

    def __init__(self, cmd: list[str], config: Path, *, cwd: Path = REPO, env: dict[str, str] | None = None) -> None:
        self.cmd = cmd
        self.config = config
        self.proc: subprocess.Popen[str] | None = None
        self.log = config.with_suffix(".log")
        self.cwd = cwd  # where `python -m agent` finds its package
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}

    def join(self, server: str, token: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.cmd, "join", server, token, "--config", str(self.config)],
                              capture_output=True, text=True, timeout=60, cwd=self.cwd, env=self.env)

    def start(self) -> Agent:
        out = open(self.log, "a")  # noqa: SIM115
        self.proc = subprocess.Popen([*self.cmd, "run", "--config", str(self.config)], stdout=out,
                                     stderr=subprocess.STDOUT, text=True, cwd=self.cwd, env=self.env)
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None

    @property
    def node_id(self) -> int:
        return int(json.loads(self.config.read_text())["node_id"])


def http_error_body(e: urllib.error.HTTPError) -> dict[str, Any]:
    return json.loads(e.read())  # type: ignore[no-any-return]
