"""Byte streams into running instances through dmd, its agent link and the real Docker Engine:
exec with a terminal, a TCP connection to the instance's port, its logs; who may open them, how
many, and what ends them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agent import protocol as p
from dmd.core import DM
from dmd.errors import ApiError, NotFound
from dmd.models import Actor, User
from dmd.usecases import accounts, instances
from dmd.usecases.streams import instance_stream
from tests.conftest import add_user, make_token
from tests.instances.conftest import IMAGE, wait_status

# An HTTP server and a line every 0.2 s, from busybox alone.
SERVE = ["/bin/sh", "-c", "mkdir -p /www && echo hello-from-inside > /www/index.html && httpd -p 8080 -h /www && "
         "i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.2; done"]


async def running(client, headers, node_id: int, name: str, command: list[str] = SERVE) -> int:
    r = await client.post("/api/v1/instances", json={"name": name, "image": IMAGE, "node_id": node_id,
                                                     "command": command, "ssh": False}, headers=headers)
    assert r.status == 201, await r.text()
    iid = int((await r.json())["id"])
    await wait_status(client, headers, iid, "running", 60)
    return iid


async def user_named(client, name: str) -> User:
    dm = client.app[DM]
    for u in await accounts.list_users(dm, limit=100):
        if u.username == name:
            return u
    raise AssertionError(f"no user {name}")


async def read_until(stream: p.Stream, marker: bytes, timeout: float = 10) -> bytes:
    got = b""
    async with asyncio.timeout(timeout):
        while marker not in got:
            data = await stream.read()
            if not data:
                raise AssertionError(f"stream ended before {marker!r}: {got!r}, {stream.end}")
            got += data
    return got


async def test_tcp_logs_and_who_may_open(client, admin, local):
    dm = client.app[DM]
    iid = await running(client, admin, local["id"], "web")
    root = await user_named(client, "admin")
    actor = Actor(root, "127.0.0.1")

    # A TCP connection to the instance's own port: HTTP through the link.
    async with instance_stream(dm, actor, root, iid, p.StreamOpen("tcp", iid, tcp=p.TcpParams(8080)),
                               via="tunnel") as opened:
        await opened.stream.write(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
        await opened.stream.write_eof()
        reply = await read_until(opened.stream, b"hello-from-inside")
        assert reply.startswith(b"HTTP/1.")

    # Nothing listening: refused with the reason, no stream left open.
    with pytest.raises(ApiError) as err:
        async with instance_stream(dm, actor, root, iid, p.StreamOpen("tcp", iid, tcp=p.TcpParams(8081)),
                                   via="tunnel"):
            pass
    assert err.value.status == 502 and "nothing listens" in str(err.value)

    # The logs: the last lines, then new ones pushed as they come.
    async with instance_stream(dm, actor, root, iid, p.StreamOpen("logs", iid, logs=p.LogsParams(tail=1)),
                               via="logs") as opened:
        first = await read_until(opened.stream, b"\n")
        n = int(first.split(b"tick-")[1].split(b"\n")[0])
        later = await read_until(opened.stream, f"tick-{n + 3}\n".encode())
        assert f"tick-{n + 1}\n".encode() in first + later

    # Another user does not see the instance at all; a stopped instance is refused.
    await add_user(client, "eve@example.org")
    eve = await user_named(client, "eve")
    with pytest.raises(NotFound):
        async with instance_stream(dm, Actor(eve), eve, iid, p.StreamOpen("tcp", iid, tcp=p.TcpParams(8080)),
                                   via="tunnel"):
            pass

    # The audit says who, how, how much.
    r = await client.get("/api/v1/audit?limit=50", headers=admin)
    entries = [e for e in (await r.json())["items"] if e["action"].startswith("session.")]
    closes = [e for e in entries if e["action"] == "session.close" and e["detail"]["via"] == "tunnel"]
    assert closes and closes[-1]["detail"]["bytes_in"] > 0 and closes[-1]["detail"]["bytes_out"] > 0
    assert {e["action"] for e in entries} == {"session.open", "session.close"}


async def test_stopping_the_instance_or_disabling_the_user_ends_streams(client, admin, local):
    dm = client.app[DM]
    await add_user(client, "ann@example.org", role="admin")  # a second administrator: she may use the image
    ann_headers = await make_token(client, "ann@example.org")
    ann = await user_named(client, "ann")
    iid = await running(client, ann_headers, local["id"], "ann-web")

    async def hold(opened_box: dict[str, Any], ready: asyncio.Event) -> p.StreamEnd:
        async with instance_stream(dm, Actor(ann), ann, iid, p.StreamOpen("logs", iid, logs=p.LogsParams(tail=0)),
                                   via="logs") as opened:
            opened_box["stream"] = opened.stream
            ready.set()
            while await opened.stream.read():
                pass
            return await opened.stream.wait_closed()

    box: dict[str, Any] = {}
    ready = asyncio.Event()
    task = asyncio.ensure_future(hold(box, ready))
    await asyncio.wait_for(ready.wait(), 15)
    assert dm.live.count(user_id=ann.id) == 1
    r = await client.patch(f"/api/v1/users/{ann.id}", json={"disabled": True}, headers=admin)
    assert r.status == 200, await r.text()
    end = await asyncio.wait_for(task, 10)
    assert end.code == "revoked" and "disabled" in end.reason
    assert dm.live.count(user_id=ann.id) == 0

    # Stopping the instance ends the sessions into it.
    root = await user_named(client, "admin")
    box, ready = {}, asyncio.Event()

    async def hold_root() -> p.StreamEnd:
        async with instance_stream(dm, Actor(root), root, iid, p.StreamOpen("tcp", iid, tcp=p.TcpParams(8080)),
                                   via="tunnel") as opened:
            ready.set()
            while await opened.stream.read():
                pass
            return await opened.stream.wait_closed()

    task = asyncio.ensure_future(hold_root())
    await asyncio.wait_for(ready.wait(), 15)
    await instances.stop(dm, Actor(root), root, iid)
    end = await asyncio.wait_for(task, 10)
    assert end.code == "revoked" and "stopped" in end.reason


async def test_sessions_per_user_are_limited(client, admin, local):
    dm = client.app[DM]
    dm.config.streams_per_user = 2
    iid = await running(client, admin, local["id"], "many")
    root = await user_named(client, "admin")
    opening = p.StreamOpen("tcp", iid, tcp=p.TcpParams(8080))
    async with instance_stream(dm, Actor(root), root, iid, opening, via="tunnel"), \
            instance_stream(dm, Actor(root), root, iid, opening, via="tunnel"):
        with pytest.raises(ApiError) as err:
            async with instance_stream(dm, Actor(root), root, iid, opening, via="tunnel"):
                pass
        assert err.value.status == 429 and "2 terminals" in str(err.value)
    async with instance_stream(dm, Actor(root), root, iid, opening, via="tunnel"):
        pass  # closed ones free their places


async def test_a_terminal_in_the_instance(client, admin, local):
    dm = client.app[DM]
    iid = await running(client, admin, local["id"], "term")
    root = await user_named(client, "admin")
    opening = p.StreamOpen("exec", iid, exec=p.ExecParams(cols=100, rows=30, env={"LANG": "C.UTF-8"}))
    async with instance_stream(dm, Actor(root), root, iid, opening, via="terminal") as opened:
        s = opened.stream
        await s.write(b"echo dm-$((6*7)); stty size; echo $0\n")
        out = await read_until(s, b"sh\r\n")
        assert b"dm-42" in out and b"30 100" in out  # a terminal of the size asked for
        assert b"/bin/sh" in out  # busybox has no bash: the shell is sh
        s.control({"resize": {"cols": 132, "rows": 43}})
        s.control({"resize": {"cols": 0, "rows": 10**9}})  # out of bounds: ignored, nothing breaks
        await asyncio.sleep(0.2)
        await s.write("stty size; echo ü-€\n".encode())
        out = await read_until(s, "ü-€\r\n".encode())
        assert b"43 132" in out
        await s.write(b"exit 7\n")
        end = await asyncio.wait_for(s.wait_closed(), 10)
        assert (end.code, end.exit_status) == ("exited", 7)

    # A command without a terminal: output and status; bounds refused before anything runs.
    opening = p.StreamOpen("exec", iid, exec=p.ExecParams(cmd=["/bin/sh", "-c", "cat; exit 3"], tty=False))
    async with instance_stream(dm, Actor(root), root, iid, opening, via="terminal") as opened:
        await opened.stream.write(b"through stdin")
        await opened.stream.write_eof()
        assert await read_until(opened.stream, b"stdin") == b"through stdin"
        end = await asyncio.wait_for(opened.stream.wait_closed(), 10)
        assert end.exit_status == 3
    with pytest.raises(ApiError) as err:
        bad = p.StreamOpen("exec", iid, exec=p.ExecParams(cols=5000))
        async with instance_stream(dm, Actor(root), root, iid, bad, via="terminal"):
            pass
    assert err.value.status == 422 and "terminal size" in str(err.value)


async def test_the_shell_is_the_login_shell_else_bash_else_sh(client, admin, local, test_images):
    openssh, _ = test_images
    dm = client.app[DM]
    root = await user_named(client, "admin")
    iid = await running(client, admin, local["id"], "bbox", ["/bin/sleep", "infinity"])
    r = await client.post("/api/v1/instances", json={"name": "deb", "image": openssh, "node_id": local["id"],
                                                     "command": ["/bin/sleep", "infinity"], "ssh": False},
                          headers=admin)
    assert r.status == 201, await r.text()
    deb = int((await r.json())["id"])
    await wait_status(client, admin, deb, "running", 60)
    for instance_id, shell in ((deb, b"bash"), (iid, b"sh")):  # Debian: root's /bin/bash; busybox: sh
        opening = p.StreamOpen("exec", instance_id, exec=p.ExecParams())
        async with instance_stream(dm, Actor(root), root, instance_id, opening, via="terminal") as opened:
            await opened.stream.write(b"echo shell=$0=$((40+2))\n")
            out = await read_until(opened.stream, b"=42\r\n")
            assert out.split(b"shell=")[-1].split(b"=")[0].endswith(shell), out
    # The user's choice wins.
    opening = p.StreamOpen("exec", deb, exec=p.ExecParams(cmd=["/bin/sh"]))
    async with instance_stream(dm, Actor(root), root, deb, opening, via="terminal") as opened:
        await opened.stream.write(b"echo shell=$0=$((40+2))\n")
        assert b"shell=/bin/sh=42" in await read_until(opened.stream, b"shell=/bin/sh=42")
