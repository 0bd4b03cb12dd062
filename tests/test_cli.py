"""The dmd command as a real process: serve, SIGTERM, migrate, user create, bad config."""

import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import PASSWORD

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_dmd(*args, stdin: str | None = None, env_extra=None, timeout=60):
    import os

    env = {**os.environ, "HOME": "/nonexistent", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "dmd", *args], input=stdin, capture_output=True,
                          text=True, timeout=timeout, env=env)


def wait_http(url: str, timeout: float = 30) -> dict:
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return json.loads(r.read())
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)


def test_invalid_config_exits_2_with_one_line(tmp_path):
    r = run_dmd("serve", "--listen", "banana", "--data-dir", str(tmp_path))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "listen" in r.stderr and "HOST:PORT" in r.stderr
    r = run_dmd("serve", "--data-dir", str(tmp_path), env_extra={"DMD_SESSIONS": "bogus"})
    assert r.returncode == 2 and "sessions" in r.stderr


def test_unreachable_database_fails_clearly(tmp_path):
    r = run_dmd("serve", "--ssh-listen", "off", "--data-dir", str(tmp_path), "--listen", f"127.0.0.1:{free_port()}",
                "--database", "postgresql://nobody@127.0.0.1:1/x")
    assert r.returncode == 1
    assert "cannot start: database" in r.stderr and "Traceback" not in r.stderr


def test_migrate_and_user_create(tmp_path):
    r = run_dmd("migrate", "--data-dir", str(tmp_path))
    assert r.returncode == 0 and "revision" in r.stdout
    r = run_dmd("user", "create", "--email", "root@example.org", "--admin", "--password-stdin",
                "--data-dir", str(tmp_path), stdin=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    assert "created admin root" in r.stdout
    r = run_dmd("user", "create", "--email", "root@example.org", "--password-stdin",
                "--data-dir", str(tmp_path), stdin=PASSWORD + "\n")
    assert r.returncode == 1 and "already exists" in r.stderr
    r = run_dmd("user", "create", "--email", "x@example.org", "--password-stdin",
                "--data-dir", str(tmp_path), stdin="short\n")
    assert r.returncode == 2
    # A plain user made here starts as through the API: no node until an admin allows one.
    r = run_dmd("user", "create", "--email", "plain@example.org", "--password-stdin",
                "--data-dir", str(tmp_path), stdin=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    with sqlite3.connect(tmp_path / "dmd.sqlite3") as db:
        rows = db.execute("SELECT email, node_limit, port_map_limit, log_follow_limit, transfer_limit FROM users "
                          "ORDER BY id").fetchall()
    assert rows == [("root@example.org", None, 20, 4, 2), ("plain@example.org", 0, 20, 4, 2)]


def test_serve_prints_setup_link_and_stops_on_sigterm(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dmd", "serve", "--ssh-listen", "off", "--data-dir", str(tmp_path),
         "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        health = wait_http(f"http://127.0.0.1:{port}/api/v1/health")
        assert health == {"status": "ok"}  # details are for admins only
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert f"http://127.0.0.1:{port}/setup?token=" in out
    assert "stopped" in out
