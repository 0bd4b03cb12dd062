"""Fixtures for the SSH access tests: a real dockerd, the local test images, the real OpenSSH client.

Missing pieces FAIL the run (never skip): the Docker Engine, ``dm-test/openssh:bookworm``
(built and cached by scripts/test-images.sh) and ``ssh``/``ssh-keygen``/``ssh-keyscan``
(scripts/ensure-services.sh installs them). Logins go straight to the container's address on
port 22. Each module shares one container; every container is removed afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent import protocol as p
from agent.access.ssh import SshAccess
from agent.protocol.types import ContainerInfo, ContainerSpec
from agent.runtime.docker import DockerDriver
from agent.runtime.driver import ExecResult

# The dmd-level tests (test_via_dmd.py) use the in-process local node on the real dockerd.
from tests.instances.conftest import docker, local  # noqa: F401
from tests.runtime.conftest import docker_test_image  # noqa: F401
from tests.runtime.images import BUSYBOX_REF, OPENSSH_REF
from tests.wire import call

REPO = Path(__file__).resolve().parents[2]
DOCKER_HOST = os.environ.get("DM_TEST_DOCKER_HOST", "unix:///var/run/docker.sock")
TEST_LABEL = "dm.test"
NODE_ID = 7
SSH_OPTIONS = [
    "-F", "/dev/null",  # the machine's ssh_config must not change what is tested
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "BatchMode=yes",
    "-o", "IdentitiesOnly=yes",
    "-o", "ConnectTimeout=5",
    "-o", "LogLevel=ERROR",
]


@pytest.fixture(scope="session")
def test_images() -> tuple[str, str]:
    """Build (once) the test images with scripts/test-images.sh; fail loudly without them."""
    missing = [tool for tool in ("ssh", "ssh-keygen", "ssh-keyscan") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: install openssh-client (scripts/ensure-services.sh)",
                    pytrace=False)
    env = {**os.environ, "DOCKER_HOST": DOCKER_HOST}
    try:
        done = subprocess.run([str(REPO / "scripts" / "test-images.sh")], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=1200)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"scripts/test-images.sh could not run: {exc}", pytrace=False)
    if done.returncode != 0:
        pytest.fail(f"the SSH access tests need a Docker Engine and the test images; scripts/test-images.sh "
                    f"failed (exit {done.returncode}):\n{done.stdout}{done.stderr}", pytrace=False)
    return OPENSSH_REF, BUSYBOX_REF


@dataclass(frozen=True)
class KeyPair:
    path: Path  # the private key; the public one is next to it (.pub)
    public: str  # the authorized_keys line

    def line(self, *, options: str | None = None, comment: str | None = None) -> str:
        """The public key as an authorized_keys line with other options or comment."""
        kind, blob = self.public.split()[:2]
        head = f"{options} " if options else ""
        return f"{head}{kind} {blob}" + (f" {comment}" if comment is not None else "")


def make_key(directory: Path, name: str) -> KeyPair:
    path = directory / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"dm-test-{name}", "-f", str(path)],
                   check=True, capture_output=True, timeout=30)
    return KeyPair(path, (directory / f"{name}.pub").read_text().strip())


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, KeyPair]:
    """Three fresh key pairs, A, B and C."""
    directory = tmp_path_factory.mktemp("ssh-keys")
    return {name: make_key(directory, name) for name in ("A", "B", "C")}


@dataclass
class Login:
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def refused(self) -> bool:
        """sshd answered and would not take the key (not: nothing listening)."""
        return self.returncode == 255 and "Permission denied" in self.stderr


async def ssh(ip: str, key: KeyPair, *, user: str = "root", command: str = "true") -> Login:
    """One login with the real client (its own process: the event loop is never blocked)."""
    proc = await asyncio.create_subprocess_exec(
        "ssh", *SSH_OPTIONS, "-i", str(key.path), f"{user}@{ip}", command,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return Login(proc.returncode if proc.returncode is not None else -1, out.decode(), err.decode())


async def host_key_fingerprints(ip: str, port: int = 22) -> set[tuple[str, str]]:
    """(type, fingerprint) of each host key the server offers: ssh-keyscan | ssh-keygen -lf -."""
    scan = await asyncio.create_subprocess_exec("ssh-keyscan", "-T", "5", "-p", str(port), ip,
                                                stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.DEVNULL)
    scanned, _ = await asyncio.wait_for(scan.communicate(), 30)
    assert scanned.strip(), f"ssh-keyscan {ip} found no host keys"
    listing = await asyncio.create_subprocess_exec("ssh-keygen", "-lf", "-", stdin=asyncio.subprocess.PIPE,
                                                   stdout=asyncio.subprocess.PIPE)
    listed, _ = await asyncio.wait_for(listing.communicate(scanned), 30)
    found = set()
    for line in listed.decode().splitlines():  # "256 SHA256:... 172.17.0.2 (ED25519)"
        fields = line.split()
        found.add((fields[-1].strip("()"), fields[1]))
    return found


async def host_keys_offered(ip: str, port: int = 22) -> set[str]:
    """'type base64' of each host key the server offers (ssh-keyscan)."""
    scan = await asyncio.create_subprocess_exec("ssh-keyscan", "-T", "5", "-p", str(port), ip,
                                                stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.DEVNULL)
    scanned, _ = await asyncio.wait_for(scan.communicate(), 30)
    return {" ".join(line.split()[1:3]) for line in scanned.decode().splitlines()
            if line.strip() and not line.startswith("#")}


@dataclass
class Box:
    """One instance: a real container, the SshAccess under test, and helpers around them."""

    driver: DockerDriver
    access: SshAccess
    instance_id: int
    container_id: str
    prefix: str

    async def info(self) -> ContainerInfo:
        found = await self.driver.inspect(self.container_id)
        assert found is not None
        return found

    async def ip(self) -> str:
        info = await self.info()
        assert info.state == "running" and info.ip_address, info
        return info.ip_address

    async def access_ssh(self, keys: list[str], *, enabled: bool = True) -> dict[str, Any]:
        reply = await call(self.access.handle_access, p.InstanceAccess,
            {"instance_id": self.instance_id, "ssh": {"enabled": enabled, "keys": keys}}
        )
        status: dict[str, Any] = reply["ssh"]
        return status

    async def sh(self, script: str, *, user: str | None = "0:0") -> ExecResult:
        """A test's own constant shell line in the container."""
        return await self.driver.exec(self.container_id, ["/bin/sh", "-c", script], user=user, timeout=30)

    async def sshd_pid(self) -> int | None:
        result = await self.sh("cat /run/dm-sshd.pid 2>/dev/null")
        text = result.stdout_text.strip()
        return int(text) if text.isdigit() else None

    async def exited(self, pid: int) -> bool:
        """Whether process `pid` of the container is gone."""
        return (await self.sh(f"kill -0 {pid}")).exit_code != 0


def spec_for(prefix: str, image: str, instance_id: int, **kwargs: Any) -> ContainerSpec:
    kwargs.setdefault("command", ["sleep", "infinity"])
    return ContainerSpec(instance_id=instance_id, node_id=NODE_ID, name=f"{prefix}-{instance_id}", image=image,
                         labels={TEST_LABEL: prefix}, **kwargs)


@contextlib.asynccontextmanager
async def running_box(image: str, **kwargs: Any) -> AsyncIterator[Box]:
    """A started container of ``image`` with an SshAccess whose find() looks it up by instance id."""
    prefix = f"dmssh-{secrets.token_hex(4)}"
    driver = DockerDriver(DOCKER_HOST)
    instance_id = random.randint(1_000_000_000, 2_000_000_000)
    try:
        info = await driver.create(spec_for(prefix, image, instance_id, **kwargs))
        await driver.start(info.id)
        access = SshAccess(driver, driver.find_instance)
        box = Box(driver, access, instance_id, info.id, prefix)
        yield box
    finally:
        for container in await driver.list(all=True):
            if container.labels.get(TEST_LABEL) == prefix:
                with contextlib.suppress(Exception):
                    await driver.remove(container.id, force=True)
        await driver.close()


