"""Where the time goes: an instance start and a new port map, end to end, stage by stage.

    python bench/profile_paths.py [--rounds 15] [--no-docs]

dmd and its local node run in this process (the same code `dmd serve --local-node` runs), on
SQLite, and every stage is timed where it happens: the API request as the client sees it, each
database transaction, the reconcile round, each request to the agent as dmd sees it (the hub's
round trip), the agent's handler, each Docker Engine call, `iptables-restore`, the reading of
host ports. For each operation the stages that overlap its window are summed; the table gives
the medians over the rounds. Stages overlap each other (a round holds the hub's round trip,
which holds the agent's handler, which holds the Engine's calls), so the rows do not add up:
read them as nested. Written to docs/BENCHMARKS.md under "Where the time goes".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from live_dmd import cpu_model, free_port  # noqa: E402
from sections import write_section  # noqa: E402

START, END = "<!-- bench:profile:start -->", "<!-- bench:profile:end -->"
EVENTS: list[tuple[float, float, str]] = []  # (start, end, stage)


def timed(label: str | Callable[..., str]) -> Callable[[Any], Any]:
    """Wrap a coroutine function so that each call is recorded as one stage."""

    def wrap(fn: Any) -> Any:
        @functools.wraps(fn)
        async def inner(*a: Any, **kw: Any) -> Any:
            started = time.perf_counter()
            try:
                return await fn(*a, **kw)
            finally:
                EVENTS.append((started, time.perf_counter(), label(*a, **kw) if callable(label) else label))

        return inner

    return wrap


def timed_cm(label: str) -> Callable[[Any], Any]:
    """The same for an async context manager method (a transaction)."""

    def wrap(fn: Any) -> Any:
        @functools.wraps(fn)
        @contextlib.asynccontextmanager
        async def inner(*a: Any, **kw: Any) -> AsyncIterator[Any]:
            started = time.perf_counter()
            try:
                async with fn(*a, **kw) as value:
                    yield value
            finally:
                EVENTS.append((started, time.perf_counter(), label))

        return inner

    return wrap


def instrument() -> None:
    from agent.ports.kernel import KernelForwarder
    from agent.ports.manager import PortForwarding
    from agent.runtime.docker import DockerDriver
    from agent.workloads import Workloads
    from dmd.agents.hub import Hub
    from dmd.db.engine import Database
    from dmd.reconciler.round import Executor

    Database.begin = timed_cm("db: write transaction")(Database.begin)  # type: ignore[method-assign]
    Database.read = timed_cm("db: read transaction")(Database.read)  # type: ignore[method-assign]
    Executor.round = timed("reconcile round")(Executor.round)  # type: ignore[method-assign]
    Hub.ask = timed(lambda self, node_id, req, *a, **kw: f"hub round trip: {req.TYPE}")(Hub.ask)  # type: ignore[method-assign]
    for name in ("ensure", "remove", "inspect", "sync"):
        setattr(Workloads, name, timed(f"agent: instance.{name}")(getattr(Workloads, name)))
    PortForwarding.handle_apply = timed("agent: ports.apply")(PortForwarding.handle_apply)  # type: ignore[method-assign]
    PortForwarding.listening = timed("agent: host ports in use (/proc)")(PortForwarding.listening)  # type: ignore[method-assign]
    KernelForwarder.apply = timed("agent: kernel rules")(KernelForwarder.apply)  # type: ignore[method-assign]
    KernelForwarder._restore = timed("iptables-restore")(KernelForwarder._restore)  # type: ignore[method-assign]
    for name in ("create", "start", "inspect", "_list", "remove"):
        setattr(DockerDriver, name, timed(f"engine: {name.strip('_')}")(getattr(DockerDriver, name)))


def calls(windows: list[tuple[float, float]]) -> dict[str, float]:
    """For each stage: how many of its calls fall inside the windows, per window."""
    out: dict[str, float] = defaultdict(float)
    for started, ended, label in EVENTS:
        if any(min(ended, w1) > max(started, w0) for w0, w1 in windows):
            out[label] += 1 / len(windows)
    return out


def breakdown(windows: list[tuple[float, float]]) -> dict[str, list[float]]:
    """For each stage: its summed time inside each window (ms)."""
    per: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(windows))
    for started, ended, label in EVENTS:
        for i, (w0, w1) in enumerate(windows):
            overlap = min(ended, w1) - max(started, w0)
            if overlap > 0:
                per[label][i] += overlap * 1000
    return per


async def serve(data: Path) -> tuple[web.AppRunner, str, Any]:
    from dmd.app import create_app
    from dmd.auth import passwords
    from dmd.config import Config
    from dmd.core import DM
    from dmd.queries import users

    port = free_port()
    cfg = Config(data_dir=str(data), listen=f"127.0.0.1:{port}", local_node=True).validate()
    app = await create_app(cfg)
    dm = app[DM]
    async with dm.db.begin() as conn:
        await users.create(conn, email="bench@example.org", password_hash=await passwords.hash_password("pw-bench-12"),
                           role="admin")
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    await dm.local_node.start(base)
    return runner, base, dm


async def run(rounds: int) -> dict[str, Any]:
    import subprocess

    from tests.runtime.images import BUSYBOX_REF, OPENSSH_REF

    subprocess.run([sys.executable, "-m", "tests.runtime.images"], cwd=REPO, check=True)
    instrument()
    data = Path(tempfile.mkdtemp(prefix="dm-profile-"))
    runner, base, dm = await serve(data)
    out: dict[str, Any] = {}
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
            login = {"email": "bench@example.org", "password": "pw-bench-12"}
            r = await s.post(f"{base}/api/v1/auth/login", json=login)
            csrf = (await r.json())["csrf_token"]
            r = await s.post(f"{base}/api/v1/tokens", json={"name": "p"}, headers={"X-CSRF-Token": csrf})
            h = {"Authorization": f"Bearer {(await r.json())['token']}"}
        async with aiohttp.ClientSession() as s:
            for _ in range(300):
                imgs = await (await s.get(f"{base}/api/v1/nodes/{dm.local_node.node_id}/images", headers=h)).json()
                if {BUSYBOX_REF, OPENSSH_REF} <= {i["ref"] for i in imgs}:
                    break
                await asyncio.sleep(0.1)
            out["start"] = await starts(s, base, h, rounds, BUSYBOX_REF)
            out["port_map"] = await port_maps(s, base, h, rounds, OPENSSH_REF)
    finally:
        await runner.cleanup()
        from tests.leftovers import remove_installation

        await remove_installation(dm.hub.installation_id)
    return out


async def starts(s: aiohttp.ClientSession, base: str, h: dict[str, str], rounds: int, image: str) -> dict[str, Any]:
    windows, totals = [], []
    for n in range(rounds + 1):
        EVENTS.clear() if n == 0 else None
        t0 = time.perf_counter()
        r = await s.post(f"{base}/api/v1/instances", headers=h, json={
            "name": f"p{n}", "image": image, "command": ["sleep", "600"], "cpus": 0.5, "memory_mb": 64, "ssh": False})
        iid = (await r.json())["id"]
        t_post = time.perf_counter()
        while True:
            page = await (await s.get(f"{base}/api/v1/instances?limit=200", headers=h)).json()
            if next(i for i in page["items"] if i["id"] == iid)["status"] == "running":
                break
            await asyncio.sleep(0.005)
        t1 = time.perf_counter()
        if n:  # the first warms every path
            windows.append((t0, t1))
            totals.append(((t1 - t0) * 1000, (t_post - t0) * 1000))
        await s.delete(f"{base}/api/v1/instances/{iid}", headers=h)
        while (await s.get(f"{base}/api/v1/instances/{iid}", headers=h)).status != 404:
            await asyncio.sleep(0.02)
    return {"total": statistics.median(t for t, _ in totals), "post": statistics.median(p for _, p in totals),
            "stages": {k: statistics.median(v) for k, v in breakdown(windows).items()},
            "counts": calls(windows)}


async def port_maps(s: aiohttp.ClientSession, base: str, h: dict[str, str], rounds: int, image: str) -> dict[str, Any]:
    r = await s.post(f"{base}/api/v1/instances", headers=h, json={
        "name": "pm", "image": image, "ssh": True,  # with its SSH map, as instances have
        "command": ["/bin/sh", "-c", "exec perl -MIO::Socket::INET -e 'my $s=IO::Socket::INET->new(LocalPort=>8080,"
                    "Listen=>8,ReuseAddr=>1) or die; while(my $c=$s->accept){close $c}'"]})
    iid = (await r.json())["id"]
    while (await (await s.get(f"{base}/api/v1/instances/{iid}", headers=h)).json())["ssh"]["state"] != "ready":
        await asyncio.sleep(0.02)
    await asyncio.sleep(1)  # the listener inside is up
    windows, totals = [], []
    for n in range(rounds + 1):
        if n == 0:
            EVENTS.clear()
        t0 = time.perf_counter()
        r = await s.post(f"{base}/api/v1/instances/{iid}/port-maps", headers=h, json={"instance_port": 8080})
        m = await r.json()
        t_post = time.perf_counter()
        while True:
            try:
                _, w = await asyncio.open_connection("127.0.0.1", m["host_port"])
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.001)
        t1 = time.perf_counter()
        if n:
            windows.append((t0, t1))
            totals.append(((t1 - t0) * 1000, (t_post - t0) * 1000))
        await s.delete(f"{base}/api/v1/port-maps/{m['id']}", headers=h)
    await s.delete(f"{base}/api/v1/instances/{iid}", headers=h)
    return {"total": statistics.median(t for t, _ in totals), "post": statistics.median(p for _, p in totals),
            "stages": {k: statistics.median(v) for k, v in breakdown(windows).items()},
            "counts": calls(windows)}


def table(res: dict[str, Any]) -> str:
    rows = [f"| total, as the client sees it | {res['total']:.1f} ms | |",
            f"| of which the `POST` itself | {res['post']:.1f} ms | |"]
    for label, ms in sorted(res["stages"].items(), key=lambda kv: -kv[1]):
        rows.append(f"| {label} | {ms:.1f} ms | {res['counts'][label]:.1f} |")
    return "| stage | median per operation | calls per operation |\n|---|---|---|\n" + "\n".join(rows)


def write_docs(res: dict[str, Any], rounds: int) -> None:
    import datetime as dt
    import platform

    section = f"""{START}
## Where the time goes

Measured {dt.date.today().isoformat()} on {os.cpu_count()} cores ({cpu_model()}), Python
{platform.python_version()}, by `python bench/profile_paths.py` (part of `make bench`): dmd with
its local node in one process on SQLite, every stage timed where it happens, {rounds} rounds,
medians. Stages nest (a round holds the hub's round trip, which holds the agent's handler, which
holds the Engine's calls), so the rows do not add up.

**Instance start** (`POST /api/v1/instances` with `"ssh": false` to `running` in the list):

{table(res["start"])}

**New port map** (`POST /api/v1/instances/{{id}}/port-maps` to the host port accepting, kernel
forwarding, on an instance with its SSH map):

{table(res["port_map"])}
{END}"""
    write_section(section, START, END)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--no-docs", action="store_true")
    args = ap.parse_args()
    res = asyncio.run(run(args.rounds))
    print("instance start\n" + table(res["start"]) + "\n\nport map\n" + table(res["port_map"]))
    if not args.no_docs:
        write_docs(res, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
