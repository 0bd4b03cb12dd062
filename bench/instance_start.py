"""Benchmark: from POST /api/v1/instances to the container running, against the same image
started directly through the Docker Engine API, in the same run. Goal: at most 1.15x direct.

    python bench/instance_start.py [--rounds 10] [--no-docs]

Starts a real dmd with --local-node (SQLite, the in-process agent on the local dockerd), uses
the busybox test image (tests/runtime/images.py builds it), alternates one direct start and one
DM start per round, and writes the medians into docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from live_dmd import cpu_model, live_dmd  # noqa: E402
from sections import write_section  # noqa: E402

from tests.runtime.images import BUSYBOX_REF  # noqa: E402

START, END = "<!-- bench:instance:start -->", "<!-- bench:instance:end -->"
COMMAND = ["sleep", "600"]


async def direct_start(docker: aiodocker.Docker, n: int) -> float:
    started = time.perf_counter()
    c = await docker.containers.create(
        {"Image": BUSYBOX_REF, "Cmd": COMMAND, "HostConfig": {"Init": True, "NanoCpus": 500_000_000,
                                                              "Memory": 64 << 20}},
        name=f"dm-bench-direct-{n}-{os.getpid()}",
    )
    await c.start()
    while not (await c.show())["State"]["Running"]:
        await asyncio.sleep(0.005)
    took = time.perf_counter() - started
    await c.delete(force=True)
    return took


async def dm_start(s: aiohttp.ClientSession, base: str, headers: dict[str, str], n: int) -> float:
    started = time.perf_counter()
    r = await s.post(f"{base}/api/v1/instances", headers=headers, json={
        "name": f"bench-{n}", "image": BUSYBOX_REF, "command": COMMAND, "cpus": 0.5, "memory_mb": 64,
        "ssh": False})  # no SSH, no port map: the same container as the direct start
    assert r.status == 201, await r.text()
    iid = (await r.json())["id"]
    while True:
        # The list (instances only) as the observer: the single-instance reply also carries SSH
        # and port maps, four more SQLite reads per poll, and 200 polls a second of it would
        # measure the observer more than the start.
        page = await (await s.get(f"{base}/api/v1/instances?limit=200", headers=headers)).json()
        body = next(i for i in page["items"] if i["id"] == iid)
        if body["status"] == "running":
            break
        if body["status"] == "error":
            raise RuntimeError(body["status_message"])
        await asyncio.sleep(0.005)
    took = time.perf_counter() - started
    await s.delete(f"{base}/api/v1/instances/{iid}", headers=headers)
    while (await s.get(f"{base}/api/v1/instances/{iid}", headers=headers)).status != 404:
        await asyncio.sleep(0.05)
    return took


async def run(rounds: int) -> dict[str, Any]:
    subprocess.run([sys.executable, "-m", "tests.runtime.images"], cwd=REPO, check=True)
    docker = aiodocker.Docker()
    try:
        async with live_dmd(BUSYBOX_REF) as live:
            s, base, headers = live.session, live.base, live.headers
            await direct_start(docker, -1)  # warm both paths once
            await dm_start(s, base, headers, -1)
            direct, dm = [], []
            for n in range(rounds):
                direct.append(await direct_start(docker, n))
                dm.append(await dm_start(s, base, headers, n))
    finally:
        await docker.close()
    d, m = statistics.median(direct), statistics.median(dm)
    return {"rounds": rounds, "direct_ms": d * 1000, "dm_ms": m * 1000, "ratio": m / d,
            "direct_all": [round(x * 1000, 1) for x in direct], "dm_all": [round(x * 1000, 1) for x in dm]}


def write_docs(res: dict[str, Any]) -> None:
    verdict = "PASS" if res["ratio"] <= 1.15 else "FAIL"
    section = f"""{START}
## Instance start: `POST /api/v1/instances` to running, against Docker directly

Measured {dt.date.today().isoformat()} on {os.cpu_count()} cores ({cpu_model()}), Python
{platform.python_version()}, by `python bench/instance_start.py` (part of `make bench`).
Each round starts the busybox test image with `sleep 600`, 0.5 CPU and 64 MB, once directly
through the Engine API (create, start, wait until running) and once through dmd (POST with
`"ssh": false`, so no port map either, then polling `GET /api/v1/instances?limit=200` every 5 ms
until `running`; the single-instance reply carries SSH and port maps since issue 5, four more
SQLite reads per poll, which at 200 polls a second slowed the start it measured from 1.24× to
about 1.4×; dmd runs with `--local-node`
on SQLite); {res['rounds']} rounds, medians.

| path | median | all rounds (ms) |
|---|---|---|
| Docker Engine API directly | {res['direct_ms']:.1f} ms | {res['direct_all']} |
| DM (API → reconciler → agent → Docker) | {res['dm_ms']:.1f} ms | {res['dm_all']} |

Ratio DM / direct: **{res['ratio']:.2f}×** — goal at most 1.15×: **{verdict}**. Where the time goes:
see "Where the time goes" below.
{END}"""
    write_section(section, START, END)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--no-docs", action="store_true")
    args = ap.parse_args()
    res = asyncio.run(run(args.rounds))
    print(json.dumps(res, indent=2))
    if not args.no_docs:
        write_docs(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
