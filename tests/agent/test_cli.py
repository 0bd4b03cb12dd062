"""The dmc command line: join against a fake dmd, facts, config errors, run with signals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import stat
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agent import __version__, cli
from agent import protocol as p
from agent.config import AgentConfig, load_config, save_config
from agent.runtime.docker import CAPABILITIES as DOCKER_CAPABILITIES
from tests.agent.test_link import FakeDmd

REPO = Path(__file__).resolve().parents[2]


class FakeJoin:
    """dmd's join endpoint: one good token, one used, one expired."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.app = web.Application()
        self.app.router.add_post("/dm" + p.JOIN_PATH, self.join)

    async def join(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        token = body.get("token")
        if token == "dmj_good":
            return web.json_response({"node_id": 12, "name": body["hostname"], "credential": "dmn_secret",
                                      "heartbeat_s": 5.0})
        if token == "dmj_expired":
            return web.json_response({"error": {"code": "join_token_expired",
                                                "message": "this join token expired at 2026-01-01 00:00 UTC"}},
                                     status=410)
        if token == "dmj_weird":
            return web.json_response({"node_id": "twelve"})
        if token == "dmj_html":
            return web.Response(status=502, text="<html>bad gateway</html>", content_type="text/html")
        return web.json_response({"error": {"code": "join_token_invalid",
                                            "message": "this join token is unknown or was already used"}},
                                 status=403)


@pytest.fixture
async def join_server(aiohttp_server: Any) -> tuple[FakeJoin, str]:
    fake = FakeJoin()
    server = await aiohttp_server(fake.app)
    return fake, str(server.make_url("/dm/"))


async def test_join_writes_the_config(join_server: tuple[FakeJoin, str], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    fake, url = join_server
    path = tmp_path / "etc" / "dmc" / "config.json"
    assert await cli.join(url, "dmj_good", str(path)) == 0
    assert fake.requests == [{"token": "dmj_good", "hostname": socket.gethostname()}]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    saved = json.loads(path.read_text())
    assert saved == {"server": url.rstrip("/"), "node_id": 12, "credential": "dmn_secret", "heartbeat_s": 5.0,
                     "metrics_interval_s": 10.0, "docker_host": "unix:///var/run/docker.sock",
                     "public_address": None, "port_pools": {"tcp": "20000-29999", "udp": "20000-29999"},
                     "port_forwarding": "auto"}
    assert load_config(str(path)).ws_url.endswith("/dm/agent/ws")
    out = capsys.readouterr().out
    assert "joined" in out and "id 12" in out and str(path) in out
    assert not [f for f in os.listdir(path.parent) if f != "config.json"]  # no temporary files left


async def test_rejoin_keeps_local_settings(join_server: tuple[FakeJoin, str], tmp_path: Path) -> None:
    _, url = join_server
    path = tmp_path / "config.json"
    save_config(AgentConfig(server="http://old:3150", node_id=3, credential="dmn_old", docker_host="tcp://d:2375",
                            public_address="203.0.113.5", port_pools={"tcp": "40000-40099"}, port_forwarding="proxy",
                            extra={"port_pool": [30000, 30010]}), str(path))
    assert await cli.join(url, "dmj_good", str(path), hostname="gpu-01") == 0
    saved = json.loads(path.read_text())
    assert saved["node_id"] == 12 and saved["credential"] == "dmn_secret"
    assert saved["docker_host"] == "tcp://d:2375" and saved["public_address"] == "203.0.113.5"
    assert saved["port_pool"] == [30000, 30010]
    assert saved["port_pools"] == {"tcp": "40000-40099"} and saved["port_forwarding"] == "proxy"


@pytest.mark.parametrize(("token", "words"), [
    ("dmj_used", "dmc: join refused: this join token is unknown or was already used"),
    ("dmj_expired", "dmc: join refused: this join token expired at 2026-01-01 00:00 UTC"),
    ("dmj_html", "dmc: join refused: dmd answered HTTP 502"),
    ("dmj_weird", "dmc: unexpected answer"),
])
async def test_join_refused(join_server: tuple[FakeJoin, str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                            token: str, words: str) -> None:
    _, url = join_server
    path = tmp_path / "config.json"
    assert await cli.join(url, token, str(path)) == 1
    err = capsys.readouterr().err
    assert err.startswith(words) and err.count("\n") == 1, err
    assert not path.exists()


async def test_join_unreachable(unused_tcp_port: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert await cli.join(f"http://127.0.0.1:{unused_tcp_port}", "dmj_good", str(tmp_path / "c.json")) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"dmc: cannot reach dmd at http://127.0.0.1:{unused_tcp_port}: "), err


async def test_join_unwritable_config_spends_no_token(join_server: tuple[FakeJoin, str], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    fake, url = join_server
    (tmp_path / "file").write_text("x")
    assert await cli.join(url, "dmj_good", str(tmp_path / "file" / "config.json")) == 1
    assert "cannot write the config file" in capsys.readouterr().err
    assert fake.requests == []


@pytest.mark.parametrize("server", ["ftp://dm.example", "dm.example:3150", "http://", "http://h/x?y=1"])
async def test_join_bad_server_url(server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert await cli.join(server, "dmj_good", str(tmp_path / "c.json")) == 2
    assert capsys.readouterr().err.startswith("dmc: ")


async def _dmc(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    """Run `python -m agent ARGS` without blocking the loop (a fake server may be serving on it)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", *args, cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_join_command_line(join_server: tuple[FakeJoin, str], tmp_path: Path) -> None:
    _, url = join_server
    path = tmp_path / "config.json"
    rc, _, err = await _dmc("join", url, "dmj_used", "--config", str(path))
    assert rc == 1 and err == "dmc: join refused: this join token is unknown or was already used\n"
    rc, out, err = await _dmc("join", url, "dmj_good", "--config", str(path))
    assert rc == 0, err
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # The hint to start it names the file given: `dmc run` alone would read /etc/dmc/config.json.
    assert f"`dmc run --config {path}`" in out and "systemctl" not in out


def test_the_start_hint_quotes_the_config_path() -> None:
    assert cli._start_hint("/etc/dmc/config.json") == "`systemctl enable --now dmc` (or `dmc run`)"
    assert cli._start_hint("/tmp/my dir/c.json") == "`dmc run --config '/tmp/my dir/c.json'`"


async def test_facts_prints_json() -> None:
    rc, out, err = await _dmc("facts", "--docker-host", "unix:///nonexistent/docker.sock")
    assert rc == 0, err
    facts = json.loads(out)
    assert facts["hostname"] == socket.gethostname()
    assert facts["cpu_count"] >= 1 and facts["memory_total_mb"] > 0 and isinstance(facts["gpus"], list)
    assert facts["runtime"] is None and "nonexistent" in facts["runtime_error"]
    assert facts["capabilities"] == DOCKER_CAPABILITIES.to_dict()  # the driver's, with or without the Engine


async def test_facts_reads_the_config(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    save_config(AgentConfig(server="http://dm:3150", node_id=1, credential="dmn_x",
                            docker_host="unix:///nonexistent/d.sock", public_address="198.51.100.7"), str(path))
    rc, out, err = await _dmc("facts", "--config", str(path))
    assert rc == 0, err
    facts = json.loads(out)
    assert facts["public_address"] == "198.51.100.7" and "d.sock" in facts["runtime_error"]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"dmc {__version__} (protocol {p.PROTOCOL_VERSION})"


def test_no_command_is_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "usage" in capsys.readouterr().err


GOOD = {"server": "http://dm:3150", "node_id": 1, "credential": "dmn_x"}


@pytest.mark.parametrize(("content", "key"), [
    ({**GOOD, "heartbeat_s": "fast"}, "heartbeat_s"),
    ({**GOOD, "heartbeat_s": 0}, "heartbeat_s"),
    ({**GOOD, "metrics_interval_s": -1}, "metrics_interval_s"),
    ({**GOOD, "node_id": "1"}, "node_id"),
    ({**GOOD, "node_id": True}, "node_id"),
    ({k: v for k, v in GOOD.items() if k != "node_id"}, "node_id"),
    ({**GOOD, "server": "dm:3150"}, "server"),
    ({**GOOD, "server": 5}, "server"),
    ({**GOOD, "credential": ""}, "credential"),
    ({**GOOD, "docker_host": "ssh://root@box"}, "docker_host"),
    ({**GOOD, "public_address": 5}, "public_address"),
    ([1, 2], "JSON object"),
    ("{not json", "not valid JSON"),
    (None, "not found"),
])
def test_bad_config_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           content: object, key: str) -> None:
    path = tmp_path / "config.json"
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    assert cli.main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dmc: ") and key in err, err
    assert str(path) in err


def test_run_without_credential(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**GOOD, "credential": None}))
    assert cli.main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no credential" in err and "dmc join" in err


def test_unknown_keys_survive_a_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**GOOD, "port_pool": {"start": 20000, "end": 20999}, "future": True}))
    config = load_config(str(path))
    save_config(config.replace(credential="dmn_y"))
    saved = json.loads(path.read_text())
    assert saved["port_pool"] == {"start": 20000, "end": 20999} and saved["future"] is True
    assert saved["credential"] == "dmn_y"


@pytest.mark.parametrize(("server", "ws"), [
    ("http://dm:3150", "ws://dm:3150/agent/ws"),
    ("https://dm.example.org/", "wss://dm.example.org/agent/ws"),
    ("https://dm.example.org/dm/", "wss://dm.example.org/dm/agent/ws"),
    ("http://[fd00::1]:3150", "ws://[fd00::1]:3150/agent/ws"),
])
def test_websocket_url(server: str, ws: str) -> None:
    assert AgentConfig(server=server, node_id=1, credential=None).ws_url == ws


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_run_closes_cleanly_on_signal(aiohttp_server: Any, tmp_path: Path, sig: signal.Signals) -> None:
    fake = FakeDmd()
    server = await aiohttp_server(fake.app)
    path = tmp_path / "config.json"
    save_config(AgentConfig(server=str(server.make_url("/prefix")), node_id=7, credential="dmn_good",
                            docker_host="unix:///nonexistent/d.sock"), str(path))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", "run", "--config", str(path), cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        end = time.monotonic() + 30
        while not (fake.hellos and fake.ws is not None):
            assert time.monotonic() < end and proc.returncode is None, "the agent did not connect"
            await asyncio.sleep(0.05)
        assert (await fake.call(p.PING)).ok is True
        proc.send_signal(sig)
        _, err = await asyncio.wait_for(proc.communicate(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    assert fake.agent_close_codes == [p.CLOSE_NORMAL]
    assert "connected to dmd" in err.decode() and sig.name in err.decode()
