"""Benchmark: SSH through dmd's gateway against SSH straight to the instance's sshd.

    python bench/ssh_gateway.py [--mib 256] [--rounds 3] [--echoes 300] [--no-docs]

A real dmd with its local node and its gateway on 127.0.0.1:<any>, an instance of the OpenSSH
test image; the real OpenSSH client with the ~/.ssh/config GET /api/v1/ssh/config gives. Direct:
the same client, same keys and host keys, to the instance's port map (127.0.0.1:<host port>).

1. Bulk copy: `head -c N | ssh box 'cat > /dev/null'`, rounds alternating gateway and direct
   (goal: gateway at least 0.5 of direct).
2. Interactive round trip: one byte written to `ssh box cat` and read back, `--echoes` times in
   one session (goal: the gateway's median within 5 ms of direct).
3. `-L` tunnel throughput (through the gateway: `ssh -N -L port:127.0.0.1:5001 box`) to a perl
   sink in the instance, against `-L` straight to the instance's sshd (goal: at least 0.5), and
   plain TCP to the container for scale.
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
import tempfile
import time
from pathlib import Path
from typing import Any

import aiodocker

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from live_dmd import cpu_model, free_port, live_dmd  # noqa: E402
from port_maps import SINK, SINK_PORT, accepting, blast  # noqa: E402
from sections import write_section  # noqa: E402

from tests.runtime.images import OPENSSH_REF  # noqa: E402

START, END = "<!-- bench:ssh-gateway:start -->", "<!-- bench:ssh-gateway:end -->"


async def timed_copy(argv: list[str], mib: int) -> float:
    """MiB/s of `head -c N | ssh ... 'cat > /dev/null'`."""
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        "sh", "-c", f'head -c {mib}M /dev/zero | exec "$@" "cat > /dev/null"', "sh", *argv,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv}: {err.decode()}")
    return mib / (time.perf_counter() - started)


async def echoes(argv: list[str], n: int) -> list[float]:
    """Round trips (ms) of one byte through `ssh ... cat`, in one session."""
    proc = await asyncio.create_subprocess_exec(*argv, "cat", stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    took = []
    try:
        for i in range(n + 10):
            started = time.perf_counter()
            proc.stdin.write(b"x")
            await proc.stdin.drain()
            await proc.stdout.readexactly(1)
            if i >= 10:  # the first ones warm the path
                took.append((time.perf_counter() - started) * 1000)
    finally:
        proc.stdin.close()
        await proc.wait()
    return took


async def run(mib: int, rounds: int, n_echoes: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="dm-bench-ssh-"))
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "key")], check=True)
    async with live_dmd(OPENSSH_REF, ssh_listen="127.0.0.1:0") as live:
        s, base, headers = live.session, live.base, live.headers
        r = await s.post(f"{base}/api/v1/ssh-keys", headers=headers,
                         json={"name": "bench", "public_key": (work / "key.pub").read_text()})
        assert r.status == 201, await r.text()
        r = await s.post(f"{base}/api/v1/instances", headers=headers, json={
            "name": "box", "image": OPENSSH_REF, "node_id": live.node_id, "command": ["perl", "-e", SINK]})
        assert r.status == 201, await r.text()
        iid = (await r.json())["id"]
        try:
            while (inst := await (await s.get(f"{base}/api/v1/instances/{iid}", headers=headers)).json())[
                    "ssh"]["state"] != "ready":
                await asyncio.sleep(0.1)
            r = await s.get(f"{base}/api/v1/ssh/config", headers=headers,
                            params={"known_hosts_path": str(work / "known_hosts")})
            conf = await r.json()
            (work / "known_hosts").write_text(conf["known_hosts"])
            (work / "config").write_text(f"IdentityFile {work / 'key'}\nIdentitiesOnly yes\nBatchMode yes\n"
                                         f"StrictHostKeyChecking yes\nLogLevel ERROR\n\n{conf['config']}")
            via = ["ssh", "-F", str(work / "config"), "box"]
            direct = ["ssh", "-F", str(work / "config"), "-o", "ProxyJump=none", "-o", "HostName=127.0.0.1",
                      "-o", f"Port={inst['ssh']['port']}", "-o", "HostKeyAlias=box", "box"]
            async with aiodocker.Docker() as docker:
                ip = (await docker.containers.container(inst["container_id"]).show())["NetworkSettings"]["IPAddress"]

            await timed_copy(via, 16)  # warm both
            await timed_copy(direct, 16)
            bulk: dict[str, list[float]] = {"gateway": [], "direct": []}
            for n in range(rounds):
                order = ("gateway", "direct") if n % 2 == 0 else ("direct", "gateway")
                for name in order:
                    bulk[name].append(await timed_copy(via if name == "gateway" else direct, mib))

            rtt = {"gateway": await echoes(via, n_echoes), "direct": await echoes(direct, n_echoes)}

            # -L through the gateway, -L straight to the instance's sshd, and plain TCP to the container.
            lport, dport = free_port(), free_port()
            tunnels = [await asyncio.create_subprocess_exec(*argv[:-1], "-N", "-L", f"{port}:127.0.0.1:{SINK_PORT}",
                                                            "box", stdin=asyncio.subprocess.DEVNULL)
                       for argv, port in ((via, lport), (direct, dport))]
            try:
                await accepting(lport, time.perf_counter() + 30)
                await accepting(dport, time.perf_counter() + 30)
                total = mib << 20
                await asyncio.to_thread(blast, "127.0.0.1", lport, 16 << 20)
                await asyncio.to_thread(blast, "127.0.0.1", dport, 16 << 20)
                targets = {"gateway": ("127.0.0.1", lport), "ssh": ("127.0.0.1", dport), "tcp": (ip, SINK_PORT)}
                tun: dict[str, list[float]] = {name: [] for name in targets}
                for n in range(rounds):
                    for name in (list(targets) if n % 2 == 0 else list(reversed(targets))):
                        secs = await asyncio.to_thread(blast, *targets[name], total)
                        tun[name].append(mib / secs)
            finally:
                for t in tunnels:
                    t.terminate()
                    await t.wait()
        finally:
            await s.delete(f"{base}/api/v1/instances/{iid}", headers=headers)
            while (await s.get(f"{base}/api/v1/instances/{iid}", headers=headers)).status != 404:
                await asyncio.sleep(0.05)

    def q(xs: list[float], p: float) -> float:
        return sorted(xs)[min(len(xs) - 1, int(p * len(xs)))]

    return {
        "mib": mib, "rounds": rounds, "echoes": n_echoes,
        "bulk_gateway": statistics.median(bulk["gateway"]), "bulk_direct": statistics.median(bulk["direct"]),
        "bulk_all": {k: [round(x) for x in v] for k, v in bulk.items()},
        "bulk_ratio": statistics.median(g / d for g, d in zip(bulk["gateway"], bulk["direct"], strict=True)),
        "rtt_gateway_p50": q(rtt["gateway"], 0.5), "rtt_gateway_p99": q(rtt["gateway"], 0.99),
        "rtt_direct_p50": q(rtt["direct"], 0.5), "rtt_direct_p99": q(rtt["direct"], 0.99),
        "tunnel": statistics.median(tun["gateway"]), "tunnel_ssh": statistics.median(tun["ssh"]),
        "tunnel_tcp": statistics.median(tun["tcp"]),
        "tunnel_all": {k: [round(x) for x in v] for k, v in tun.items()},
        "tunnel_ratio": statistics.median(t / d for t, d in zip(tun["gateway"], tun["ssh"], strict=True)),
        "tunnel_tcp_ratio": statistics.median(t / d for t, d in zip(tun["gateway"], tun["tcp"], strict=True)),
    }


def write_docs(res: dict[str, Any]) -> None:
    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    rtt_gap = res["rtt_gateway_p50"] - res["rtt_direct_p50"]
    rows = "\n".join([
        f"| bulk copy, {res['mib']} MiB (`ssh box 'cat > /dev/null'`), MiB/s | {res['bulk_gateway']:.0f} | "
        f"{res['bulk_direct']:.0f} | **{res['bulk_ratio']:.2f}** | ≥ 0.5: {verdict(res['bulk_ratio'] >= 0.5)} |",
        f"| one byte echoed (`ssh box cat`), ms p50 / p99 | {res['rtt_gateway_p50']:.2f} / "
        f"{res['rtt_gateway_p99']:.2f} | {res['rtt_direct_p50']:.2f} / {res['rtt_direct_p99']:.2f} | "
        f"**+{rtt_gap:.2f} ms** | ≤ +5 ms: {verdict(rtt_gap <= 5)} |",
        f"| `-L` tunnel, {res['mib']} MiB to a sink in the instance, MiB/s | {res['tunnel']:.0f} | "
        f"{res['tunnel_ssh']:.0f} (`-L` to its sshd) | **{res['tunnel_ratio']:.2f}** | "
        f"≥ 0.5: {verdict(res['tunnel_ratio'] >= 0.5)} |",
        f"| the same tunnel against plain TCP to the container, MiB/s | {res['tunnel']:.0f} | "
        f"{res['tunnel_tcp']:.0f} | {res['tunnel_tcp_ratio']:.2f} | (SSH's own cost: see below) |",
    ])
    section = f"""{START}
## SSH gateway: bulk copy, round trip and -L tunnel, against direct SSH

Measured {dt.date.today().isoformat()} on {os.cpu_count()} cores ({cpu_model()}), Python
{platform.python_version()}, by `python bench/ssh_gateway.py`; dmd with `--local-node` (the agent in
dmd's own process: its SSH gateway, the stream multiplexer and the agent's side share one event
loop and one CPU) and its gateway on 127.0.0.1, an instance of the OpenSSH test image, the OpenSSH
client with the config from `GET /api/v1/ssh/config`. Direct: the same client and keys to the
instance's SSH port map.

| what | through the gateway | direct | ratio / gap | goal |
|---|---|---|---|---|
{rows}

Rounds (alternating, order swapped each round): bulk {res['bulk_all']}, tunnel {res['tunnel_all']};
{res['echoes']} echoes each way. Through the gateway every byte is decrypted and encrypted once more
(the client's connection to the gateway) and crosses the agent link's stream, and the client runs two
ssh processes (the jump and the inner session): on 2 cores, dmd's loop was idle about half of a
transfer under cProfile, so the client's and sshd's processes set the pace. The gateway offers AES-GCM
only (OpenSSH would otherwise pick ChaCha20-Poly1305 or AES-CTR with a MAC, which asyncssh computes
per packet in Python). A `-L`
tunnel is SSH inside SSH whichever way it goes (the instance's sshd decrypts it), so its fair
comparison is `-L` straight to the sshd; plain TCP to the container, unencrypted, is shown for scale.
{END}"""
    write_section(section, START, END)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--echoes", type=int, default=300)
    ap.add_argument("--no-docs", action="store_true")
    args = ap.parse_args()
    subprocess.run([sys.executable, "-m", "tests.runtime.images", "--only", "openssh"], cwd=REPO, check=True)
    res = asyncio.run(run(args.mib, args.rounds, args.echoes))
    print(json.dumps(res, indent=2))
    if not args.no_docs:
        write_docs(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
