"""dmd as a real process on a free port (`dmd serve`), its log kept, for tests that need the
server exactly as it runs: its HTTP server, its logging, a client that is not aiohttp's."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import PASSWORD


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class DmdProcess:
    base: str  # http://127.0.0.1:PORT
    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    # No SSH gateway on the default port unless asked: other test runs share the machine.
    return {**os.environ, "HOME": "/nonexistent", "DMD_SSH_LISTEN": "off", **(extra or {})}


def create_user(data_dir: Path, email: str, *, admin: bool = False, env: dict[str, str] | None = None) -> None:
    args = [sys.executable, "-m", "dmd", "user", "create", "--data-dir", str(data_dir), "--email", email,
            "--password-stdin"]
    if admin:
        args.append("--admin")
    r = subprocess.run(args, input=PASSWORD, capture_output=True, text=True, timeout=60, env=_env(env))
    assert r.returncode == 0, r.stderr


def _wait_up(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                json.loads(r.read())
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"dmd did not come up:\n{log.read_text(errors='replace')}") from None
            time.sleep(0.1)


@contextmanager
def running_dmd(data_dir: Path, *, env: dict[str, str] | None = None) -> Iterator[DmdProcess]:
    """`dmd serve` on a free port, stopped with SIGTERM (its exit status checked) afterwards."""
    port = free_port()
    log_path = data_dir / "dmd.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dmd", "serve", "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT, env=_env(env),
        )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_up(f"{base}/api/v1/health", proc, log_path)
        yield DmdProcess(base, port, log_path)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert proc.returncode == 0, log_path.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
