"""AgentLink against a fake control plane: a small aiohttp server in the test speaking the protocol."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web

import agent
from agent import protocol as p
from agent.config import AgentConfig, load_config, save_config
from agent.handlers import HandlerError, HandlerRegistry
from agent.link import AgentLink, Backoff, LinkTimings, stable_facts
from agent.link.snapshot import merge_parts
from tests.waiting import wait_for

FAST = LinkTimings(
    backoff_initial_s=0.01,
    backoff_max_s=0.05,
    backoff_jitter=0.0,
    connect_timeout_s=2.0,
    welcome_timeout_s=2.0,
    close_timeout_s=1.0,
    request_timeout_s=5.0,
)
FACTS = {"hostname": "fake-node", "cpu_count": 2, "memory_available_mb": 100, "gpus": []}


async def eventually(pred: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    await wait_for(pred, what, timeout, every=0.01)


class FakeDmd:
    """Just enough of dmd's agent endpoint: credential check, hello/welcome, message log, requests."""

    def __init__(self) -> None:
        self.credentials = {"dmn_good"}
        self.heartbeat_s = 0.2
        self.welcome: dict[str, Any] = {}
        self.raw_welcome: str | None = None
        self.hold_s: list[float] = []  # for each coming link: close it (1001) after this many seconds
        self.auth_headers: list[str] = []
        self.hellos: list[dict[str, Any]] = []
        self.states: list[p.Snapshot] = []  # each hello's state, its parts merged
        self.received: list[tuple[float, p.Envelope]] = []
        self.agent_close_codes: list[int | None] = []
        self.ws: web.WebSocketResponse | None = None
        self.request: web.Request | None = None
        self.on_reply: Callable[[p.Envelope], None] | None = None
        self._pending: dict[str, asyncio.Future[p.Envelope]] = {}
        self._ids = p.IdSource("d")
        self.app = web.Application()
        self.app.router.add_get("/prefix" + p.AGENT_WS_PATH, self.handle)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        auth = request.headers.get("Authorization", "")
        self.auth_headers.append(auth)
        if auth.removeprefix("Bearer ") not in self.credentials:
            await ws.close(code=p.CLOSE_AUTH, message=b"unknown or revoked node credential")
            return ws
        msg = await ws.receive(timeout=5)
        assert msg.type == WSMsgType.TEXT, msg
        env = p.decode(msg.data)
        assert env.type == p.HELLO, env
        hello = p.parse(p.Hello, env.data)
        parts = [p.parse(p.SnapshotPart, p.decode((await ws.receive(timeout=5)).data).data)
                 for _ in range(hello.snapshot_parts)]
        self.hellos.append(env.data)
        self.states.append(merge_parts(parts) if parts else hello.state)
        welcome = {"protocol": p.negotiate(hello.protocol.min, hello.protocol.max), "node_id": hello.node_id,
                   "heartbeat_s": self.heartbeat_s, "server_version": "fake-1", **self.welcome}
        await ws.send_str(self.raw_welcome or p.message(p.WELCOME, welcome).to_json())
        self.ws, self.request = ws, request
        hold = self.hold_s.pop(0) if self.hold_s else None
        closer = asyncio.create_task(self._close_later(ws, hold)) if hold is not None else None
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    break
                env = p.decode(msg.data)
                if env.is_reply:
                    if self.on_reply is not None:
                        self.on_reply(env)
                    fut = self._pending.pop(env.id or "", None)
                    if fut is not None and not fut.done():
                        fut.set_result(env)
                else:
                    self.received.append((time.monotonic(), env))
        finally:
            if closer is not None:
                closer.cancel()
            self.agent_close_codes.append(ws.close_code)
            if self.ws is ws:
                self.ws = None
        return ws

    @staticmethod
    async def _close_later(ws: web.WebSocketResponse, delay: float) -> None:
        await asyncio.sleep(delay)
        await ws.close(code=p.CLOSE_GOING_AWAY, message=b"fake dmd closing")

    def of_type(self, type_: str) -> list[p.Envelope]:
        return [env for _, env in self.received if env.type == type_]

    async def send(self, env: p.Envelope | str) -> None:
        assert self.ws is not None, "no agent connected"
        await self.ws.send_str(env if isinstance(env, str) else env.to_json())

    async def call(self, type_: str, data: dict[str, Any] | None = None, timeout: float = 5.0) -> p.Envelope:
        id_ = self._ids.next()
        fut: asyncio.Future[p.Envelope] = asyncio.get_running_loop().create_future()
        self._pending[id_] = fut
        await self.send(p.message(type_, data, id_))
        return await asyncio.wait_for(fut, timeout)

    async def close(self, code: int, reason: bytes = b"") -> None:
        assert self.ws is not None
        await self.ws.close(code=code, message=reason)

    def abort(self) -> None:
        """Drop the TCP connection without a close frame."""
        assert self.request is not None and self.request.transport is not None
        self.request.transport.abort()


@pytest.fixture
async def fake(aiohttp_server: Any) -> AsyncIterator[tuple[FakeDmd, str]]:
    dmd = FakeDmd()
    server = await aiohttp_server(dmd.app)
    yield dmd, str(server.make_url("/prefix"))


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return tmp_path / "etc" / "dmc" / "config.json"


LinkFactory = Callable[..., Awaitable[tuple[AgentLink, "asyncio.Task[int]"]]]


@pytest.fixture
async def start(fake: tuple[FakeDmd, str], config_path: Path) -> AsyncIterator[LinkFactory]:
    _, url = fake
    links: list[tuple[AgentLink, asyncio.Task[int]]] = []

    async def factory(*, timings: LinkTimings = FAST, facts: Callable[[], Awaitable[dict[str, Any]]] | None = None,
                      server: str | None = None, **kwargs: Any) -> tuple[AgentLink, asyncio.Task[int]]:
        config = AgentConfig(server=server or url, node_id=7, credential="dmn_good", heartbeat_s=10.0,
                             metrics_interval_s=0.2, extra={"port_pool": [20000, 20100]}, path=str(config_path))
        save_config(config)

        async def default_facts() -> dict[str, Any]:
            return dict(FACTS)

        link = AgentLink(config, timings=timings, facts_provider=facts or default_facts, **kwargs)
        task = asyncio.create_task(link.run())
        links.append((link, task))
        return link, task

    yield factory
    for link, task in links:
        await link.stop()
        await asyncio.wait_for(task, 10)


# --------------------------------------------------------------------------- handshake


async def test_handshake(fake: tuple[FakeDmd, str], start: LinkFactory) -> None:
    dmd, _ = fake
    link, task = await start()
    await eventually(lambda: link.connected, what="the handshake")
    assert dmd.auth_headers == ["Bearer dmn_good"]
    hello = p.parse(p.Hello, dmd.hellos[0])
    assert hello.node_id == 7
    assert hello.agent_version == agent.__version__
    # The state follows in parts, which only protocol 2 knows.
    assert hello.protocol == p.ProtocolRange(p.PROTOCOL_VERSION, p.PROTOCOL_VERSION) == p.ProtocolRange(2, 2)
    assert hello.facts == FACTS
    assert hello.snapshot_parts == 1 and dmd.states[0] == p.Snapshot()  # nothing reported without a provider
    assert link.connects == 1
    assert link.negotiated_protocol == 2 and link.server_version == "fake-1"
    await link.stop()
    assert await asyncio.wait_for(task, 5) == 0
    await eventually(lambda: dmd.agent_close_codes == [p.CLOSE_NORMAL], what="a clean close")
    assert not link.connected


@pytest.mark.parametrize("is_async", [False, True])
async def test_state_snapshot_comes_from_the_provider(fake: tuple[FakeDmd, str], start: LinkFactory,
                                                      is_async: bool) -> None:
    dmd, _ = fake
    calls = 0

    def sync_state() -> p.Snapshot:
        nonlocal calls
        calls += 1
        return p.Snapshot(containers=[p.ContainerInfo("c1", "web", "debian:12", "running")],
                          images=[p.ImageInfo(f"sha256:{calls}")])

    async def async_state() -> p.Snapshot:
        return sync_state()

    link, _ = await start(state_provider=async_state if is_async else sync_state)
    await eventually(lambda: link.connected)
    assert dmd.states[0] == p.Snapshot(containers=[p.ContainerInfo("c1", "web", "debian:12", "running")],
                                       images=[p.ImageInfo("sha256:1")])
    dmd.abort()
    await eventually(lambda: len(dmd.hellos) == 2, what="a second hello")
    assert dmd.states[1].images == [p.ImageInfo("sha256:2")]  # a fresh snapshot on every connect


async def test_real_facts_in_hello(fake: tuple[FakeDmd, str], config_path: Path) -> None:
    """Without a facts provider the hello carries the host facts and the runtime (or why there is none)."""
    dmd, url = fake
    config = AgentConfig(server=url, node_id=7, credential="dmn_good", docker_host="unix:///nonexistent/docker.sock")
    link = AgentLink(config, timings=FAST)
    task = asyncio.create_task(link.run())
    try:
        await eventually(lambda: link.connected, timeout=30)
        facts = dmd.hellos[0]["facts"]
        assert facts["cpu_count"] >= 1 and isinstance(facts["gpus"], list)
        assert facts["runtime"] is None and "nonexistent" in facts["runtime_error"]
    finally:
        await link.stop()
        assert await asyncio.wait_for(task, 5) == 0


async def test_heartbeats_at_the_welcome_interval(fake: tuple[FakeDmd, str], start: LinkFactory) -> None:
    dmd, _ = fake
    dmd.heartbeat_s = 0.2  # the config says 10 s: dmd's value wins
    await start()
    await eventually(lambda: len(dmd.of_type(p.HEARTBEAT)) >= 5, what="five heartbeats")
    beats = [(at, env.data["seq"]) for at, env in dmd.received if env.type == p.HEARTBEAT]
    assert [seq for _, seq in beats[:5]] == [1, 2, 3, 4, 5]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(beats)][:4]
    assert all(0.15 <= gap <= 0.6 for gap in gaps), gaps
    assert 0.18 <= sum(gaps) / len(gaps) <= 0.3, gaps


async def test_metrics_are_pushed(fake: tuple[FakeDmd, str], start: LinkFactory) -> None:
    dmd, _ = fake
    await start()
    await eventually(lambda: len(dmd.of_type(p.METRICS)) >= 2, what="two metrics messages")
    data = dmd.of_type(p.METRICS)[1].data
    assert {"at", "cpu_pct", "memory_total_mb", "memory_used_mb", "load_1", "gpus"} <= set(data)
    assert data["memory_total_mb"] > 0 and data["gpus"] == []  # no GPUs in the facts: no GPU sampling


async def test_changed_facts_are_sent(fake: tuple[FakeDmd, str], start: LinkFactory) -> None:
    dmd, _ = fake
    calls = 0

    async def facts() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        # Only volatile figures change at first, then a real change (a new hostname).
        return {**FACTS, "memory_available_mb": calls, "hostname": "renamed" if calls >= 4 else "fake-node"}

    await start(facts=facts, timings=_with(FAST, facts_interval_s=0.05))
    await eventually(lambda: calls >= 6, what="repeated facts collection")
    sent = dmd.of_type(p.FACTS)
    assert len(sent) == 1 and sent[0].data["hostname"] == "renamed"


def _with(timings: LinkTimings, **changes: float) -> LinkTimings:
    import dataclasses

    return dataclasses.replace(timings, **changes)


def test_stable_facts() -> None:
    a = {"hostname": "h", "memory_available_mb": 1, "disk_free_mb": 2,
         "gpus": [{"index": 0, "uuid": "u", "utilization_pct": 5.0, "memory_used_mb": 1, "temperature_c": 40}]}
    b = {"hostname": "h", "memory_available_mb": 9, "disk_free_mb": 8,
         "gpus": [{"index": 0, "uuid": "u", "utilization_pct": 95.0, "memory_used_mb": 7, "temperature_c": 80}]}
    assert stable_facts(a) == stable_facts(b) == {"hostname": "h", "gpus": [{"index": 0, "uuid": "u"}]}
    assert stable_facts(a) != stable_facts({**a, "gpus": []})


# --------------------------------------------------------------------------- requests


async def test_ping_is_answered(fake: tuple[FakeDmd, str], start: LinkFactory) -> None:
    dmd, _ = fake
    link, _ = await start()
    await eventually(lambda: link.connected)
    before = time.time()
    reply = await dmd.call(p.PING)
    assert reply.ok is True and before - 1 <= reply.data["at"] <= time.time() + 1


async def test_facts_refresh(fake: tuple[FakeDmd, str], start: LinkFactory) -> None:
    dmd, _ = fake
    link, _ = await start()
    await eventually(lambda: link.connected)
    reply = await dmd.call(p.FACTS_REFRESH)
    # The facts as the contract has them: every known key, those the host did not report empty.
    assert reply.ok is True and reply.data == {**p.to_data(p.NodeFacts()), **FACTS}


async def test_unknown_type(fake: tuple[FakeDmd, str], start: LinkFactory) -> None:
    dmd, _ = fake
    link, _ = await start()
    await eventually(lambda: link.connected)
    reply = await dmd.call("no.such.thing", {"x": 1})
    assert reply.ok is False and reply.error is not None
    assert reply.error["code"] == "unknown_type" and "no.such.thing" in reply.error["message"]


async def test_failing_handlers_give_structured_errors(fake: tuple[FakeDmd, str], start: LinkFactory) -> None:
    dmd, _ = fake
    registry = HandlerRegistry()

    @registry.handler("crash")
    async def crash(data: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("kaboom")

    @registry.handler("refuse")
    async def refuse(data: dict[str, Any]) -> dict[str, Any]:
        raise HandlerError("no_such_container", f"container {data['id']} does not exist")

    @registry.handler("slow", timeout_s=0.1)
    async def slow(data: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(10)
        return {}

    @registry.handler("not-a-dict")
    async def bad(data: dict[str, Any]) -> dict[str, Any]:
        return ["x"]  # type: ignore[return-value]

    @registry.handler("echo")
    async def echo(data: dict[str, Any]) -> dict[str, Any]:
        return {"echo": data}

    link, _ = await start(handlers=registry)
    await eventually(lambda: link.connected)
    crashed = await dmd.call("crash")
    assert crashed.ok is False and crashed.error == {"code": "internal_error", "message": "RuntimeError: kaboom"}
    refused = await dmd.call("refuse", {"id": "c9"})
    assert refused.error == {"code": "no_such_container", "message": "container c9 does not exist"}
    timed_out = await dmd.call("slow")
    assert timed_out.error is not None and timed_out.error["code"] == "timeout"
    not_dict = await dmd.call("not-a-dict")
    assert not_dict.error is not None and not_dict.error["code"] == "internal_error"
    # The link stayed up the whole time, and still works.
    assert (await dmd.call("echo", {"a": [1]})).data == {"echo": {"a": [1]}}
    assert (await dmd.call(p.PING)).ok is True
    assert link.connected and link.connects == 1 and len(dmd.hellos) == 1


async def test_requests_run_concurrently(fake: tuple[FakeDmd, str], start: LinkFactory) -> None:
    dmd, _ = fake
    registry = HandlerRegistry()
    gate = asyncio.Event()

    @registry.handler("wait")
    async def wait(data: dict[str, Any]) -> dict[str, Any]:
        await gate.wait()
        return {"waited": True}

    link, _ = await start(handlers=registry)
    await eventually(lambda: link.connected)
    waiting = asyncio.create_task(dmd.call("wait"))
    assert (await dmd.call(p.PING)).ok is True  # not stuck behind the waiting request
    gate.set()
    assert (await waiting).data == {"waited": True}


async def test_custom_handlers_win_over_builtins(fake: tuple[FakeDmd, str], start: LinkFactory) -> None:
    dmd, _ = fake
    registry = HandlerRegistry()

    @registry.handler(p.PING)
    async def ping(data: dict[str, Any]) -> dict[str, Any]:
        return {"at": 1.0, "custom": True}

    link, _ = await start(handlers=registry)
    await eventually(lambda: link.connected)
    assert (await dmd.call(p.PING)).data == {"at": 1.0, "custom": True}
    assert registry.types() == [p.PING]  # the link did not add its built-ins to the caller's registry


async def test_credential_rotate_persists_before_replying(fake: tuple[FakeDmd, str], start: LinkFactory,
                                                          config_path: Path) -> None:
    dmd, _ = fake
    link, _ = await start()
    await eventually(lambda: link.connected)
    on_disk_at_reply: list[Any] = []
    dmd.on_reply = lambda env: on_disk_at_reply.append(json.loads(config_path.read_text())["credential"])
    dmd.credentials = {"dmn_good", "dmn_rotated"}
    reply = await dmd.call(p.CREDENTIAL_ROTATE, {"credential": "dmn_rotated"})
    assert reply.ok is True
    assert on_disk_at_reply == ["dmn_rotated"]
    saved = json.loads(config_path.read_text())
    assert saved["credential"] == "dmn_rotated" and saved["port_pool"] == [20000, 20100]
    assert (config_path.stat().st_mode & 0o777) == 0o600
    # dmd closes the link; the agent comes back with the new credential.
    dmd.credentials = {"dmn_rotated"}
    await dmd.close(p.CLOSE_REPLACED, b"credential rotated")
    await eventually(lambda: link.connects == 2, what="reconnect with the new credential")
    assert dmd.auth_headers[-1] == "Bearer dmn_rotated"


@pytest.mark.parametrize("data", [{}, {"credential": ""}, {"credential": 5}, {"credential": "has space"}])
async def test_credential_rotate_bad_request(fake: tuple[FakeDmd, str], start: LinkFactory, config_path: Path,
                                             data: dict[str, Any]) -> None:
    dmd, _ = fake
    link, _ = await start()
    await eventually(lambda: link.connected)
    reply = await dmd.call(p.CREDENTIAL_ROTATE, data)
    assert reply.ok is False and reply.error is not None and reply.error["code"] == "bad_request"
    assert json.loads(config_path.read_text())["credential"] == "dmn_good"


async def test_credential_rotate_unwritable_config(fake: tuple[FakeDmd, str], start: LinkFactory,
                                                   config_path: Path) -> None:
    dmd, _ = fake
    link, _ = await start()
    await eventually(lambda: link.connected)
    link.config.path = str(config_path.parent / "missing-dir-is-a-file" / "config.json")
    (config_path.parent / "missing-dir-is-a-file").write_text("not a folder")
    reply = await dmd.call(p.CREDENTIAL_ROTATE, {"credential": "dmn_new"})
    assert reply.error is not None and reply.error["code"] == "config_write_failed"
    assert link.config.credential == "dmn_good"  # not saved, so not used


# --------------------------------------------------------------------------- drops and closes


@pytest.mark.parametrize("how", ["abort", "close"])
async def test_reconnects_after_a_drop(fake: tuple[FakeDmd, str], start: LinkFactory, how: str,
                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "agent.link")
    dmd, _ = fake
    link, _ = await start()
    await eventually(lambda: link.connected)
    if how == "abort":
        dmd.abort()
    else:
        await dmd.close(1011, b"dmd restarting")
    await eventually(lambda: link.connects == 2, what="a reconnect")
    assert len(dmd.hellos) == 2 and dmd.hellos[1]["node_id"] == 7
    assert "reconnecting in" in caplog.text
    if how == "close":
        assert "1011" in caplog.text and "dmd restarting" in caplog.text
    else:
        assert "connection lost" in caplog.text
    assert (await dmd.call(p.PING)).ok is True


async def test_refused_credential_keeps_retrying(fake: tuple[FakeDmd, str], start: LinkFactory,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, "agent.link")
    dmd, _ = fake
    dmd.credentials = {"dmn_other"}
    link, _ = await start()
    await eventually(lambda: len(dmd.auth_headers) >= 3, what="three attempts")
    assert not link.connected and link.connects == 0
    assert link.last_error is not None and "4001" in link.last_error
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and "refused" in r.getMessage()]
    assert len(errors) >= 2 and "credential" in errors[0].getMessage()
    dmd.credentials = {"dmn_good"}  # an admin fixed it: the agent gets in on its next try
    await eventually(lambda: link.connected, what="a connection once the credential is accepted")


async def test_http_401_is_a_refused_credential(aiohttp_server: Any, config_path: Path) -> None:
    app = web.Application()
    attempts = 0

    async def refuse(request: web.Request) -> web.Response:
        nonlocal attempts
        attempts += 1
        return web.Response(status=401, text="no")

    app.router.add_get(p.AGENT_WS_PATH, refuse)
    server = await aiohttp_server(app)
    config = AgentConfig(server=str(server.make_url("/")), node_id=1, credential="dmn_x")
    link = AgentLink(config, timings=FAST, facts_provider=_facts)
    task = asyncio.create_task(link.run())
    await eventually(lambda: attempts >= 2)
    assert link.last_error is not None and "HTTP 401" in link.last_error
    await link.stop()
    assert await asyncio.wait_for(task, 5) == 0


async def _facts() -> dict[str, Any]:
    return dict(FACTS)


@pytest.mark.parametrize("how", ["notice", "close-code"])
async def test_node_deleted(fake: tuple[FakeDmd, str], start: LinkFactory, config_path: Path, how: str) -> None:
    dmd, _ = fake
    link, task = await start()
    await eventually(lambda: link.connected)
    if how == "notice":
        await dmd.send(p.message(p.NODE_DELETED, {"reason": "deleted by admin"}))
    else:
        await dmd.close(p.CLOSE_DELETED, b"node deleted")
    assert await asyncio.wait_for(task, 5) == 0
    saved = json.loads(config_path.read_text())
    assert saved["credential"] is None
    assert saved["node_id"] == 7 and saved["port_pool"] == [20000, 20100]  # the rest is kept
    assert load_config(str(config_path)).credential is None
    assert len(dmd.hellos) == 1  # no reconnect
    # run() again refuses to start without a credential
    assert await AgentLink(link.config, timings=FAST).run() == 2


@pytest.mark.parametrize("raw", ["not json", '{"v":1,"type":"x","junk":1}', "binary"])
async def test_protocol_error_from_dmd_closes_and_reconnects(fake: tuple[FakeDmd, str], start: LinkFactory,
                                                             raw: str) -> None:
    dmd, _ = fake
    link, _ = await start()
    await eventually(lambda: link.connected)
    if raw == "binary":
        assert dmd.ws is not None
        await dmd.ws.send_bytes(b"\x00")
    else:
        await dmd.send(raw)
    await eventually(lambda: link.connects == 2, what="a reconnect")
    assert dmd.agent_close_codes[0] == p.CLOSE_PROTOCOL


@pytest.mark.parametrize("welcome", [{"protocol": 99}, {"node_id": 8}])
async def test_bad_welcome(fake: tuple[FakeDmd, str], start: LinkFactory, welcome: dict[str, Any]) -> None:
    dmd, _ = fake
    dmd.welcome = welcome
    link, _ = await start()
    await eventually(lambda: len(dmd.agent_close_codes) >= 2, what="two refused welcomes")
    assert set(dmd.agent_close_codes) == {p.CLOSE_PROTOCOL}
    assert link.connects == 0 and link.last_error is not None and "handshake failed" in link.last_error
    dmd.welcome = {}
    await eventually(lambda: link.connected)


async def test_no_welcome_times_out(fake: tuple[FakeDmd, str], start: LinkFactory) -> None:
    dmd, _ = fake
    dmd.raw_welcome = p.message(p.HEARTBEAT, {"seq": 1}).to_json()  # not a welcome
    link, _ = await start(timings=_with(FAST, welcome_timeout_s=0.3))
    await eventually(lambda: len(dmd.hellos) >= 2)
    assert link.last_error is not None and "expected welcome" in link.last_error


async def test_stop_while_unreachable(unused_tcp_port: int) -> None:
    config = AgentConfig(server=f"http://127.0.0.1:{unused_tcp_port}", node_id=1, credential="dmn_x")
    link = AgentLink(config, timings=_with(FAST, backoff_initial_s=5.0, backoff_max_s=5.0), facts_provider=_facts)
    task = asyncio.create_task(link.run())
    await eventually(lambda: link.last_error is not None)
    assert "cannot connect" in link.last_error  # type: ignore[operator]
    started = time.monotonic()
    await link.stop()
    assert await asyncio.wait_for(task, 5) == 0
    assert time.monotonic() - started < 2  # the 5 s backoff sleep was interrupted


async def test_stop_before_run() -> None:
    link = AgentLink(AgentConfig(server="http://127.0.0.1:9", node_id=1, credential="dmn_x"))
    await link.stop()
    assert await asyncio.wait_for(link.run(), 2) == 0


async def test_send_event(fake: tuple[FakeDmd, str], start: LinkFactory) -> None:
    dmd, _ = fake
    died = p.ContainerEvent(instance_id=3, container_id="c1", action="die", exit_code=137)
    assert await AgentLink(AgentConfig(server="http://h", node_id=1, credential="c")).send_event(died) is False
    link, _ = await start()
    await eventually(lambda: link.connected)
    assert await link.send_event(died) is True
    await eventually(lambda: bool(dmd.of_type(p.EVENT)))
    assert dmd.of_type(p.EVENT)[-1].data == {"kind": "container", "instance_id": 3, "container_id": "c1",
                                             "action": "die", "exit_code": 137}


async def test_backoff_resets_after_a_stable_link(fake: tuple[FakeDmd, str], start: LinkFactory,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "agent.link")
    dmd, _ = fake
    dmd.hold_s = [0.0, 0.0, 0.0, 0.5, 0.0]  # three short links, one that stays up past stable_after_s, one short
    timings = _with(FAST, backoff_initial_s=0.02, backoff_max_s=1.0, stable_after_s=0.3)
    link, _ = await start(timings=timings)
    await eventually(lambda: link.connects >= 6, what="six links")
    delays = [float(r.getMessage().rsplit("reconnecting in ", 1)[1].split()[0])
              for r in caplog.records if "reconnecting in" in r.getMessage()][:5]
    assert delays == [0.02, 0.04, 0.08, 0.02, 0.04]


# --------------------------------------------------------------------------- backoff


def test_backoff_sequence() -> None:
    b = Backoff(1.0, 60.0, jitter=0.2, rng=lambda: 0.5)  # 0.5: no jitter
    assert [b.next() for _ in range(9)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    b.reset()
    assert b.next() == 1.0
    assert b.longest() == 60.0


def test_backoff_jitter_bounds() -> None:
    low = Backoff(1.0, 60.0, jitter=0.2, rng=lambda: 0.0)
    high = Backoff(1.0, 60.0, jitter=0.2, rng=lambda: 1.0)
    assert [round(low.next(), 6) for _ in range(8)] == [0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 48.0, 48.0]
    assert [round(high.next(), 6) for _ in range(8)] == [1.2, 2.4, 4.8, 9.6, 19.2, 38.4, 60.0, 60.0]  # capped
    assert 48.0 <= Backoff(rng=lambda: 0.3).longest() <= 60.0


def test_backoff_random_stays_in_range() -> None:
    b = Backoff()
    for n in range(50):
        delay = b.next()
        base = min(60.0, 2.0 ** n)
        assert 0.8 * base <= delay <= min(60.0, 1.2 * base)


@pytest.mark.parametrize("kwargs", [{"initial": 0}, {"initial": 2, "maximum": 1}, {"jitter": 1.0}, {"factor": 0.5}])
def test_backoff_rejects_bad_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)


async def test_in_memory_config_rotation(fake: tuple[FakeDmd, str]) -> None:
    """dmd's in-process local node has no config file: a rotation is kept in memory."""
    dmd, url = fake
    link = AgentLink(AgentConfig(server=url, node_id=7, credential="dmn_good"), timings=FAST, facts_provider=_facts)
    task = asyncio.create_task(link.run())
    try:
        await eventually(lambda: link.connected)
        assert (await dmd.call(p.CREDENTIAL_ROTATE, {"credential": "dmn_mem"})).ok is True
        assert link.config.credential == "dmn_mem"
    finally:
        await link.stop()
        assert await asyncio.wait_for(task, 5) == 0


async def test_two_links_in_one_process(fake: tuple[FakeDmd, str], aiohttp_server: Any) -> None:
    _, url = fake
    other = FakeDmd()
    other_url = str((await aiohttp_server(other.app)).make_url("/prefix"))
    links = [AgentLink(AgentConfig(server=u, node_id=7, credential="dmn_good"), timings=FAST, facts_provider=_facts)
             for u in (url, other_url)]
    tasks = [asyncio.create_task(link.run()) for link in links]
    await eventually(lambda: all(link.connected for link in links))
    await links[0].stop()
    assert await asyncio.wait_for(tasks[0], 5) == 0
    assert links[1].connected and (await other.call(p.PING)).ok is True
    await links[1].stop()
    assert await asyncio.wait_for(tasks[1], 5) == 0

