"""A node behind NAT on this one machine: a network namespace that can dial out and cannot be dialed.

`behind_nat()` makes a namespace joined to the host by a veth pair (the host's end
10.231.N.1/30, the namespace's 10.231.N.2/30, its default route through the host), drops every
new connection that comes into the namespace (what a home router's NAT does), and starts a
dockerd inside it whose containers live on 10.232.N.0/24 — a network the host has no route to.
So the test's side cannot reach the node or its instances; the node's agent reaches dmd at
10.231.N.1. The busybox test image is imported into that dockerd.

    with behind_nat() as nat:      # nat.netns, nat.host_ip, nat.docker_host, nat.run_inside(argv)
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiodocker
import pytest

from tests.runtime.images import BUSYBOX_REF, busybox_rootfs_tar

__all__ = ["Nat", "behind_nat"]


@dataclass(frozen=True)
class Nat:
    netns: str
    host_ip: str  # the host's end of the veth: where the node dials dmd
    node_ip: str  # the namespace's end: unreachable from the host for new connections
    container_net: str  # the namespace's docker bridge, unrouted from the host
    docker_host: str

    def inside(self, argv: list[str]) -> list[str]:
        """``argv`` run in the namespace's network (nsenter --net, not `ip netns exec`: see DESIGN)."""
        return ["nsenter", f"--net=/var/run/netns/{self.netns}", *argv]


def _run(*argv: str) -> None:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(argv)} failed: {done.stderr.strip()}", pytrace=False)


def _in_thread(coro_fn) -> None:  # type: ignore[no-untyped-def]
    """Run a coroutine function to the end on a loop of its own (fixtures may run inside a loop)."""
    error: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(coro_fn())
        except BaseException as e:
            error.append(e)

    t = threading.Thread(target=target)
    t.start()
    t.join(120)
    if error:
        raise error[0]


@contextlib.contextmanager
def behind_nat() -> Iterator[Nat]:
    for tool in ("ip", "nsenter", "dockerd", "iptables"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing (iproute2, util-linux, docker.io, iptables)", pytrace=False)
    tag = secrets.token_hex(3)
    n = secrets.randbelow(200) + 20
    netns, host_if, ns_if = f"dm-nat-{tag}", f"dmh{tag}", f"dmn{tag}"
    nat = Nat(netns, f"10.231.{n}.1", f"10.231.{n}.2", f"10.232.{n}.0/24", "")
    base = tempfile.mkdtemp(prefix="dm-nat-", dir="/tmp")
    sock = f"{base}/docker.sock"
    proc: subprocess.Popen[bytes] | None = None
    try:
        _run("ip", "netns", "add", netns)
        _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _run("ip", "link", "set", ns_if, "netns", netns)
        _run("ip", "addr", "add", f"{nat.host_ip}/30", "dev", host_if)
        _run("ip", "link", "set", host_if, "up")
        for argv in (["ip", "addr", "add", f"{nat.node_ip}/30", "dev", ns_if], ["ip", "link", "set", ns_if, "up"],
                     ["ip", "link", "set", "lo", "up"], ["ip", "route", "add", "default", "via", nat.host_ip],
                     # NAT: answers to what the node opened pass, nothing new comes in.
                     ["iptables", "-A", "INPUT", "-i", ns_if, "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP"],
                     ["iptables", "-A", "FORWARD", "-i", ns_if, "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP"]):
            _run("ip", "netns", "exec", netns, *argv)
        log = open(f"{base}/dockerd.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            nat.inside(["dockerd", "--data-root", f"{base}/data", "--exec-root", f"{base}/exec", "-H",
                        f"unix://{sock}", "--pidfile", f"{base}/docker.pid", "--iptables=false",
                        "--bip", f"10.232.{n}.1/24"]),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the NAT node's dockerd exited ({proc.returncode}): "
                            f"{Path(base, 'dockerd.log').read_text(errors='replace')[-2000:]}", pytrace=False)
            done = subprocess.run(["curl", "-sf", "--unix-socket", sock, "http://localhost/_ping"],
                                  capture_output=True, timeout=5)
            if done.returncode == 0:
                break
            if time.monotonic() > deadline:
                pytest.fail("the NAT node's dockerd did not answer within 30 s", pytrace=False)
            time.sleep(0.1)

        rootfs = busybox_rootfs_tar()

        async def load_busybox() -> None:
            async with aiodocker.Docker(url=f"unix://{sock}") as d:
                repo, tag_ = BUSYBOX_REF.rsplit(":", 1)
                await d._query_json("images/create", "POST", params={"fromSrc": "-", "repo": repo, "tag": tag_},
                                    data=rootfs, headers={"Content-Type": "application/x-tar"})

        _in_thread(load_busybox)
        yield Nat(nat.netns, nat.host_ip, nat.node_ip, nat.container_net, f"unix://{sock}")
    finally:
        if proc is not None:
            async def wipe() -> None:
                async with aiodocker.Docker(url=f"unix://{sock}") as d:
                    for c in await d.containers.list(all=True):
                        await c.delete(force=True)

            with contextlib.suppress(Exception):
                _in_thread(wipe)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        done = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True, timeout=10)
        for point in sorted((p for p in done.stdout.split() if p.startswith(base)), reverse=True):
            subprocess.run(["umount", "-l", point], check=False, timeout=10)
        shutil.rmtree(base, ignore_errors=True)
        subprocess.run(["ip", "link", "del", host_if], check=False, capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", netns], check=False, capture_output=True, timeout=10)
