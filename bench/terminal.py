"""Benchmark: the browser terminal's keystroke-to-echo time.

    python bench/terminal.py [--keys 500] [--no-docs]

A real dmd with its local node, an instance of the OpenSSH test image, and the terminal's own
WebSocket (`/instances/{id}/terminal/ws`, opened as the page does: the session cookie, its CSRF
token, the site's Origin). One key is sent at a time and timed until the terminal echoes it
back (the instance's tty echoes; every byte crosses dmd, the agent link's stream, the Engine's
exec and back). Goal: p99 under 50 ms. Figures land in docs/BENCHMARKS.md.
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

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from live_dmd import PASSWORD, cpu_model, live_dmd  # noqa: E402
from sections import write_section  # noqa: E402

from tests.runtime.images import OPENSSH_REF  # noqa: E402

START, END = "<!-- bench:terminal:start -->", "<!-- bench:terminal:end -->"
KEYS = b"abcdefghijklmnopqrstuvwxyz"


async def read_until(ws: aiohttp.ClientWebSocketResponse, marker: bytes, buf: bytearray) -> None:
    while marker not in buf:
        msg = await asyncio.wait_for(ws.receive(), 10)
        if msg.type != aiohttp.WSMsgType.BINARY:
            raise RuntimeError(f"the terminal sent {msg.type}: {msg.data!r}")
        buf += msg.data


async def run(keys: int) -> dict[str, Any]:
    async with live_dmd(OPENSSH_REF) as live:
        s, base, headers = live.session, live.base, live.headers
        r = await s.post(f"{base}/api/v1/instances", headers=headers, json={
            "name": "term", "image": OPENSSH_REF, "node_id": live.node_id, "command": ["sleep", "infinity"],
            "ssh": False})
        assert r.status == 201, await r.text()
        iid = (await r.json())["id"]
        try:
            while (await (await s.get(f"{base}/api/v1/instances/{iid}", headers=headers)).json())[
                    "status"] != "running":
                await asyncio.sleep(0.1)
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
                r = await browser.post(f"{base}/api/v1/auth/login",
                                       json={"email": "bench@example.org", "password": PASSWORD})
                csrf = (await r.json())["csrf_token"]
                ws = await browser.ws_connect(f"{base}/instances/{iid}/terminal/ws",
                                              params={"csrf": csrf, "cols": "120", "rows": "40"},
                                              headers={"Origin": base})
                buf = bytearray()
                # cat reads the keys; the terminal echoes each as it comes (the line discipline's echo).
                await ws.send_bytes(b"exec cat > /dev/null\n")
                await read_until(ws, b"exec cat > /dev/null", buf)
                while True:  # what else the shell writes (the line's end), until the terminal is quiet
                    try:
                        await asyncio.wait_for(ws.receive(), 0.5)
                    except TimeoutError:
                        break
                times: list[float] = []
                for n in range(keys):
                    key = KEYS[n % len(KEYS):n % len(KEYS) + 1]
                    buf.clear()
                    t0 = time.perf_counter()
                    await ws.send_bytes(key)
                    await read_until(ws, key, buf)
                    times.append((time.perf_counter() - t0) * 1e3)
                await ws.close()
        finally:
            await s.delete(f"{base}/api/v1/instances/{iid}", headers=headers)
    times.sort()
    return {"keys": keys, "p50_ms": statistics.median(times),
            "p99_ms": times[min(len(times) - 1, int(0.99 * len(times)))], "max_ms": times[-1]}


def write_docs(res: dict[str, Any]) -> None:
    ok = "PASS" if res["p99_ms"] < 50 else "FAIL"
    row = (f"| through dmd, the agent link's stream and the Engine's exec | {res['p50_ms']:.2f} ms | "
           f"**{res['p99_ms']:.2f} ms** | {res['max_ms']:.2f} ms | p99 < 50 ms: {ok} |")
    section = f"""{START}
## Browser terminal: keystroke to echo

Measured {dt.date.today().isoformat()} on {os.cpu_count()} cores ({cpu_model()}), Python
{platform.python_version()}, by `python bench/terminal.py`: dmd with `--local-node`, an instance of
the OpenSSH test image, the terminal's WebSocket opened as the page opens it; {res['keys']} keys,
one at a time, each timed until the instance's terminal echoes it.

| keystroke to echo | p50 | p99 | max | goal |
|---|---|---|---|---|
{row}
{END}"""
    write_section(section, START, END)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=500)
    ap.add_argument("--no-docs", action="store_true")
    args = ap.parse_args()
    subprocess.run([sys.executable, "-m", "tests.runtime.images", "--only", "openssh"], cwd=REPO, check=True)
    res = asyncio.run(run(args.keys))
    print(json.dumps(res, indent=2))
    if not args.no_docs:
        write_docs(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
