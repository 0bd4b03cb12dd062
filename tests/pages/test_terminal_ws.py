"""The terminal's WebSocket and the file routes without a browser (aiohttp's test client): what is
refused before the upgrade (no session, an API token, another site's Origin, a missing or wrong
CSRF token, bad sizes, an instance the caller may not use), and the pump between the browser and
a stream (keystrokes, output, resize controls, malformed controls, an oversized frame, the end).

The use case is replaced by one that hands out in-memory streams (tests/memory_stream.py) and
refuses what the real one refuses for an instance the caller may not see (404); the real use
case, agent and container are in tests/pages/test_terminal_browser.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import tarfile
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient

from agent.protocol import CopyParams, ExecParams, StreamEnd, StreamOpen
from dmd.core import DM
from dmd.errors import NotFound
from dmd.pages import terminal as terminal_page
from dmd.usecases import streams as streams_uc
from tests.conftest import add_user, make_token
from tests.memory_stream import MemoryStream, pair
from tests.pages.conftest import get_csrf, page_login

MINE = 7  # the instance alice may use; any other id is not hers


class Streams:
    """Stands in for the use case instance_stream: alice may use instance MINE (as the use case,
    anything else is a 404); the agent's ends are kept."""

    def __init__(self) -> None:
        self.opened: list[tuple[str, int, Any, str]] = []
        self.agent_ends: asyncio.Queue[MemoryStream] = asyncio.Queue()
        self.closed_by_dmd: list[MemoryStream] = []

    @contextlib.asynccontextmanager
    async def instance_stream(self, dm: Any, actor: Any, user: Any, instance_id: int, opening: StreamOpen, *,
                              via: str, key_id: int | None = None) -> AsyncIterator[streams_uc.Opened]:
        params = getattr(opening, opening.kind)
        self.opened.append((user.username, instance_id, params, via))
        if instance_id != MINE or user.username != "alice":
            raise NotFound("no such instance")
        ours, theirs = pair(opening)
        self.agent_ends.put_nowait(theirs)
        try:
            yield streams_uc.Opened(ours, None, via)  # type: ignore[arg-type]
        finally:
            await ours.close(StreamEnd("closed", "closed by dmd"))  # as the use case does


@pytest.fixture
def streams(monkeypatch: pytest.MonkeyPatch) -> Streams:
    s = Streams()
    monkeypatch.setattr(streams_uc, "instance_stream", s.instance_stream)
    return s


@pytest.fixture
async def alice(client: TestClient) -> str:  # type: ignore[type-arg]
    """alice logged in through the pages; returns her CSRF token."""
    await add_user(client, "alice@example.org", username="alice")
    await page_login(client, "alice@example.org")
    return await get_csrf(client, "/account")


def _origin(client: TestClient) -> str:  # type: ignore[type-arg]
    return str(client.make_url("")).rstrip("/")


def _ws_url(iid: int = MINE, **query: str) -> str:
    q = "&".join(f"{k}={v}" for k, v in query.items())
    return f"/instances/{iid}/terminal/ws?{q}"


async def _refused(client: TestClient, url: str, headers: dict[str, str], status: int,  # type: ignore[type-arg]
                   code: str | None) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as excinfo:
        await client.ws_connect(url, headers=headers)
    assert excinfo.value.status == status, excinfo.value
    if code is not None:  # the same refusal as a plain GET (not upgraded), to read its reason
        r = await client.get(url, headers=headers)
        assert r.status == status
        assert code in await r.text()


async def test_refused_before_the_upgrade(client: TestClient, alice: str, streams: Streams) -> None:  # type: ignore[type-arg]
    origin = {"Origin": _origin(client)}
    # Another site's page, no Origin at all, a look-alike host.
    for bad in ({"Origin": "http://evil.example"}, {}, {"Origin": _origin(client) + ".evil.example"},
                {"Origin": "null"}):
        await _refused(client, _ws_url(csrf=alice), bad, 403, "Origin is not this site")
    # No CSRF token, a wrong one.
    await _refused(client, _ws_url(), origin, 403, "CSRF")
    await _refused(client, _ws_url(csrf=alice[:-2] + "xx"), origin, 403, "CSRF")
    # Sizes out of bounds.
    for cols, rows in (("0", "24"), ("80", "1001"), ("-1", "5"), ("abc", "24")):
        await _refused(client, _ws_url(csrf=alice, cols=cols, rows=rows), origin, 400, "cols and rows")
    # A shell is a path, never a command line.
    for shell in ("bash", "/bin/sh%20-c%20id", "/bin/$(id)", "/bin/sh;id", "/" + "x" * 300):
        await _refused(client, _ws_url(csrf=alice, **{"shell": shell}), origin, 400, "shell must be an absolute path")
    assert streams.opened == []  # none of these reached the use case
    # An instance she may not use, and one that does not exist: the same 403.
    await _refused(client, _ws_url(8, csrf=alice), origin, 403, None)
    await _refused(client, _ws_url(999999, csrf=alice), origin, 403, None)
    assert [i for _, i, *_ in streams.opened] == [8, 999999]
    # A plain GET (no upgrade) never opens a stream.
    r = await client.get(_ws_url(csrf=alice), headers=origin)
    assert r.status == 400 and "WebSocket only" in await r.text()
    assert len(streams.opened) == 2


async def test_only_a_browser_session_opens_one(client: TestClient, streams: Streams) -> None:  # type: ignore[type-arg]
    await add_user(client, "alice@example.org", username="alice")
    origin = {"Origin": _origin(client)}
    await _refused(client, _ws_url(csrf="x"), origin, 401, "sign in first")
    token = await make_token(client, "alice@example.org")
    await _refused(client, _ws_url(csrf="x"), {**origin, **token}, 403, "session_only")
    assert streams.opened == []


async def test_another_user_is_refused(client: TestClient, streams: Streams) -> None:  # type: ignore[type-arg]
    await add_user(client, "bob@example.org", username="bob")
    await page_login(client, "bob@example.org")
    csrf = await get_csrf(client, "/account")
    await _refused(client, _ws_url(csrf=csrf), {"Origin": _origin(client)}, 403, None)
    assert [(u, i) for u, i, *_ in streams.opened] == [("bob", MINE)]


async def test_the_pump(client: TestClient, alice: str, streams: Streams) -> None:  # type: ignore[type-arg]
    ws = await client.ws_connect(_ws_url(csrf=alice, cols="120", rows="40"), headers={"Origin": _origin(client)})
    agent = await asyncio.wait_for(streams.agent_ends.get(), 5)
    assert streams.opened[0][1:] == (MINE, ExecParams(tty=True, cols=120, rows=40), "terminal")

    await ws.send_bytes("echo héllo\r".encode())
    assert await asyncio.wait_for(agent.read(), 5) == "echo héllo\r".encode()
    await agent.write("héllo\r\n".encode())
    msg = await ws.receive(timeout=5)
    assert msg.type == WSMsgType.BINARY and msg.data == "héllo\r\n".encode()

    await ws.send_str(json.dumps({"resize": [100, 30]}))
    assert await asyncio.wait_for(agent.next_control(), 5) == {"resize": {"cols": 100, "rows": 30}}
    for bad in ("not json", json.dumps({"resize": [0, 30]}), json.dumps({"resize": [100, 1001]}),
                json.dumps({"resize": [True, 3]}), json.dumps({"paste": "x"}), json.dumps([1, 2])):
        await ws.send_str(bad)
        reply = await ws.receive(timeout=5)
        assert reply.type == WSMsgType.TEXT and "error" in json.loads(reply.data), bad
    await ws.send_bytes(b"still here")  # refused controls disturb nothing
    assert await asyncio.wait_for(agent.read(), 5) == b"still here"

    await agent.close(StreamEnd("closed", "the shell exited", exit_status=3))
    end = await ws.receive(timeout=5)
    assert json.loads(end.data) == {"end": {"code": "closed", "reason": "the shell exited", "exit_status": 3}}
    assert (await ws.receive(timeout=5)).type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
    await ws.close()


async def test_the_browser_closing_ends_the_stream(client: TestClient, alice: str,  # type: ignore[type-arg]
                                                    streams: Streams) -> None:
    ws = await client.ws_connect(_ws_url(csrf=alice), headers={"Origin": _origin(client)})
    agent = await asyncio.wait_for(streams.agent_ends.get(), 5)
    await ws.close()
    end = await asyncio.wait_for(agent.wait_closed(), 5)
    assert end.reason == "the browser closed the terminal"


async def test_an_oversized_frame_closes_the_terminal(client: TestClient, alice: str,  # type: ignore[type-arg]
                                                       streams: Streams) -> None:
    ws = await client.ws_connect(_ws_url(csrf=alice), headers={"Origin": _origin(client)})
    agent = await asyncio.wait_for(streams.agent_ends.get(), 5)
    await ws.send_bytes(b"x" * (terminal_page.MAX_INPUT + 1))
    msg = await ws.receive(timeout=5)
    assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED) and ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    await asyncio.wait_for(agent.wait_closed(), 5)
    assert agent.bytes_in == 0  # nothing of it reached the shell


# --- files ------------------------------------------------------------------------------------

def _members(body: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(body)) as t:
        return {m.name: t.extractfile(m).read() for m in t.getmembers() if m.isfile()}  # type: ignore[union-attr]


async def _agent_reads_all(agent: MemoryStream) -> bytes:
    got = bytearray()
    while chunk := await agent.read():
        got += chunk
    return bytes(got)


async def test_upload_wraps_the_file_in_a_tar(client: TestClient, alice: str,  # type: ignore[type-arg]
                                              streams: Streams) -> None:
    body = "日本語\n".encode() * 40_000  # several chunks, not a multiple of 512
    upload = asyncio.ensure_future(client.post(f"/instances/{MINE}/files?dir=/root/x/../data&name=ノート.txt",
                                               data=body, headers={"X-CSRF-Token": alice}))
    agent = await asyncio.wait_for(streams.agent_ends.get(), 5)
    assert agent.open.copy == CopyParams("in", "/root/data")
    tar = await asyncio.wait_for(_agent_reads_all(agent), 10)
    assert _members(tar) == {"ノート.txt": body}
    await agent.close(StreamEnd("closed"))
    r = await upload
    assert r.status == 200 and await r.json() == {"path": "/root/data/ノート.txt", "size": len(body)}
    assert streams.opened[0][3] == "files"


async def test_upload_refusals(client: TestClient, alice: str, streams: Streams,  # type: ignore[type-arg]
                               monkeypatch: pytest.MonkeyPatch) -> None:
    csrf = {"X-CSRF-Token": alice}
    for name in ("..", ".", "a/b", "../etc/passwd", "", "a\\b", "x\x00y", "é" * 200):
        r = await client.post(f"/instances/{MINE}/files?dir=/root", params={"name": name}, data=b"x", headers=csrf)
        assert r.status == 400 and (await r.json())["error"]["field"] == "name", name
    for d in ("", "relative", "/a\x00b"):
        r = await client.post(f"/instances/{MINE}/files", params={"dir": d, "name": "f"}, data=b"x", headers=csrf)
        assert r.status == 400 and (await r.json())["error"]["field"] == "dir", d
    r = await client.post(f"/instances/{MINE}/files?dir=/root&name=f", data=b"x")  # no CSRF token
    assert r.status == 403
    r = await client.post("/instances/8/files?dir=/root&name=f", data=b"x", headers=csrf)
    assert r.status == 403 and "no instance you may use" in (await r.json())["error"]["message"]
    client.app[DM].config.file_upload_max_bytes = 1000
    r = await client.post(f"/instances/{MINE}/files?dir=/root&name=f", data=b"x" * 1001, headers=csrf)
    assert r.status == 413
    assert [i for _, i, *_ in streams.opened] == [8]  # only the refused instance reached the use case


async def test_upload_the_agent_refuses(client: TestClient, alice: str, streams: Streams) -> None:  # type: ignore[type-arg]
    upload = asyncio.ensure_future(client.post(f"/instances/{MINE}/files?dir=/nowhere&name=f", data=b"x",
                                               headers={"X-CSRF-Token": alice}))
    agent = await asyncio.wait_for(streams.agent_ends.get(), 5)
    await agent.close(StreamEnd("not_found", "Could not find the directory /nowhere"))
    r = await upload
    assert r.status == 404 and "/nowhere" in (await r.json())["error"]["message"]


async def test_download(client: TestClient, alice: str, streams: Streams) -> None:  # type: ignore[type-arg]
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as t:
        info = tarfile.TarInfo("données/a.txt")
        info.size = 3
        t.addfile(info, io.BytesIO(b"abc"))

    async def agent_side() -> None:
        agent = await streams.agent_ends.get()
        assert agent.open.copy == CopyParams("out", "/srv/données")
        body = tar.getvalue()
        for i in range(0, len(body), 1000):
            await agent.write(body[i:i + 1000])
        await agent.write_eof()
        await agent.close(StreamEnd("closed"))

    side = asyncio.ensure_future(agent_side())
    r = await client.get(f"/instances/{MINE}/files", params={"path": "/srv/données/"})
    assert r.status == 200 and r.headers["Content-Type"] == "application/x-tar"
    assert r.headers["Content-Disposition"] == (
        "attachment; filename=\"donn_es.tar\"; filename*=UTF-8''donn%C3%A9es.tar")
    assert _members(await r.read()) == {"données/a.txt": b"abc"}
    await side

    async def not_found() -> None:
        agent = await streams.agent_ends.get()
        await agent.close(StreamEnd("not_found", "Could not find the file /nope"))

    side = asyncio.ensure_future(not_found())
    r = await client.get(f"/instances/{MINE}/files", params={"path": "/nope"})
    assert r.status == 404 and "/nope" in await r.text()
    await side
    r = await client.get(f"/instances/{MINE}/files", params={"path": "relative"})
    assert r.status == 400
    r = await client.get("/instances/8/files", params={"path": "/root"})
    assert r.status == 403


@pytest.mark.parametrize(("config", "headers", "origin", "ok"), [
    # Behind a trusted proxy the site is what the proxy says the browser used.
    ({"trust_proxy": ["127.0.0.1/32"]}, {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "dm.example"},
     "https://dm.example", True),
    ({"trust_proxy": ["127.0.0.1/32"]}, {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "dm.example"},
     "http://dm.example", False),  # the scheme counts
    ({"trust_proxy": ["127.0.0.1/32"]}, {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "dm.example:443"},
     "https://DM.example", True),  # default port and case do not
    # Forwarded headers from a peer nobody trusts are the client's own words: ignored.
    ({}, {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"}, "https://evil.example", False),
    # The configured public URL is the site too.
    ({"public_url": "https://dm.example/"}, {}, "https://dm.example", True),
    ({"public_url": "https://dm.example/"}, {}, "https://other.example", False),
])
async def test_origin_as_the_proxy_and_public_url_say(make_client: Any, streams: Streams, config: dict[str, Any],
                                                      headers: dict[str, str], origin: str, ok: bool) -> None:
    client = await make_client(**config)
    await add_user(client, "alice@example.org", username="alice")
    await page_login(client, "alice@example.org")
    csrf = await get_csrf(client, "/account")
    if ok:
        ws = await client.ws_connect(_ws_url(csrf=csrf), headers={**headers, "Origin": origin})
        await ws.close()
    else:
        await _refused(client, _ws_url(csrf=csrf), {**headers, "Origin": origin}, 403, "Origin is not this site")


async def test_the_shell_she_chose_is_what_runs(client: TestClient, alice: str, streams: Streams) -> None:  # type: ignore[type-arg]
    chosen_url = _ws_url(csrf=alice, **{"shell": "/bin/zsh"})  # a query parameter, not subprocess's shell=
    ws = await client.ws_connect(chosen_url, headers={"Origin": _origin(client)})
    await ws.close()
    ws = await client.ws_connect(_ws_url(csrf=alice), headers={"Origin": _origin(client)})
    await ws.close()
    chosen, default = (params for _, _, params, _ in streams.opened)
    assert chosen.cmd == ["/bin/zsh"] and chosen.tty
    assert default.cmd == []  # nothing chosen: the agent picks the login shell, else bash, else sh
