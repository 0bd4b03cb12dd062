"""The idle agent's footprint: RSS and CPU of `dmc run` connected to a minimal fake dmd.

Runs the built binary dist/dmc when it exists (else `python -m agent run`) against a fake
control plane served from this process, lets it idle for --duration seconds (default 60)
with the default heartbeat and metrics intervals, and samples /proc/<pid>/status (VmRSS)
and /proc/<pid>/stat (utime + stime) once a second. PyInstaller's one-file binary is two
processes (a small bootloader that unpacks, and the agent itself): both are reported, and
their sum. Goal: the agent's RSS at most 40 MB.

    .venv/bin/python bench/agent_idle.py [--duration 60] [--python] [--binary PATH] [--json]

The exit status is non-zero only when the benchmark could not run (not for a missed goal).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent import protocol as p  # noqa: E402 - after the path set-up

RSS_GOAL_MB = 40.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- a minimal dmd -------------------------------------------------------------------


@dataclass
class FakeDmd:
    hellos: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    heartbeat_s: float = 10.0

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=p.MAX_MESSAGE_BYTES)
        await ws.prepare(request)
        first = await ws.receive(timeout=30)
        env = p.decode(first.data)
        hello = p.parse(p.Hello, env.data)
        for _ in range(hello.snapshot_parts):
            await ws.receive(timeout=30)
        self.hellos += 1
        welcome = {"protocol": p.negotiate(hello.protocol.min, hello.protocol.max), "node_id": hello.node_id,
                   "heartbeat_s": self.heartbeat_s, "server_version": "bench"}
        await ws.send_str(p.message(p.WELCOME, welcome).to_json())
        self.connected.set()
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                kind = p.decode(msg.data).type
                self.counts[kind] = self.counts.get(kind, 0) + 1
        return ws


# --- /proc sampling --------------------------------------------------------------------


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                found += [int(c) for c in fh.read().split()]
    except OSError:
        pass
    return found


def rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            text = fh.read()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat(5))


@dataclass
class Series:
    name: str
    pid: int
    rss: list[int] = field(default_factory=list)
    first_ticks: int | None = None
    last_ticks: int | None = None

    def sample(self) -> None:
        kb, ticks = rss_kb(self.pid), cpu_ticks(self.pid)
        if kb is not None:
            self.rss.append(kb)
        if ticks is not None:
            if self.first_ticks is None:
                self.first_ticks = ticks
            self.last_ticks = ticks

    def cpu_pct(self, seconds: float) -> float:
        if self.first_ticks is None or self.last_ticks is None or seconds <= 0:
            return 0.0
        return 100.0 * (self.last_ticks - self.first_ticks) / CLK_TCK / seconds


# --- the run ---------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    fake = FakeDmd(heartbeat_s=args.heartbeat)
    app = web.Application()
    app.router.add_get(p.AGENT_WS_PATH, fake.ws)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]

    binary = Path(args.binary) if args.binary else ROOT / "dist" / "dmc"
    use_binary = not args.python and binary.exists()
    with tempfile.TemporaryDirectory(prefix="dmc-bench-") as tmp:
        config = Path(tmp) / "config.json"
        config.write_text(json.dumps({"server": f"http://127.0.0.1:{port}", "node_id": 1, "credential": "dmn_bench",
                                      "heartbeat_s": args.heartbeat, "metrics_interval_s": args.metrics}))
        os.chmod(config, 0o600)
        argv = [str(binary)] if use_binary else [sys.executable, "-m", "agent"]
        argv += ["run", "--config", str(config), "--log-level", "warning"]
        proc = await asyncio.create_subprocess_exec(*argv, cwd=ROOT, stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.PIPE)
        try:
            await asyncio.wait_for(fake.connected.wait(), 60)
            await asyncio.sleep(args.settle)  # unpacking, imports and the first facts are not "idle"
            series = [Series("dmc" if not use_binary else "bootloader", proc.pid)]
            if use_binary:
                kids = children(proc.pid)
                if kids:
                    series.append(Series("dmc (agent)", kids[0]))
            start = time.monotonic()
            while time.monotonic() - start < args.duration:
                for s in series:
                    s.sample()
                await asyncio.sleep(1.0)
            for s in series:
                s.sample()
            elapsed = time.monotonic() - start
        finally:
            if proc.returncode is None:
                proc.terminate()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 10)
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await runner.cleanup()
    agent = series[-1]
    report = {
        "command": " ".join(argv[:1] if use_binary else argv[:3]),
        "duration_s": round(elapsed, 1),
        "heartbeat_s": args.heartbeat,
        "metrics_interval_s": args.metrics,
        "messages": dict(sorted(fake.counts.items())),
        "reconnects": fake.hellos - 1,
        "exit_status": proc.returncode,
        "processes": [
            {"name": s.name, "pid": s.pid, "rss_mb": round(s.rss[-1] / 1024, 1) if s.rss else None,
             "rss_max_mb": round(max(s.rss) / 1024, 1) if s.rss else None,
             "cpu_pct": round(s.cpu_pct(elapsed), 3)}
            for s in series
        ],
        "total_rss_mb": round(sum(s.rss[-1] for s in series if s.rss) / 1024, 1),
        "agent_rss_max_mb": round(max(agent.rss) / 1024, 1) if agent.rss else None,
        "rss_goal_mb": RSS_GOAL_MB,
    }
    report["goal_met"] = report["agent_rss_max_mb"] is not None and report["agent_rss_max_mb"] <= RSS_GOAL_MB
    return report


def print_table(report: dict[str, Any]) -> None:
    print(f"idle agent: {report['command']} for {report['duration_s']} s "
          f"(heartbeat {report['heartbeat_s']:g} s, metrics {report['metrics_interval_s']:g} s)")
    print(f"{'process':<14} {'pid':>8} {'RSS MB':>8} {'max MB':>8} {'CPU %':>8}")
    for row in report["processes"]:
        print(f"{row['name']:<14} {row['pid']:>8} {row['rss_mb']!s:>8} {row['rss_max_mb']!s:>8} "
              f"{row['cpu_pct']:>8.3f}")
    if len(report["processes"]) > 1:
        print(f"{'total':<14} {'':>8} {report['total_rss_mb']:>8}")
    verdict = "met" if report["goal_met"] else "MISSED"
    print(f"agent RSS goal <= {report['rss_goal_mb']:g} MB: {verdict}; messages received: {report['messages']}; "
          f"reconnects: {report['reconnects']}")


START, END = "<!-- bench:agent:start -->", "<!-- bench:agent:end -->"


def write_docs(report: dict[str, Any]) -> None:
    """Rewrite this benchmark's section of docs/BENCHMARKS.md."""
    import datetime as dt

    binary = Path(__file__).resolve().parents[1] / "dist" / "dmc"
    size = f"{binary.stat().st_size / 1e6:.1f} MB" if binary.exists() else "not built"
    rows = "\n".join(f"| {r['name']} | {r['rss_mb']} MB | {r['rss_max_mb']} MB | {r['cpu_pct']:.3f} % |"
                      for r in report["processes"])
    section = f"""{START}
## The agent idle, and its size

Measured {dt.date.today().isoformat()} by `python bench/agent_idle.py` (part of `make bench`): `{report['command']}`
connected to a minimal control plane for {report['duration_s']} s (heartbeat {report['heartbeat_s']:g} s,
metrics {report['metrics_interval_s']:g} s), resident memory from /proc/PID/status, CPU from /proc/PID/stat.

| process | RSS | RSS max | CPU |
|---|---|---|---|
{rows}

Goals: RSS at most {report['rss_goal_mb']:g} MB (**{"met" if report["goal_met"] else "MISSED"}**), CPU under 1 %
of a core; `dist/dmc` at most 25 MB: **{size}**.
{END}"""
    from sections import write_section

    write_section(section, START, END)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=60.0, help="idle seconds to measure (default 60)")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds after the handshake before measuring")
    ap.add_argument("--heartbeat", type=float, default=10.0)
    ap.add_argument("--metrics", type=float, default=10.0)
    ap.add_argument("--binary", help="the agent binary (default dist/dmc when it exists)")
    ap.add_argument("--python", action="store_true", help="run `python -m agent` even when dist/dmc exists")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("--no-docs", action="store_true", help="do not rewrite docs/BENCHMARKS.md")
    args = ap.parse_args()
    try:
        report = asyncio.run(run(args))
    except (OSError, TimeoutError) as exc:
        print(f"agent_idle: the benchmark failed: {exc!r}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    if not args.no_docs:
        write_docs(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
