"""Fixtures for the port forwarding tests: a real dockerd, real iptables, real network namespaces.

Nothing here skips: without Docker, the test image, root or iptables the tests FAIL, since they
are what proves the forwarding works. Each test gets its own installation id (so its own
iptables chains and its own containers), host ports from a random block of the default pools
(so parallel runs rarely meet), and everything it made is removed afterwards, also on failure:
containers, helper processes, network namespaces, and our chains and hooks (teardown()).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiodocker
import pytest

from agent.config import AgentConfig
from agent.ports.kernel import KernelForwarder
from agent.ports.manager import PortForwarding, chain_tag
from agent.ports.pools import PortPools, listening_ports
from agent.protocol.types import ContainerInfo, ContainerSpec
from agent.runtime.docker import DockerDriver

REPO = Path(__file__).resolve().parents[2]
DOCKER_HOST = os.environ.get("DM_TEST_DOCKER_HOST", "unix:///var/run/docker.sock")
IMAGE = "dm-test/busybox:latest"
BB = "/bin/busybox"
BLOCK = 400  # host ports per test run, from inside the default pools
ECHO_PORT = 9000

# A UDP echo server, run inside a container's network namespace (busybox's nc has no UDP).
UDP_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
while True:
    data, addr = s.recvfrom(65535)
    s.sendto(b"echo:" + data, addr)
"""

# A TCP client run inside another network namespace: greeting line, then an echo.
NS_CLIENT = """
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    f = s.makefile("rb")
    greeting = f.readline()
    s.sendall(b"ping\\n")
    print((greeting + f.readline()).decode().replace("\\n", "|"))
except ConnectionRefusedError:
    print("refused")
except OSError as e:
    print("error", e)
"""


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="session")
def test_image() -> str:
    """The busybox test image, built once if missing; its absence fails the run loudly."""
    done = subprocess.run([sys.executable, "-m", "tests.runtime.images", "--only", "busybox",
                           "--docker-host", DOCKER_HOST], cwd=REPO, capture_output=True, text=True, timeout=600,
                          check=False)
    if done.returncode != 0:
        pytest.fail(f"the port tests need Docker and {IMAGE}; building it failed:\n{done.stdout}{done.stderr}",
                    pytrace=False)
    return IMAGE


@pytest.fixture(scope="session")
def kernel_ready() -> None:
    """Kernel forwarding must be usable here (root, iptables, the nat table)."""
    ok, why = asyncio.run(KernelForwarder.available())
    if not ok:
        pytest.fail(f"the port tests need kernel forwarding: {why}", pytrace=False)


class Ports:
    """Fresh host ports from this run's random block, skipping those host programs hold."""

    def __init__(self) -> None:
        self.first = random.randrange(20000, 30000 - BLOCK)
        self.last = self.first + BLOCK - 1
        self._next = self.first
        self.pools = {"tcp": f"{self.first}-{self.last}", "udp": f"{self.first}-{self.last}"}

    def take(self) -> int:
        held = listening_ports(PortPools.parse(self.pools))
        while self._next <= self.last:
            port, self._next = self._next, self._next + 1
            if port not in held["tcp"] and port not in held["udp"]:
                return port
        raise AssertionError("this run used up its block of host ports")


@pytest.fixture(scope="session")
def ports() -> Ports:
    return Ports()


@dataclass
class Env:
    driver: DockerDriver
    docker: aiodocker.Docker
    installation: str
    node_id: int
    ports: Ports
    containers: list[str] = field(default_factory=list)
    managers: list[PortForwarding] = field(default_factory=list)
    processes: list[asyncio.subprocess.Process] = field(default_factory=list)
    next_instance: int = 1

    def config(self, mode: str = "kernel") -> AgentConfig:
        return AgentConfig(server="http://dm.test:3150", node_id=self.node_id, credential=None,
                           port_pools=dict(self.ports.pools), port_forwarding=mode)

    def manager(self, mode: str = "kernel") -> PortForwarding:
        config = self.config(mode)
        pf = PortForwarding(self.driver, lambda: config, lambda: self.installation)
        self.managers.append(pf)
        return pf

    @property
    def tag(self) -> str:
        return chain_tag(self.node_id, self.installation)

    async def container(self, command: list[str], *, start: bool = True,
                        installation: str | None = None) -> ContainerInfo:
        instance_id = self.next_instance
        self.next_instance += 1
        spec = ContainerSpec(instance_id=instance_id, node_id=self.node_id,
                             name=f"dmt-ports-{self.installation}-{instance_id}", image=IMAGE, command=command,
                             labels={"dm.installation": installation or self.installation})
        info = await self.driver.create(spec)
        self.containers.append(info.id)
        if start:
            await self.driver.start(info.id)
        current = await self.driver.inspect(info.id)
        assert current is not None
        return current

    async def echo(self, name: str) -> ContainerInfo:
        """A TCP server on ECHO_PORT: a greeting line with ``name``, then an echo, per connection."""
        return await self.container([BB, "nc", "-ll", "-p", str(ECHO_PORT), "-e", BB, "sh", "-c",
                                     f"echo id-{name}; exec {BB} cat"])

    async def udp_echo(self) -> ContainerInfo:
        """A container whose network namespace runs a UDP echo on ECHO_PORT."""
        info = await self.container([BB, "sleep", "3600"])
        pid = (await (await self.docker.containers.get(info.id)).show())["State"]["Pid"]
        proc = await asyncio.create_subprocess_exec(
            "nsenter", f"--net=/proc/{pid}/ns/net", sys.executable, "-c", UDP_ECHO, str(ECHO_PORT),
            stdout=asyncio.subprocess.PIPE)
        self.processes.append(proc)
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 10)).strip() == b"ready"
        return info


@pytest.fixture
async def env(test_image: str, kernel_ready: None, ports: Ports) -> AsyncIterator[Env]:
    driver = DockerDriver(DOCKER_HOST)
    docker = aiodocker.Docker(url=DOCKER_HOST)
    e = Env(driver=driver, docker=docker, installation=secrets.token_hex(4),
            node_id=random.randrange(100_000, 999_999), ports=ports)
    try:
        yield e
    finally:
        for proc in e.processes:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        for cid in e.containers:
            await driver.remove(cid, force=True)
        for pf in e.managers:
            await pf.teardown()
        leftover = await KernelForwarder(e.tag).chains_exist()
        await driver.close()
        await docker.close()
        assert not leftover, f"chains of {e.tag} were left behind"


@dataclass
class Netns:
    name: str
    host_ip: str  # the host's end of the veth pair
    ns_ip: str


@pytest.fixture
def netns() -> Iterator[Netns]:
    """Another network namespace, joined to the host by a veth pair (a /30)."""
    suffix = secrets.token_hex(3)
    name, host_if, ns_if = f"dmt{suffix}", f"dmt{suffix}a", f"dmt{suffix}b"
    third = random.randrange(0, 256)
    fourth = random.randrange(0, 64) * 4
    host_ip, ns_ip = f"10.250.{third}.{fourth + 1}", f"10.250.{third}.{fourth + 2}"
    steps = [
        ("ip", "netns", "add", name),
        ("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if),
        ("ip", "link", "set", ns_if, "netns", name),
        ("ip", "addr", "add", f"{host_ip}/30", "dev", host_if),
        ("ip", "link", "set", host_if, "up"),
        ("ip", "-n", name, "addr", "add", f"{ns_ip}/30", "dev", ns_if),
        ("ip", "-n", name, "link", "set", ns_if, "up"),
        ("ip", "-n", name, "link", "set", "lo", "up"),
        ("ip", "-n", name, "route", "add", "default", "via", host_ip),
    ]
    try:
        for step in steps:
            done = _run(*step)
            if done.returncode != 0:
                pytest.fail(f"{' '.join(step)} failed: {done.stderr.strip()}", pytrace=False)
        yield Netns(name, host_ip, ns_ip)
    finally:
        _run("ip", "link", "del", host_if)
        _run("ip", "netns", "del", name)


async def ns_connect(ns: Netns, host: str, port: int) -> str:
    """Connect from inside ``ns``: "id-NAME|ping|" (greeting and echo), "refused" or "error ..."."""
    proc = await asyncio.create_subprocess_exec(
        "nsenter", f"--net=/var/run/netns/{ns.name}", sys.executable, "-c", NS_CLIENT, host, str(port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    return out.decode().strip()


async def host_address() -> str:
    """The host's own non-loopback IPv4 address (of the interface holding the default route)."""
    done = await asyncio.to_thread(_run, "ip", "-4", "-o", "route", "get", "203.0.113.1")
    words = done.stdout.split()
    if done.returncode != 0 or "src" not in words:
        pytest.fail(f"cannot find this host's address: {done.stdout}{done.stderr}", pytrace=False)
    return words[words.index("src") + 1]
