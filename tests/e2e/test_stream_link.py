"""Streams between dmd and a real agent process over a real WebSocket: a 1 GiB copy into an
instance on one stream while the agent's heartbeats keep their schedule and another stream's
one-byte round trip stays fast (data never queues in front of control or other streams)."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import sys
import time

import pytest

from agent import protocol as p
from dmd.core import DM
from tests.e2e.procs import Agent
from tests.instances.conftest import wait_status
from tests.leftovers import remove_installation
from tests.runtime.conftest import docker_test_image  # noqa: F401 (fixture: builds the busybox image)
from tests.runtime.images import BUSYBOX_REF
from tests.waiting import wait_for

pytestmark = pytest.mark.slow

# Port 9000 echoes, 9001 swallows: busybox alone.
COMMAND = ["/bin/busybox", "sh", "-c",
           "/bin/busybox nc -ll -p 9001 -e /bin/busybox dd of=/dev/null bs=65536 2>/dev/null & "
           "exec /bin/busybox nc -ll -p 9000 -e /bin/busybox cat"]
GIB = 1 << 30


async def test_bulk_stream_leaves_heartbeats_and_keystrokes_alone(client, admin, tmp_path, docker_test_image):  # noqa: F811
    dm = client.app[DM]
    dm.hub.heartbeat_s = 1.0  # what the welcome tells the agent: a beat a second
    r = await client.post("/api/v1/nodes", json={"name": "streams-node"}, headers=admin)
    assert r.status == 201, await r.text()
    token = (await r.json())["join_token"]
    agent = Agent([sys.executable, "-m", "agent"], tmp_path / "node.json")
    joined = await asyncio.to_thread(agent.join, str(client.make_url("")).rstrip("/"), token)
    assert joined.returncode == 0, joined.stderr
    await asyncio.to_thread(agent.start)
    try:
        node_id = agent.node_id
        await wait_for(lambda: dm.hub.is_online(node_id), "the agent online", 30)
        heartbeat_s = dm.hub.heartbeat_s
        r = await client.post("/api/v1/instances", json={"name": "sink", "image": BUSYBOX_REF, "node_id": node_id,
                                                         "command": COMMAND, "ssh": False}, headers=admin)
        assert r.status == 201, await r.text()
        iid = int((await r.json())["id"])
        await wait_status(client, admin, iid, "running", 60)

        beats: list[float] = []
        conn = dm.hub.conns[node_id]
        dm.hub.incoming.register(p.Heartbeat, lambda c, msg: beats.append(time.monotonic()) if c is conn else None)

        async def opened(port: int) -> p.Stream:
            async def attempt() -> p.Stream | None:
                try:
                    return await dm.hub.open_stream(node_id, p.StreamOpen("tcp", iid, tcp=p.TcpParams(port)))
                except p.StreamRefused:
                    return None  # nc not listening yet
            return await wait_for(attempt, f"port {port} open", 15)

        echo, sink = await opened(9000), await opened(9001)

        async def bulk() -> float:
            block = b"\xa5" * p.CHUNK
            started = time.monotonic()
            # At least a gibibyte, and for at least five heartbeats.
            while sink.bytes_out < GIB or time.monotonic() - started < 5 * heartbeat_s:
                await sink.write(block)
            return time.monotonic() - started

        rtts: list[float] = []

        async def keystrokes(done: asyncio.Future[float]) -> None:
            while not done.done():
                t0 = time.monotonic()
                await echo.write(b"k")
                assert await echo.read() == b"k"
                rtts.append(time.monotonic() - t0)
                await asyncio.sleep(0.02)

        first_beat = len(beats)
        transfer = asyncio.ensure_future(bulk())
        await asyncio.gather(transfer, keystrokes(transfer))
        seconds = transfer.result()
        assert sink.bytes_out >= GIB
        during = beats[first_beat:]
        gaps = [b - a for a, b in itertools.pairwise(during)]
        print(f"{sink.bytes_out / GIB:.1f} GiB in {seconds:.1f} s ({sink.bytes_out / seconds / 1e6:.0f} MB/s); "
              f"{len(rtts)} round trips, median "
              f"{statistics.median(rtts) * 1e3:.1f} ms, p95 {statistics.quantiles(rtts, n=20)[-1] * 1e3:.1f} ms, "
              f"max {max(rtts) * 1e3:.1f} ms; heartbeat gaps max {max(gaps, default=0):.2f} s")
        # Heartbeats every interval while the copy runs (dmd drops a link after three missed).
        assert len(during) >= seconds / heartbeat_s - 2
        assert max(gaps) < 2 * heartbeat_s
        # The keystrokes did not queue behind the gigabyte.
        assert statistics.median(rtts) < 0.050
        assert statistics.quantiles(rtts, n=20)[-1] < 0.050
        assert dm.hub.is_online(node_id)
        for s in (echo, sink):
            await s.close()
    finally:
        await asyncio.to_thread(agent.stop)
        await remove_installation(dm.hub.installation_id)
