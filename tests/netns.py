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
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiodocker
import pytest

from tests.runtime.images import BUSYBOX_REF, busybox_rootfs_tar

__all__ = ["Nat", "behind_nat", "dockerd_in_netns", "in_thread"]


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


def in_thread(fn: Callable[[], Awaitable[Any]]) -> Any:
    """Run a coroutine function on its own loop in its own thread (fixtures run beside the tests' loops)."""
    out: dict[str, Any] = {}

    def main() -> None:
        try:
            out["value"] = asyncio.run(fn())  # type: ignore[arg-type]
        except BaseException as e:
            out["error"] = e

    t = threading.Thread(target=main)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out.get("value")


def _mounts_under(path: str) -> list[str]:
    with open("/proc/self/mounts") as fh:
        points = [line.split()[1] for line in fh]
    return sorted((p for p in points if p == path or p.startswith(path + "/")), key=len, reverse=True)


@contextlib.contextmanager
def dockerd_in_netns(netns: str, *extra: str, what: str = "the second dockerd") -> Iterator[str]:
    """A dockerd in the network namespace ``netns`` (nsenter --net, not `ip netns exec`: see
    DESIGN), its data, exec root and socket in a folder of its own; yields its DOCKER_HOST. Then
    its containers, the daemon, its mounts and its files go."""
    if shutil.which("dockerd") is None:
        pytest.fail("dockerd is missing (docker.io)", pytrace=False)
    base = tempfile.mkdtemp(prefix="dm-dockerd-", dir="/tmp")
    sock = f"{base}/docker.sock"
    log = open(f"{base}/dockerd.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        ["nsenter", f"--net=/var/run/netns/{netns}", "dockerd", "--data-root", f"{base}/data", "--exec-root",
         f"{base}/exec", "-H", f"unix://{sock}", "--pidfile", f"{base}/docker.pid", "--iptables=false", *extra],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{what} exited ({proc.returncode}): "
                            f"{Path(base, 'dockerd.log').read_text(errors='replace')[-2000:]}", pytrace=False)
            done = subprocess.run(["curl", "-sf", "--unix-socket", sock, "http://localhost/_ping"],
                                  capture_output=True, timeout=5)
            if done.returncode == 0:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"{what} did not answer within 30 s", pytrace=False)
            time.sleep(0.1)
        yield f"unix://{sock}"
    finally:
        async def wipe() -> None:
            async with aiodocker.Docker(url=f"unix://{sock}") as d:
                for c in await d.containers.list(all=True):
                    await c.delete(force=True)

        with contextlib.suppress(Exception):
            in_thread(wipe)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
        for point in _mounts_under(base):
            subprocess.run(["umount", "-l", point], check=False, timeout=10)
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def behind_nat() -> Iterator[Nat]:
    for tool in ("ip", "nsenter", "dockerd", "iptables"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing (iproute2, util-linux, docker.io, iptables)", pytrace=False)
    tag = secrets.token_hex(3)
    n = secrets.randbelow(200) + 20
    netns, host_if, ns_if = f"dm-nat-{tag}", f"dmh{tag}", f"dmn{tag}"
    nat = Nat(netns, f"10.231.{n}.1", f"10.231.{n}.2", f"10.232.{n}.0/24", "")
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
        rootfs = busybox_rootfs_tar()

        async def load_busybox(docker_host: str) -> None:
            async with aiodocker.Docker(url=docker_host) as d:
                repo, tag_ = BUSYBOX_REF.rsplit(":", 1)
                await d._query_json("images/create", "POST", params={"fromSrc": "-", "repo": repo, "tag": tag_},
                                    data=rootfs, headers={"Content-Type": "application/x-tar"})

        with dockerd_in_netns(netns, "--bip", f"10.232.{n}.1/24", what="the NAT node's dockerd") as docker_host:
            in_thread(lambda: load_busybox(docker_host))
            yield Nat(nat.netns, nat.host_ip, nat.node_ip, nat.container_net, docker_host)
    finally:
        subprocess.run(["ip", "link", "del", host_if], check=False, capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", netns], check=False, capture_output=True, timeout=10)
