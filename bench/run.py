"""`make bench`: authenticated GET /api/v1/me on a real dmd against a bare aiohttp handler.

One run on this machine:

1. a real `dmd serve` (SQLite, in-memory sessions, log level warning) on a fresh data dir,
   with an admin made by `dmd user create`, who logs in through the API and creates a token;
2. bench/bare_server.py, one aiohttp handler returning the exact body dmd returned;
3. both servers single-process, pinned to one CPU, wrk pinned to another; a warm-up, then
   wrk rounds alternating bare/dmd, the median of each taken;
4. a table on stdout and the section between the bench:me markers of docs/BENCHMARKS.md.

The goal is dmd at >= 50% of the bare handler's requests/s. Missing it is reported clearly
but is not an error: the exit status is non-zero only when the benchmark itself failed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from sections import write_section

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "BENCHMARKS.md"
START_MARK = "<!-- bench:me:start -->"
END_MARK = "<!-- bench:me:end -->"
ME_PATH = "/api/v1/me"
GOAL = 0.50
EMAIL = "bench@example.com"
PASSWORD = "bench-password-123"  # a throwaway admin in a throwaway data dir


class BenchError(Exception):
    """The benchmark could not be run or its results cannot be trusted."""


# --- wrk ----------------------------------------------------------------------------------


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    if os.geteuid() != 0:
        raise BenchError(
            "wrk is not installed and this is not root: install it "
            "(e.g. `sudo apt-get install wrk`) and run `make bench` again"
        )
    print("bench: wrk is missing; installing it with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        if subprocess.run(cmd, env=env, check=False).returncode != 0:
            raise BenchError(f"`{' '.join(cmd)}` failed: install wrk by hand")
    path = shutil.which("wrk")
    if not path:
        raise BenchError("apt-get installed wrk but it is still not on PATH")
    return path


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: str


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if not m:
        raise BenchError(f"cannot read wrk latency {value!r}")
    return float(m.group(1)) * _UNIT_MS[m.group(2)]


def parse_wrk(out: str) -> WrkResult:
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    total = re.search(r"^\s+(\d+) requests in", out, re.M)
    if not (rps and p50 and p99 and total):
        raise BenchError(f"cannot read wrk's output:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors:\s+(.*)", out)
    return WrkResult(
        rps=float(rps.group(1)),
        p50_ms=_ms(p50.group(1)),
        p99_ms=_ms(p99.group(1)),
        requests=int(total.group(1)),
        non_2xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=sock.group(1).strip() if sock else "",
    )


def pinned(cpu: int | None) -> Callable[[], None] | None:
    """A preexec_fn that pins the child (and every thread it starts) to one CPU."""
    if cpu is None:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, {cpu})

    return pin


def run_wrk(wrk: str, url: str, *, seconds: int, threads: int, connections: int,
            headers: Sequence[str], cpu: int | None) -> WrkResult:
    cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for h in headers:
        cmd += ["-H", h]
    cmd.append(url)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          preexec_fn=pinned(cpu), timeout=seconds + 60)
    if proc.returncode != 0:
        raise BenchError(f"wrk failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    res = parse_wrk(proc.stdout)
    if res.non_2xx:
        raise BenchError(
            f"{url}: {res.non_2xx} of {res.requests} replies were not 2xx:\n{proc.stdout}"
        )
    if res.requests == 0:
        raise BenchError(f"{url}: wrk completed no requests:\n{proc.stdout}")
    return res


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Round:
    """One timed wrk run, with the CPU time the server used meanwhile."""

    wrk: WrkResult
    seconds: float  # wall-clock length of the run
    server_cpu_s: float

    @property
    def cpu_us_per_request(self) -> float:
        return self.server_cpu_s / self.wrk.requests * 1e6

    @property
    def busy(self) -> float:
        """Share of one CPU the server got; well under 1 means something else was running."""
        return self.server_cpu_s / self.seconds


# --- servers ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env() -> dict[str, str]:
    """The environment minus DMD_* settings, so no outside configuration leaks in."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DMD_")}


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(
                f"{self.name} exited with status {self.proc.returncode}:\n{self.log_tail()}"
            )


def start_server(name: str, argv: list[str], port: int, log: Path, cpu: int | None) -> Server:
    with log.open("wb") as f:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                env=clean_env(), cwd=ROOT, preexec_fn=pinned(cpu))
    return Server(name, proc, port, log)


def stop_server(srv: Server) -> None:
    if srv.proc.poll() is None:
        srv.proc.send_signal(signal.SIGTERM)
        try:
            srv.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            print(f"bench: {srv.name} ignored SIGTERM for 15 s; killing it", file=sys.stderr)
            srv.proc.kill()
            srv.proc.wait()


@dataclass(frozen=True)
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def json(self) -> dict[str, object]:
        data = json.loads(self.body)
        if not isinstance(data, dict):
            raise BenchError(f"expected a JSON object, got {self.body[:200]!r}")
        return data


def call(port: int, method: str, path: str, *, headers: dict[str, str] | None = None,
         body: object = None, timeout: float = 10.0) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        hdrs = dict(headers or {})
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        conn.request(method, path, body=payload, headers=hdrs)
        resp = conn.getresponse()
        return Reply(resp.status, resp.getheaders(), resp.read())
    finally:
        conn.close()


def wait_ready(srv: Server, path: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        srv.check_alive()
        with contextlib.suppress(OSError, http.client.HTTPException):
            call(srv.port, "GET", path, timeout=2.0)
            return
        time.sleep(0.1)
    raise BenchError(
        f"{srv.name} did not answer on port {srv.port} within {timeout:.0f} s:\n{srv.log_tail()}"
    )


def expect(reply: Reply, status: int, what: str) -> Reply:
    if reply.status != status:
        raise BenchError(
            f"{what}: expected HTTP {status}, got {reply.status}: {reply.body[:500]!r}"
        )
    return reply


def dmd_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "dmd", *args]


def create_admin(config: Path, data_dir: Path) -> None:
    proc = subprocess.run(
        dmd_argv("user", "create", "--config", str(config), "--data-dir", str(data_dir),
                 "--email", EMAIL, "--admin", "--password-stdin"),
        input=PASSWORD + "\n", capture_output=True, text=True, env=clean_env(), cwd=ROOT,
        check=False, timeout=120,
    )
    if proc.returncode != 0:
        raise BenchError(f"dmd user create failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")


def get_token(port: int) -> str:
    """Log in through the API and create an API token; returns its secret."""
    creds = {"email": EMAIL, "password": PASSWORD}
    login = expect(call(port, "POST", "/api/v1/auth/login", body=creds), 200, "log in")
    cookies = [v.split(";", 1)[0] for k, v in login.headers if k.lower() == "set-cookie"]
    csrf = login.json().get("csrf_token")
    if not cookies or not isinstance(csrf, str):
        raise BenchError(f"log in gave no session cookie or CSRF token: {login.headers}")
    created = expect(
        call(port, "POST", "/api/v1/tokens", body={"name": "bench"},
             headers={"Cookie": "; ".join(cookies), "X-CSRF-Token": csrf}),
        201, "create an API token",
    )
    token = created.json().get("token")
    if not isinstance(token, str):
        raise BenchError(f"token creation returned no secret: {created.body[:500]!r}")
    return token


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
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True, check=True,
                               timeout=10).stdout.strip()
        return rev + (" (with uncommitted changes)" if dirty else "")
    return "unknown"


def _wrk_version(wrk: str) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False, timeout=10)
        first = (out.stdout or out.stderr).strip().splitlines()
        if first:
            return first[0].split(" [")[0]
    return "wrk"


@dataclass(frozen=True)
class Summary:
    rounds: list[Round]

    @property
    def rps(self) -> float:
        return statistics.median(r.wrk.rps for r in self.rounds)

    @property
    def p50_ms(self) -> float:
        return statistics.median(r.wrk.p50_ms for r in self.rounds)

    @property
    def p99_ms(self) -> float:
        return statistics.median(r.wrk.p99_ms for r in self.rounds)

    @property
    def cpu_us(self) -> float:
        return statistics.median(r.cpu_us_per_request for r in self.rounds)

    @property
    def busy(self) -> float:
        return min(r.busy for r in self.rounds)

    @property
    def spread(self) -> float:
        """How far apart the rounds were: fastest / slowest - 1."""
        rps = [r.wrk.rps for r in self.rounds]
        return max(rps) / min(rps) - 1


@dataclass(frozen=True)
class Settings:
    seconds: int
    warmup: int
    threads: int
    connections: int
    rounds: int
    server_cpu: int | None
    wrk_cpu: int | None


def machine_lines(wrk: str) -> list[str]:
    return [
        f"- CPU: {_cpu_model()}, {os.cpu_count()} logical CPUs (nproc)",
        f"- OS: {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}, aiohttp {_version('aiohttp')}, "
        f"pydantic {_version('pydantic')}, SQLAlchemy {_version('sqlalchemy')}; "
        f"{_wrk_version(wrk)}",
        f"- dm commit: {_git_rev()}",
    ]


def table(bare: Summary, dmd: Summary) -> list[str]:
    return [
        "| server | requests/s | p50 latency | p99 latency | server CPU per request |",
        "|---|---:|---:|---:|---:|",
        *(f"| {name} | {x.rps:,.0f} | {x.p50_ms:.2f} ms | {x.p99_ms:.2f} ms | {x.cpu_us:.0f} µs |"
          for name, x in (("bare aiohttp handler", bare),
                          ("dmd `GET /api/v1/me` (token, SQLite)", dmd))),
    ]


BUSY_MIN = 0.85  # below this share of its CPU, a server was competing with something else


def contention_note(bare: Summary, dmd: Summary) -> str | None:
    low = min(bare.busy, dmd.busy)
    if low >= BUSY_MIN:
        return None
    return (f"WARNING: in some round a server got only {low:.0%} of its CPU: other work was "
            "running on this machine, so requests/s are low and noisy. The CPU time per "
            "request is the steadier figure; rerun on an idle machine.")


def verdict(bare: Summary, dmd: Summary) -> tuple[float, str]:
    ratio = dmd.rps / bare.rps
    return ratio, "PASS" if ratio >= GOAL else "FAIL"


def section(bare: Summary, dmd: Summary, s: Settings, wrk: str, when: dt.datetime) -> str:
    ratio, result = verdict(bare, dmd)
    rounds_bare = ", ".join(f"{r.wrk.rps:,.0f}" for r in bare.rounds)
    rounds_dmd = ", ".join(f"{r.wrk.rps:,.0f}" for r in dmd.rounds)
    cpu_ratio = bare.cpu_us / dmd.cpu_us
    note = contention_note(bare, dmd)
    if s.server_cpu is not None:
        pinning = (f"each server pinned to CPU {s.server_cpu} and wrk to CPU {s.wrk_cpu} "
                   "(sched_setaffinity)")
    else:
        pinning = "no CPU pinning (fewer than two CPUs available)"
    lines = [
        START_MARK,
        "## GET /api/v1/me vs bare aiohttp",
        "",
        f"Measured {when:%Y-%m-%d %H:%M} UTC by `make bench` (bench/run.py); "
        "rerunning it rewrites this section.",
        "",
        *table(bare, dmd),
        "",
        f"**dmd reaches {ratio:.0%} of the bare handler's requests/s: {result}** "
        f"(goal: at least {GOAL:.0%}).",
        "",
        f"Requests/s per round: bare {rounds_bare}; dmd {rounds_dmd}. "
        f"The table shows the median of the rounds; the rounds of one server differed by up to "
        f"{max(bare.spread, dmd.spread):.0%}, a measure of this machine's noise. "
        "Server CPU per request is the CPU time "
        "(user + system, from /proc) the server process used during a round divided by the "
        f"requests it answered: a dmd request costs {dmd.cpu_us / bare.cpu_us:.1f}x a bare one, "
        f"so by CPU alone dmd would reach {cpu_ratio:.0%} of the bare requests/s. Each server got "
        f"at least {min(bare.busy, dmd.busy):.0%} of its CPU in every round.",
        "",
        *([f"**{note}**", ""] if note else []),
        "Machine:",
        "",
        *machine_lines(wrk),
        "",
        "What is measured:",
        "",
        "- dmd: a real `dmd serve` process on a fresh data dir (SQLite, in-memory sessions, "
        "log level warning, no access log). An admin is created with `dmd user create`, logs in "
        "through the API and creates an API token; every request sends "
        "`Authorization: Bearer <token>`, so it goes through the whole middleware stack, the "
        "token check (token cache, SQLite on a miss) and the `MeOut` reply.",
        "- bare: bench/bare_server.py, one aiohttp handler with no middleware returning the exact "
        "body dmd returned, as `application/json`.",
        f"- Both single-process, {pinning}. Both answer once before timing (dmd 200, bare the "
        f"same body); a {s.warmup} s warm-up of each, then "
        f"`wrk -t{s.threads} -c{s.connections} -d{s.seconds}s --latency` alternating "
        f"bare/dmd, {s.rounds} rounds each. Any non-2xx reply fails the run.",
        "",
        "To reproduce: `make bench` (or `.venv/bin/python bench/run.py`; "
        "`--help` lists the knobs). When wrk is missing the script installs it with apt-get if "
        "it runs as root, and stops with an error otherwise.",
        END_MARK,
    ]
    return "\n".join(lines) + "\n"


def write_docs(text: str, path: Path = DOCS) -> None:
    write_section(text, START_MARK, END_MARK, path)


# --- the run ------------------------------------------------------------------------------


def choose_cpus() -> tuple[int | None, int | None]:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        print("bench: WARNING: fewer than two CPUs available; servers and wrk are not pinned apart",
              file=sys.stderr)
        return None, None
    return cpus[0], cpus[1]


@contextlib.contextmanager
def servers(workdir: Path, server_cpu: int | None) -> Iterator[tuple[Server, Server, str, bytes]]:
    """Start dmd and the bare server; yield (dmd, bare, token, body); stop both at the end."""
    started: list[Server] = []
    try:
        config = workdir / "config.json"
        config.write_text("{}\n")  # --config: ignore /etc/dmd and ~/.config/dmd
        data_dir = workdir / "data"
        create_admin(config, data_dir)

        port = free_port()
        dmd = start_server("dmd", dmd_argv(
            "serve", "--ssh-listen", "off", "--config", str(config), "--data-dir", str(data_dir),
            "--listen", f"127.0.0.1:{port}", "--sessions", "memory", "--log-level", "warning",
        ), port, workdir / "dmd.log", server_cpu)
        started.append(dmd)
        wait_ready(dmd, "/api/v1/health")

        token = get_token(dmd.port)
        me = expect(call(dmd.port, "GET", ME_PATH, headers={"Authorization": f"Bearer {token}"}),
                    200, f"dmd {ME_PATH} with the token")
        if me.json().get("auth") != "token" or me.json().get("email") != EMAIL:
            raise BenchError(f"dmd {ME_PATH} answered for someone else: {me.body[:500]!r}")
        body_file = workdir / "me.json"
        body_file.write_bytes(me.body)

        port = free_port()
        bare = start_server("bare server", [
            sys.executable, str(ROOT / "bench" / "bare_server.py"),
            "--port", str(port), "--body-file", str(body_file),
        ], port, workdir / "bare.log", server_cpu)
        started.append(bare)
        wait_ready(bare, ME_PATH)
        b = expect(call(bare.port, "GET", ME_PATH), 200, f"bare {ME_PATH}")
        if b.body != me.body:
            raise BenchError(f"the bare server's body differs from dmd's:\n{b.body!r}\n{me.body!r}")
        if b.header("Content-Type") != me.header("Content-Type"):
            raise BenchError(f"content types differ: bare {b.header('Content-Type')!r}, "
                             f"dmd {me.header('Content-Type')!r}")
        # Without the token dmd must refuse: the figure is for the authenticated path.
        expect(call(dmd.port, "GET", ME_PATH), 401, f"dmd {ME_PATH} without a token")
        yield dmd, bare, token, me.body
    finally:
        for srv in reversed(started):
            stop_server(srv)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--seconds", type=int, default=10, help="length of each timed wrk round (10)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up seconds per server (3)")
    p.add_argument("--rounds", type=int, default=2, help="timed rounds per server (2)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    p.add_argument("--no-docs", action="store_true",
                   help=f"do not rewrite {DOCS.relative_to(ROOT)}")
    args = p.parse_args(argv)
    if min(args.seconds, args.warmup, args.rounds, args.connections, args.threads) < 1:
        p.error("every number must be at least 1")

    try:
        wrk = ensure_wrk()
        server_cpu, wrk_cpu = choose_cpus()
        s = Settings(args.seconds, args.warmup, args.threads, args.connections, args.rounds,
                     server_cpu, wrk_cpu)
        when = dt.datetime.now(dt.UTC)
        with tempfile.TemporaryDirectory(prefix="dm-bench-") as tmp, \
                servers(Path(tmp), server_cpu) as (dmd, bare, token, body):
            print(f"bench: {ME_PATH} body is {len(body)} bytes; dmd on :{dmd.port}, "
                  f"bare on :{bare.port}", flush=True)
            auth = [f"Authorization: Bearer {token}"]
            targets: dict[str, tuple[Server, str, list[str]]] = {
                "bare": (bare, f"http://127.0.0.1:{bare.port}{ME_PATH}", []),
                "dmd": (dmd, f"http://127.0.0.1:{dmd.port}{ME_PATH}", auth),
            }
            results: dict[str, list[Round]] = {"bare": [], "dmd": []}

            def once(name: str, seconds: int) -> Round:
                srv, url, headers = targets[name]
                cpu0, t0 = cpu_seconds(srv.proc.pid), time.monotonic()
                res = run_wrk(wrk, url, seconds=seconds, threads=s.threads,
                              connections=s.connections, headers=headers, cpu=s.wrk_cpu)
                cpu1, t1 = cpu_seconds(srv.proc.pid), time.monotonic()
                srv.check_alive()
                return Round(res, t1 - t0, cpu1 - cpu0)

            for name in ("bare", "dmd"):
                print(f"bench: warming up {name} for {s.warmup} s", flush=True)
                once(name, s.warmup)
            for i in range(s.rounds):
                for name in ("bare", "dmd"):
                    rnd = once(name, s.seconds)
                    results[name].append(rnd)
                    res = rnd.wrk
                    extra = f", socket errors: {res.socket_errors}" if res.socket_errors else ""
                    print(f"bench: round {i + 1} {name:4}: {res.rps:10,.0f} req/s  "
                          f"p50 {res.p50_ms:6.2f} ms  p99 {res.p99_ms:6.2f} ms  "
                          f"{rnd.cpu_us_per_request:5.0f} µs CPU/req  "
                          f"CPU busy {rnd.busy:4.0%}{extra}", flush=True)
            for srv in (dmd, bare):
                if srv.log_tail():
                    print(f"bench: {srv.name} logged:\n{srv.log_tail()}", file=sys.stderr)
    except BenchError as e:
        print(f"bench: FAILED: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130

    bare_s, dmd_s = Summary(results["bare"]), Summary(results["dmd"])
    ratio, result = verdict(bare_s, dmd_s)
    print()
    print("\n".join(table(bare_s, dmd_s)))
    print()
    print(f"dmd / bare = {ratio:.1%}  ->  {result} (goal: at least {GOAL:.0%}); rounds of one "
          f"server differed by up to {max(bare_s.spread, dmd_s.spread):.0%}")
    note = contention_note(bare_s, dmd_s)
    if note:
        print(f"bench: {note}", file=sys.stderr)
    if not args.no_docs:
        write_docs(section(bare_s, dmd_s, s, wrk, when))
        print(f"bench: wrote {DOCS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
