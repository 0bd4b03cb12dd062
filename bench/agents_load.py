"""How many simulated agents one dmd holds while `GET /api/v1/nodes` keeps p99 under 100 ms.

One run on this machine:

1. a real `dmd serve` (SQLite, in-memory sessions, log level warning) on a fresh data dir and
   a free 127.0.0.1 port, pinned to CPU 0; this load generator pinned to CPU 1. An admin is
   made with `dmd user create`, logs in through the API and creates an API token;
2. N nodes are created through the API and joined (32 requests in flight), credentials kept
   in memory so every ramp step reuses the nodes of the previous one;
3. N simulated agents, all in this process on one event loop and one aiohttp ClientSession:
   each opens `/agent/ws` with its credential, sends a `hello` with ~1.8 KB of facts shaped
   like agent/docker_info.node_facts()' (two GPUs), waits for `welcome`, then sends
   `heartbeat` every heartbeat_s (dmd's value from `welcome`, 10 s by default; first beat at
   a random offset) and answers `ping` and the reconciler's requests as an empty node would;
4. once all N are connected and dmd lists all N online, a prober subprocess (also on CPU 1)
   sends `GET /api/v1/nodes` (default page) with the token at a fixed rate: a warm-up, then
   the recorded window, while dmd's RSS and CPU time are sampled from /proc. dmd and the
   prober run at nice -10 when allowed, so other work on a shared machine disturbs less;
5. PASS for a step: p99 < 100 ms, every reply 200, every agent still connected, none closed
   by dmd, no heartbeat-timeout close in dmd's log, dmd lists all N online afterwards.
   The ramp stops at the first failing step or at --max.

A table goes to stdout and to the section between the bench:agents markers of
docs/BENCHMARKS.md. The exit status is non-zero only when the benchmark itself failed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import gc
import json
import math
import os
import platform
import random
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from sections import write_section

from agent import protocol as p

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "BENCHMARKS.md"
START_MARK = "<!-- bench:agents:start -->"
END_MARK = "<!-- bench:agents:end -->"
NODES_PATH = "/api/v1/nodes"
EMAIL = "agents-bench@example.com"
PASSWORD = "bench-password-123"  # a throwaway admin in a throwaway data dir
GOAL_P99_MS = 100.0
DEFAULT_STEPS = (500, 1000, 2000, 3000, 4000, 5000, 6000)
QUICK_STEPS = (200, 2000)
NAME_PREFIX = "sim-"
T = TypeVar("T")


class BenchError(Exception):
    """The benchmark could not be run or its results cannot be trusted."""


_T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"agents-bench [{time.monotonic() - _T0:6.1f} s]: {msg}", flush=True)


# --- process set-up -----------------------------------------------------------------------


def raise_nofile() -> int:
    """Lift RLIMIT_NOFILE as far as allowed (the hard limit too, as root); returns the soft limit.

    Children (dmd, the prober) inherit it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if os.geteuid() == 0:
        try:
            ceiling = int(Path("/proc/sys/fs/nr_open").read_text().strip())
        except (OSError, ValueError):
            ceiling = hard
        if hard != resource.RLIM_INFINITY and ceiling > hard:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, ceiling))
                soft, hard = ceiling, ceiling
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def choose_cpus() -> tuple[int | None, int | None]:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        log("WARNING: fewer than two CPUs available; dmd and the load generator are not pinned apart")
        return None, None
    return cpus[0], cpus[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env() -> dict[str, str]:
    """The environment minus DMD_* settings, so no outside configuration leaks in."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DMD_")}


def dmd_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "dmd", *args]


@dataclass
class Dmd:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(f"dmd exited with status {self.proc.returncode}:\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        """utime + stime of the dmd process (all its threads), from /proc/PID/stat."""
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return math.nan


def create_admin(config: Path, data_dir: Path) -> None:
    proc = subprocess.run(
        dmd_argv("user", "create", "--config", str(config), "--data-dir", str(data_dir),
                 "--email", EMAIL, "--admin", "--password-stdin"),
        input=PASSWORD + "\n", capture_output=True, text=True, env=clean_env(), cwd=ROOT,
        check=False, timeout=120,
    )
    if proc.returncode != 0:
        raise BenchError(f"dmd user create failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")


def start_dmd(workdir: Path, cpu: int | None) -> Dmd:
    config = workdir / "config.json"
    config.write_text("{}\n")  # --config: ignore /etc/dmd and ~/.config/dmd
    data_dir = workdir / "data"
    create_admin(config, data_dir)
    port = free_port()
    logfile = workdir / "dmd.log"
    with logfile.open("wb") as f:
        proc = subprocess.Popen(
            dmd_argv("serve", "--ssh-listen", "off", "--config", str(config), "--data-dir", str(data_dir),
                     "--listen", f"127.0.0.1:{port}", "--sessions", "memory", "--log-level", "warning"),
            stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, env=clean_env(), cwd=ROOT,
        )
    if cpu is not None:
        # Pin the child (threads it starts later inherit the mask: aiosqlite's, the executor's).
        os.sched_setaffinity(proc.pid, {cpu})
    return Dmd(proc, port, logfile)


def stop_dmd(dmd: Dmd) -> None:
    if dmd.proc.poll() is None:
        dmd.proc.send_signal(signal.SIGTERM)
        try:
            dmd.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            log("dmd ignored SIGTERM for 30 s; killing it")
            dmd.proc.kill()
            dmd.proc.wait()


# --- the API ------------------------------------------------------------------------------


async def api_json(session: aiohttp.ClientSession, method: str, url: str, expect: int,
                   what: str, **kw: Any) -> Any:
    async with session.request(method, url, **kw) as r:
        body = await r.read()
        if r.status != expect:
            raise BenchError(f"{what}: expected HTTP {expect}, got {r.status}: {body[:500]!r}")
        return json.loads(body) if body else None


async def wait_ready(session: aiohttp.ClientSession, dmd: Dmd, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dmd.check_alive()
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            async with session.get(dmd.base + "/api/v1/health", timeout=aiohttp.ClientTimeout(total=2)) as r:
                await r.read()
                return
        await asyncio.sleep(0.1)
    raise BenchError(f"dmd did not answer on port {dmd.port} within {timeout:.0f} s:\n{dmd.log_tail()}")


async def get_token(session: aiohttp.ClientSession, base: str) -> str:
    """Log in through the API and create an API token; returns its secret."""
    async with session.post(base + "/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD}) as r:
        body = await r.read()
        if r.status != 200:
            raise BenchError(f"log in: HTTP {r.status}: {body[:500]!r}")
        cookies = "; ".join(f"{k}={m.value}" for k, m in r.cookies.items())
        csrf = json.loads(body).get("csrf_token")
    if not cookies or not isinstance(csrf, str):
        raise BenchError("log in gave no session cookie or CSRF token")
    created = await api_json(session, "POST", base + "/api/v1/tokens", 201, "create an API token",
                             json={"name": "agents-bench"}, headers={"Cookie": cookies, "X-CSRF-Token": csrf})
    token = created.get("token")
    if not isinstance(token, str):
        raise BenchError(f"token creation returned no secret: {created!r}")
    return token


async def bounded(items: Iterable[T], limit: int, fn: Callable[[T], Awaitable[None]]) -> None:
    """Run fn over items with at most `limit` in flight; the first error cancels the rest."""
    it = iter(items)

    async def worker() -> None:
        for item in it:
            await fn(item)

    try:
        async with asyncio.TaskGroup() as tg:
            for _ in range(limit):
                tg.create_task(worker())
    except ExceptionGroup as eg:
        raise eg.exceptions[0] from None  # the first failure, as a plain exception


@dataclass(frozen=True)
class NodeCred:
    node_id: int
    name: str
    credential: str


async def create_nodes(session: aiohttp.ClientSession, base: str, token: str, indexes: range,
                       out: list[NodeCred], in_flight: int = 32) -> None:
    auth = {"Authorization": f"Bearer {token}"}

    async def one(i: int) -> None:
        name = f"{NAME_PREFIX}{i:05d}"
        created = await api_json(session, "POST", base + NODES_PATH, 201, f"create node {name}",
                                 json={"name": name}, headers=auth)
        joined = await api_json(session, "POST", base + p.JOIN_PATH, 200, f"join node {name}",
                                json={"token": created["join_token"], "hostname": hostname(i)})
        out.append(NodeCred(int(joined["node_id"]), name, str(joined["credential"])))

    await bounded(indexes, in_flight, one)


async def count_online(session: aiohttp.ClientSession, base: str, token: str) -> tuple[int, int]:
    """(online, total) over every page of GET /api/v1/nodes."""
    online = total = 0
    cursor: str | None = None
    while True:
        params = {"limit": "200", **({"cursor": cursor} if cursor else {})}
        page = await api_json(session, "GET", base + NODES_PATH, 200, "list nodes",
                              params=params, headers={"Authorization": f"Bearer {token}"})
        for n in page["items"]:
            total += 1
            online += n["status"] == "online"
        cursor = page.get("next_cursor")
        if not cursor:
            return online, total


# --- simulated agents ------------------------------------------------------------------------


def hostname(i: int) -> str:
    return f"gpu-{i:05d}.rack{i // 40:03d}.cluster.example.org"


def sim_facts(i: int) -> dict[str, Any]:
    """Facts shaped like agent/docker_info.node_facts(): host facts, two GPUs, the runtime (~2 KB)."""
    rng = random.Random(i)

    def uuid(prefix: str) -> str:
        return (f"{prefix}-{rng.getrandbits(32):08x}-{rng.getrandbits(16):04x}-{rng.getrandbits(16):04x}-"
                f"{rng.getrandbits(16):04x}-{rng.getrandbits(48):012x}")

    gpus: list[dict[str, Any]] = []
    for g in range(2):
        mig = g == 1  # the second GPU split in two MIG halves, as a shared node would be
        gpus.append({
            "vendor": "nvidia", "index": g, "name": "NVIDIA H100 80GB HBM3", "uuid": uuid("GPU"),
            "pci_bus_id": f"0000:{0x18 + 0x20 * g:02x}:00.0", "memory_total_mb": 81559,
            "memory_used_mb": rng.randint(0, 2000), "utilization_pct": float(rng.randint(0, 100)),
            "temperature_c": float(rng.randint(28, 70)), "driver_version": "550.54.15",
            "runtime_version": "12.4", "mig_mode": "Enabled" if mig else "Disabled",
            "mig_devices": [
                {"index": m, "uuid": uuid("MIG"), "profile": "3g.40gb", "memory_total_mb": 40192,
                 "gpu_instance_id": 1 + m, "compute_instance_id": 0}
                for m in range(2 if mig else 0)
            ],
            "dri_card": None, "dri_render": None,
        })
    return {
        "hostname": hostname(i),
        "os": {"id": "ubuntu", "name": "Ubuntu", "version": "22.04",
               "pretty_name": "Ubuntu 22.04.4 LTS"},
        "kernel": "5.15.0-107-generic",
        "arch": "x86_64",
        "cpu_model": "AMD EPYC 9454 48-Core Processor",
        "cpu_count": 96,
        "memory_total_mb": 1031723,
        "memory_available_mb": 1000000 - rng.randint(0, 100000),
        "disk_path": "/var/lib/docker",
        "disk_total_mb": 3661000,
        "disk_free_mb": 3000000 - rng.randint(0, 500000),
        "addresses": {
            "ipv4": [f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}", f"172.20.{i // 256 % 256}.{i % 256}",
                     f"192.168.{i // 256 % 256}.{i % 256}"],
            "ipv6": [f"fd00:10:0:{i // 65536:x}::{i % 65536:x}", f"2001:db8:10:{i // 65536:x}::{i % 65536:x}",
                     f"2001:db8:20:{i // 65536:x}:{rng.getrandbits(16):x}:{rng.getrandbits(16):x}:"
                     f"{rng.getrandbits(16):x}:{rng.getrandbits(16):x}"],
        },
        "gpus": gpus,
        "runtime": {"name": "docker", "version": "26.1.3", "api_version": "1.45",
                    "data_root": "/var/lib/docker", "os": "Ubuntu 22.04.4 LTS"},
    }


# What a node without containers or images answers to dmd's reconciler (see agent/protocol.py).
EMPTY_NODE_REPLIES: dict[str, dict[str, Any]] = {
    "instance.sync": {"removed": []},
    "images.list": {"images": []},
}


@dataclass
class Tally:
    """What happened to the agents, across the whole run."""

    closed_by_dmd: collections.Counter[str] = field(default_factory=collections.Counter)
    heartbeats: int = 0
    requests: collections.Counter[str] = field(default_factory=collections.Counter)  # from dmd, by type


class SimAgent:
    def __init__(self, cred: NodeCred, index: int, tally: Tally) -> None:
        self.cred = cred
        self.index = index
        self.tally = tally
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.stopping = False
        self.alive = False
        self.close_code: int | None = None

    async def connect(self, session: aiohttp.ClientSession, url: str) -> None:
        ws = await session.ws_connect(
            url, headers={"Authorization": f"Bearer {self.cred.credential}"}, autoping=True,
            max_msg_size=2 * p.MAX_MESSAGE_BYTES, timeout=aiohttp.ClientWSTimeout(ws_close=10),
        )
        self.ws = ws
        # A simulated agent of protocol 1: its (empty) state inside the hello.
        hello = p.Hello(self.cred.node_id, "0.1.0-sim", p.ProtocolRange(p.MIN_PROTOCOL_VERSION, p.PROTOCOL_VERSION),
                        sim_facts(self.index), p.Snapshot(containers=[], images=[]))
        await ws.send_str(p.notice_envelope(hello).to_json())
        msg = await ws.receive(timeout=60)
        if msg.type != aiohttp.WSMsgType.TEXT:
            await ws.close()
            raise BenchError(f"node {self.cred.node_id}: no welcome: {msg.type.name} {msg.data!r} {msg.extra!r}")
        env = p.decode(msg.data)
        if env.type != p.WELCOME:
            await ws.close()
            raise BenchError(f"node {self.cred.node_id}: expected welcome, got {env.type}")
        heartbeat_s = float(env.data.get("heartbeat_s") or 10.0)
        self.alive = True
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._read(ws)), loop.create_task(self._beat(ws, heartbeat_s))]

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                env = p.decode(msg.data)
                if env.id is None or env.is_reply:
                    continue
                self.tally.requests[env.type] += 1
                if env.type == p.PING:
                    await ws.send_str(p.reply_ok(env.id, {"at": time.time()}).to_json())
                elif env.type in EMPTY_NODE_REPLIES:
                    await ws.send_str(p.reply_ok(env.id, EMPTY_NODE_REPLIES[env.type]).to_json())
                else:
                    await ws.send_str(p.reply_error(env.id, "unknown_type", f"sim agent: no {env.type}").to_json())
        except (ConnectionError, aiohttp.ClientError, p.ProtocolError):
            pass
        finally:
            self.alive = False
            self.close_code = ws.close_code
            if not self.stopping:
                self.tally.closed_by_dmd[str(ws.close_code)] += 1

    async def _beat(self, ws: aiohttp.ClientWebSocketResponse, interval: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time() + random.uniform(0, interval)  # spread the fleet over the interval
        seq = 0
        with contextlib.suppress(ConnectionError, aiohttp.ClientError, RuntimeError):
            while not ws.closed:
                seq += 1
                await asyncio.sleep(max(0.0, start + (seq - 1) * interval - loop.time()))
                await ws.send_str(p.message(p.HEARTBEAT, {"seq": seq}).to_json())
                self.tally.heartbeats += 1

    async def close(self) -> None:
        self.stopping = True
        for t in self.tasks[1:]:
            t.cancel()
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def connect_agents(session: aiohttp.ClientSession, url: str, agents: list[SimAgent],
                         concurrency: int) -> None:
    async def one(a: SimAgent) -> None:
        try:
            await a.connect(session, url)
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise BenchError(f"agent for node {a.cred.node_id} could not connect: {e!r}") from e

    await bounded(agents, concurrency, one)


# --- the latency prober (a subprocess, so the agents' loop does not skew its clock) ----------------


async def probe(url: str, token: str, warmup: float, seconds: float, rate: float) -> dict[str, Any]:
    """GET url at a fixed rate (open loop: a slow reply does not delay the next request).

    The first `warmup` seconds are not recorded; "window" is printed on stdout when the
    recorded part begins, so the parent samples dmd over the same span.
    """
    lat_ms: list[float] = []
    slow: list[tuple[float, float]] = []  # (seconds into the window, latency ms) of replies over 50 ms
    statuses: collections.Counter[str] = collections.Counter()
    headers = {"Authorization": f"Bearer {token}"}
    timeout = aiohttp.ClientTimeout(total=30)
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.get(url, headers=headers) as r:  # open one keep-alive connection first
            await r.read()

        async def one(record: bool, window_start: float) -> None:
            t0 = time.perf_counter()
            try:
                async with session.get(url, headers=headers) as r:
                    await r.read()
                    status = str(r.status)
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                status = type(e).__name__
            ms = (time.perf_counter() - t0) * 1000
            if not record:
                return
            lat_ms.append(ms)
            if ms > 50:
                slow.append((round(t0 - window_start, 2), round(ms, 1)))
            statuses[status] += 1

        start = loop.time()
        window_at = start + warmup
        window_pc = time.perf_counter() + warmup
        tasks = []
        announced = False
        for i in range(int((warmup + seconds) * rate)):
            at = start + i / rate
            await asyncio.sleep(max(0.0, at - loop.time()))
            record = at >= window_at
            if record and not announced:
                print("window", flush=True)
                announced = True
            tasks.append(loop.create_task(one(record, window_pc)))
        await asyncio.gather(*tasks)
    return {"lat_ms": lat_ms, "slow": sorted(slow), "statuses": dict(statuses)}


def probe_main() -> int:
    cfg = json.loads(sys.stdin.readline())
    out = asyncio.run(probe(cfg["url"], cfg["token"], float(cfg["warmup"]), float(cfg["seconds"]),
                            float(cfg["rate"])))
    print(json.dumps(out), flush=True)
    return 0


def cpu_ticks(cpu: int) -> tuple[int, int]:
    """(busy, total) clock ticks of one CPU since boot, from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            v = [int(x) for x in line.split()[1:]]
            idle = v[3] + v[4]  # idle + iowait
            return sum(v[:8]) - idle, sum(v[:8])
    raise BenchError(f"no cpu{cpu} line in /proc/stat")


@dataclass
class Window:
    probe: dict[str, Any]
    dmd_cpu_pct: float  # dmd's CPU time over the window, in % of one CPU
    others_cpu_pct: float  # how busy dmd's CPU was with other processes (NaN when not pinned)
    rss_mb: float  # peak VmRSS
    loadavg: str


async def measure(dmd: Dmd, token: str, s: Settings) -> Window:
    """Warm up, then run the recorded window, sampling dmd's CPU time and RSS over it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).resolve()), "--probe",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    if s.nice is not None:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, proc.pid, s.nice)
    cfg = {"url": dmd.base + NODES_PATH, "token": token, "warmup": s.warmup, "seconds": s.seconds, "rate": s.rate}
    proc.stdin.write(json.dumps(cfg).encode() + b"\n")
    await proc.stdin.drain()
    proc.stdin.close()
    try:
        async with asyncio.timeout(s.warmup + s.seconds + 120):
            line = await proc.stdout.readline()
            if line.strip() != b"window":
                await proc.wait()
                err = await proc.stderr.read()
                raise BenchError(f"the prober failed ({proc.returncode}):\n{err.decode(errors='replace')}")
            cpu0, wall0 = dmd.cpu_seconds(), time.monotonic()
            busy0 = cpu_ticks(s.dmd_cpu) if s.dmd_cpu is not None else (0, 0)
            peak_rss = dmd.rss_mb()
            reading = asyncio.ensure_future(proc.stdout.readline())
            while not reading.done():
                await asyncio.wait([reading], timeout=1.0)
                dmd.check_alive()
                peak_rss = max(peak_rss, dmd.rss_mb())
            cpu1, wall1 = dmd.cpu_seconds(), time.monotonic()
            busy1 = cpu_ticks(s.dmd_cpu) if s.dmd_cpu is not None else (0, 0)
            out = reading.result()
            err = await proc.stderr.read()
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise BenchError("the prober did not finish in time") from None
    if proc.returncode != 0 or not out:
        raise BenchError(f"the prober failed ({proc.returncode}):\n{err.decode(errors='replace')}")
    dmd_cpu = cpu1 - cpu0
    others = math.nan
    if s.dmd_cpu is not None and busy1[1] > busy0[1]:
        others = max(0.0, 100 * ((busy1[0] - busy0[0]) / os.sysconf("SC_CLK_TCK") - dmd_cpu) / (wall1 - wall0))
    load = Path("/proc/loadavg").read_text().split()[:3]
    return Window(json.loads(out), 100 * dmd_cpu / (wall1 - wall0), others, peak_rss, " ".join(load))


# --- one step -------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0-100)."""
    if not values:
        return math.nan
    s = sorted(values)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]


@dataclass
class StepResult:
    n: int
    setup_s: float
    requests: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    over_goal: int  # replies that took GOAL_P99_MS or more
    non_200: int
    cpu_pct: float
    others_cpu_pct: float
    loadavg: str
    rss_mb: float
    online: int
    closed: int
    heartbeat_closes: int
    passed: bool
    why: str


def heartbeat_closes(dmd: Dmd) -> int:
    return sum("no heartbeat for" in line for line in dmd.log_text().splitlines())


# --- the report ---------------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return "unknown"


def _git_rev() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
        return rev + (" (with uncommitted changes)" if dirty else "")
    return "unknown"


def table(results: list[StepResult]) -> list[str]:
    lines = [
        f"| agents | p50 | p95 | p99 | max | requests | ≥ {GOAL_P99_MS:.0f} ms | dmd CPU | others on dmd's CPU "
        "| dmd RSS | online | closed by dmd | result |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.n:,} | {r.p50_ms:.1f} ms | {r.p95_ms:.1f} ms | {r.p99_ms:.1f} ms | {r.max_ms:.1f} ms "
            f"| {r.requests} | {r.over_goal} | {r.cpu_pct:.0f}% | {r.others_cpu_pct:.0f}% | {r.rss_mb:.0f} MiB "
            f"| {r.online:,} | {r.closed} "
            f"| {'PASS' if r.passed else 'FAIL: ' + r.why} |"
        )
    return lines


@dataclass(frozen=True)
class Settings:
    steps: tuple[int, ...]
    seconds: float
    rate: float
    quick: bool
    dmd_cpu: int | None
    load_cpu: int | None
    nofile: int
    warmup: float = 10.0
    nice: int | None = None  # applied to dmd and the prober, when allowed


def _rank_from_top(n: int) -> str:
    """Which reply, counted from the slowest, is the nearest-rank p99 of n replies."""
    k = n - max(0, math.ceil(0.99 * n) - 1)
    return {1: "slowest", 2: "2nd-slowest", 3: "3rd-slowest"}.get(k, f"{k}th-slowest")


def largest_pass(results: list[StepResult]) -> int | None:
    passed = [r.n for r in results if r.passed]
    return max(passed) if passed else None


def section(results: list[StepResult], s: Settings, when: dt.datetime, stopped: str) -> str:
    best = largest_pass(results)
    verdict = (f"**Largest count sustained: {best:,} agents** (p99 of `GET {NODES_PATH}` under "
               f"{GOAL_P99_MS:.0f} ms, every agent online)" if best else "**No step passed.**")
    goal = "PASS" if best is not None and best >= 2000 else "FAIL"
    pinning = (f"dmd pinned to CPU {s.dmd_cpu}; the load generator and the prober to CPU {s.load_cpu} "
               "(sched_setaffinity)" if s.dmd_cpu is not None else "no CPU pinning (fewer than two CPUs)")
    mode = "`--quick` run (as `make bench` runs it)" if s.quick else "full ramp"
    lines = [
        START_MARK,
        "## Agents held by one dmd",
        "",
        f"Measured {when:%Y-%m-%d %H:%M} UTC by bench/agents_load.py ({mode}); rerunning it rewrites "
        "this section.",
        "",
        *table(results),
        "",
        verdict + f". Goal (2,000 agents with p99 < {GOAL_P99_MS:.0f} ms): {goal}. Ramp: "
        f"{', '.join(f'{n:,}' for n in s.steps)}; {stopped}.",
        "",
        "Machine:",
        "",
        f"- CPU: {_cpu_model()}, {os.cpu_count()} logical CPUs (nproc)",
        f"- OS: {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}, aiohttp {_version('aiohttp')}, SQLAlchemy "
        f"{_version('sqlalchemy')}, aiosqlite {_version('aiosqlite')}",
        f"- dm commit: {_git_rev()}",
        "",
        "What is measured:",
        "",
        "- dmd: a real `dmd serve` process on a fresh data dir (SQLite, in-memory sessions, log level "
        f"warning), {pinning}; RLIMIT_NOFILE {s.nofile:,} for both"
        + (f"; dmd and the prober at nice {s.nice}" if s.nice is not None else "") + ".",
        "- Agents: simulated in one process, one event loop and one aiohttp session, speaking the real "
        f"protocol over `/agent/ws`: `hello` with ~{len(json.dumps(sim_facts(0))) / 1024:.1f} KiB of facts "
        "(host, OS, CPU, memory, disk, addresses, "
        "two GPUs, Docker runtime), then `heartbeat` every 10 s from a random offset; `ping` and the "
        "reconciler's `instance.sync` are answered as an empty node would. Nodes are created and joined "
        "through the API; each step adds agents to those already connected (50 handshakes in flight). "
        "No `metrics` messages are sent.",
        f"- Per step, once all agents are connected and dmd lists them all online: `GET {NODES_PATH}` "
        f"(default page of 50 nodes with their facts, API token) at {s.rate:g} requests/s from a "
        f"separate prober process (open loop, one keep-alive connection pool): {s.warmup:g} s not "
        f"recorded, then the {s.seconds:g} s window. Over the window: dmd's CPU time (100% = one CPU), "
        "the time other processes used dmd's CPU (the machine is shared), dmd's peak VmRSS. "
        f"Load average at the end of the last window: {results[-1].loadavg if results else '?'}.",
        f"- A step passes when p99 < {GOAL_P99_MS:.0f} ms, every reply is 200, no agent was closed by "
        "dmd, dmd logged no heartbeat-timeout close, and it lists every agent online after the window. "
        "The ramp stops at the first failing step.",
        f"- With {s.rate:g} requests/s for {s.seconds:g} s, p99 is the "
        f"{_rank_from_top(int(s.rate * s.seconds))} reply: "
        "a single pause of dmd's event loop longer than a few hundred ms fails a step, so the result moves "
        "between runs (more so when other processes load dmd's CPU; see that column).",
        "",
        "To reproduce: `.venv/bin/python bench/agents_load.py [--max N] [--step-seconds S]` "
        "(`--quick`: 200 and 2,000 agents, 15 s windows, as `make bench` runs it; `--help` lists the "
        "knobs). Run it as root, or with a hard RLIMIT_NOFILE above twice the largest count.",
        END_MARK,
    ]
    return "\n".join(lines) + "\n"


def write_docs(text: str, path: Path = DOCS) -> None:
    write_section(text, START_MARK, END_MARK, path)


# --- the run ------------------------------------------------------------------------------


@contextlib.contextmanager
def dmd_process(workdir: Path, cpu: int | None) -> Iterator[Dmd]:
    dmd = start_dmd(workdir, cpu)
    try:
        yield dmd
    finally:
        stop_dmd(dmd)


async def ramp(dmd: Dmd, s: Settings, connect_concurrency: int) -> tuple[list[StepResult], str]:
    results: list[StepResult] = []
    tally = Tally()
    creds: list[NodeCred] = []
    agents: list[SimAgent] = []
    api = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
    # All agents share one session; no connection limit (each WebSocket holds a connection).
    fleet = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=False))
    stopped = "every step ran"
    try:
        await wait_ready(api, dmd)
        token = await get_token(api, dmd.base)
        ws_url = dmd.base + p.AGENT_WS_PATH
        for n in s.steps:
            t0 = time.monotonic()
            if len(creds) < n:
                log(f"step {n}: creating and joining {n - len(creds)} nodes")
                new: list[NodeCred] = []
                await create_nodes(api, dmd.base, token, range(len(creds), n), new)
                creds.extend(sorted(new, key=lambda c: c.node_id))
            t1 = time.monotonic()
            fresh = [SimAgent(c, i, tally) for i, c in enumerate(creds[len(agents):n], start=len(agents))]
            log(f"step {n}: connecting {len(fresh)} agents ({connect_concurrency} in flight); "
                f"nodes took {t1 - t0:.1f} s")
            try:
                await connect_agents(fleet, ws_url, fresh, connect_concurrency)
            finally:
                agents.extend(a for a in fresh if a.ws is not None)
            # The agents live until the end: keep them out of this process's GC scans, so its
            # pauses stay short (dmd is not affected either way; it is another process).
            gc.collect()
            gc.freeze()
            t2 = time.monotonic()
            online, total = await count_online(api, dmd.base, token)
            log(f"step {n}: agents connected in {t2 - t1:.1f} s; dmd lists {online}/{total} online")
            deadline = time.monotonic() + 30
            while online < n and time.monotonic() < deadline:
                await asyncio.sleep(1)
                online, total = await count_online(api, dmd.base, token)
            await asyncio.sleep(3)  # let the last handshakes' writes settle
            closed_before = sum(tally.closed_by_dmd.values())
            hb_before = heartbeat_closes(dmd)
            log(f"step {n}: {s.warmup:g} s warm-up, then measuring for {s.seconds:g} s")
            w = await measure(dmd, token, s)
            res, cpu_pct, rss = w.probe, w.dmd_cpu_pct, w.rss_mb
            lat = res["lat_ms"]
            if res["slow"]:
                log(f"step {n}: replies over 50 ms (s into the window, ms): {res['slow']}")
            non_200 = sum(v for k, v in res["statuses"].items() if k != "200")
            online, total = await count_online(api, dmd.base, token)
            alive = sum(a.alive for a in agents)
            closed = sum(tally.closed_by_dmd.values()) - closed_before
            hb = heartbeat_closes(dmd) - hb_before
            p99 = percentile(lat, 99)
            why = []
            if not p99 < GOAL_P99_MS:
                why.append(f"p99 {p99:.0f} ms")
            if non_200:
                why.append(f"{non_200} non-200 replies {res['statuses']}")
            if online != n or alive != n:
                why.append(f"{online} listed online, {alive} connected")
            if closed:
                why.append(f"{closed} closed by dmd {dict(tally.closed_by_dmd)}")
            if hb:
                why.append(f"{hb} heartbeat timeouts")
            r = StepResult(
                n=n, setup_s=t2 - t0, requests=len(lat), p50_ms=percentile(lat, 50), p95_ms=percentile(lat, 95),
                p99_ms=p99, max_ms=max(lat) if lat else math.nan, over_goal=sum(x >= GOAL_P99_MS for x in lat),
                non_200=non_200, cpu_pct=cpu_pct,
                others_cpu_pct=w.others_cpu_pct, loadavg=w.loadavg, rss_mb=rss, online=online, closed=closed,
                heartbeat_closes=hb, passed=not why,
                why="; ".join(why),
            )
            results.append(r)
            log(f"step {n}: p50 {r.p50_ms:.1f} ms, p95 {r.p95_ms:.1f} ms, p99 {r.p99_ms:.1f} ms, "
                f"max {r.max_ms:.1f} ms over {r.requests} requests; dmd CPU {cpu_pct:.0f}%, RSS {rss:.0f} MiB; "
                f"other processes on dmd's CPU {w.others_cpu_pct:.0f}%, load average {w.loadavg}; "
                f"{online}/{n} online; so far {tally.heartbeats} heartbeats sent, requests from dmd "
                f"{dict(tally.requests)}: "
                f"{'PASS' if r.passed else 'FAIL (' + r.why + ')'}")
            if not r.passed:
                stopped = f"stopped after the first failing step ({n:,})"
                break
    except BenchError as e:
        if not results:
            raise
        stopped = f"stopped at a failed set-up: {e}"
        log(f"FAILED set-up: {e}")
    finally:
        log(f"closing {len(agents)} agents")
        t = time.monotonic()

        async def close_all() -> None:
            await bounded(agents, 200, SimAgent.close)

        try:
            await asyncio.wait_for(close_all(), timeout=60)
        except TimeoutError:
            log("closing the agents took over 60 s; dropping the rest")
        await fleet.close()
        await api.close()
        log(f"agents closed in {time.monotonic() - t:.1f} s")
    return results, stopped


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[1:] == ["--probe"]:
        return probe_main()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--max", type=int, default=DEFAULT_STEPS[-1],
                    help=f"largest agent count to try ({DEFAULT_STEPS[-1]})")
    ap.add_argument("--steps", help="comma-separated agent counts, instead of the default ramp "
                    f"({', '.join(map(str, DEFAULT_STEPS))})")
    ap.add_argument("--step-seconds", type=float, default=30.0, help="measurement window per step (30)")
    ap.add_argument("--rate", type=float, default=10.0, help=f"GET {NODES_PATH} requests per second (10)")
    ap.add_argument("--warmup", type=float, default=10.0,
                    help="seconds of the same request load before each window, not recorded (10)")
    ap.add_argument("--nice", type=int, default=-10,
                    help="niceness for dmd and the prober when allowed (-10: other work on a shared "
                    "machine disturbs the figures less)")
    ap.add_argument("--connect-concurrency", type=int, default=50, help="agent handshakes in flight (50)")
    ap.add_argument("--quick", action="store_true", help="200 and 2,000 agents, 15 s windows (for make bench)")
    ap.add_argument("--dmd-log", type=Path, help="keep dmd's log (stdout and stderr) in this file")
    ap.add_argument("--no-docs", action="store_true", help=f"do not rewrite {DOCS.relative_to(ROOT)}")
    args = ap.parse_args(argv)

    steps: tuple[int, ...]
    if args.quick:
        steps, seconds, args.warmup = QUICK_STEPS, 15.0, min(args.warmup, 5.0)
    else:
        steps = tuple(int(x) for x in args.steps.split(",")) if args.steps else DEFAULT_STEPS
        steps = tuple(n for n in steps if n <= args.max)
        if args.max > (steps[-1] if steps else 0) and not args.steps:
            steps = (*steps, *range(DEFAULT_STEPS[-1] + 1000, args.max + 1, 1000))
        seconds = args.step_seconds
    if not steps or min(steps) < 1 or list(steps) != sorted(set(steps)) or seconds <= 0 or args.rate <= 0:
        ap.error("the steps must be increasing positive counts, the window and rate positive")

    nofile = raise_nofile()
    need = 2 * max(steps) + 200
    if nofile < need:
        log(f"WARNING: RLIMIT_NOFILE is {nofile}, under the {need} the largest step needs")
    dmd_cpu, load_cpu = choose_cpus()
    s = Settings(steps, seconds, args.rate, args.quick, dmd_cpu, load_cpu, nofile, args.warmup, args.nice)
    when = dt.datetime.now(dt.UTC)
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="dm-agents-bench-") as tmp, \
                dmd_process(Path(tmp), dmd_cpu) as dmd:
            if load_cpu is not None:
                os.sched_setaffinity(0, {load_cpu})
            try:
                os.setpriority(os.PRIO_PROCESS, dmd.proc.pid, args.nice)
            except OSError as e:
                log(f"could not renice dmd to {args.nice} ({e}); figures may be noisier on a busy machine")
                s = dataclasses.replace(s, nice=None)
            log(f"dmd pid {dmd.proc.pid} on :{dmd.port} (CPU {dmd_cpu}); load generator on CPU {load_cpu}; "
                f"RLIMIT_NOFILE {nofile}")
            results, stopped = asyncio.run(ramp(dmd, s, args.connect_concurrency))
            if args.dmd_log:
                args.dmd_log.write_text(dmd.log_text())
            warnings = [ln for ln in dmd.log_text().splitlines() if " WARNING " in ln or " ERROR " in ln]
            if warnings:
                log(f"dmd logged {len(warnings)} warnings/errors; the last few:\n" + "\n".join(warnings[-10:]))
    except BenchError as e:
        log(f"FAILED: {e}")
        return 1
    except KeyboardInterrupt:
        return 130

    print()
    print("\n".join(table(results)))
    print()
    best = largest_pass(results)
    print(f"largest count sustained: {best if best is not None else 'none'} ({stopped}); "
          f"run took {time.monotonic() - started:.0f} s")
    if not args.no_docs:
        write_docs(section(results, s, when, stopped))
        log(f"wrote {DOCS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
