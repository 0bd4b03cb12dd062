"""Fixtures for the runtime driver tests: one harness per driver (the fake and a real dockerd).

The Docker side needs a reachable Docker Engine and the local test image; both are checked
once per session and their absence FAILS the run (never skips): the conformance suite is
what proves the Docker driver works. The fake side needs nothing.

Everything a test creates is named with a per-test prefix and removed afterwards, also when
the test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiodocker
import pytest

from agent.protocol.types import ContainerSpec
from agent.runtime.docker import DockerDriver
from agent.runtime.driver import RuntimeDriver
from agent.runtime.fake import FakeDriver, FakeProcess
from tests.runtime.images import BUSYBOX_REF

REPO = Path(__file__).resolve().parents[2]
DOCKER_HOST = os.environ.get("DM_TEST_DOCKER_HOST", "unix:///var/run/docker.sock")
TEST_LABEL = "dm.test"

FakeProgram = Callable[[FakeProcess], Awaitable[int | None]]


@pytest.fixture(scope="session")
def docker_test_image() -> str:
    """Build (once) the busybox test image with scripts/test-images.sh; fail loudly without Docker."""
    env = {**os.environ, "DOCKER_HOST": DOCKER_HOST}
    try:
        done = subprocess.run(
            [str(REPO / "scripts" / "test-images.sh")],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"scripts/test-images.sh could not run: {exc}", pytrace=False)
    if done.returncode != 0:
        pytest.fail(
            "the Docker runtime tests need a reachable Docker Engine and the local test image; "
            f"scripts/test-images.sh failed (exit {done.returncode}):\n{done.stdout}{done.stderr}",
            pytrace=False,
        )
    return BUSYBOX_REF


@dataclass
class Harness:
    """One driver plus what a conformance test needs around it."""

    kind: str
    driver: RuntimeDriver
    prefix: str
    image: str
    docker: aiodocker.Docker | None = None
    fake: FakeDriver | None = None
    instance_ids: list[int] = field(default_factory=list)

    def name(self, suffix: str) -> str:
        return f"{self.prefix}-{suffix}"

    def repository(self, suffix: str) -> str:
        return f"dm-test/{self.prefix}-{suffix}"

    def spec(self, suffix: str = "c", *, instance_id: int | None = None, **kwargs: Any) -> ContainerSpec:
        if instance_id is None:
            instance_id = random.randint(1_000_000_000, 2_000_000_000)
        self.instance_ids.append(instance_id)
        labels = {TEST_LABEL: self.prefix, **kwargs.pop("labels", {})}
        kwargs.setdefault("image", self.image)
        return ContainerSpec(instance_id=instance_id, node_id=7, name=self.name(suffix), labels=labels, **kwargs)

    @property
    def label_change(self) -> str:
        """A Dockerfile line for imports, so that an image left untagged is still found at cleanup."""
        return f"LABEL {TEST_LABEL}={self.prefix}"

    def program(self, argv: Sequence[str], program: FakeProgram) -> None:
        """What ``argv`` does in the fake; the real engine runs the real command."""
        if self.fake is not None:
            self.fake.register_program(argv, program)

    async def make_unmanaged(self, suffix: str, command: Sequence[str]) -> str:
        """A container made behind DM's back (no DM labels), straight through the engine."""
        if self.fake is not None:
            return self.fake.add_container(self.name(suffix), self.image, command=command).id
        assert self.docker is not None
        container = await self.docker.containers.create(
            {"Image": self.image, "Cmd": list(command), "Labels": {TEST_LABEL: self.prefix}},
            name=self.name(suffix),
        )
        return container.id

    async def host_config(self, container_id: str) -> dict[str, Any]:
        """The HostConfig the engine holds (docker) or was sent (fake)."""
        if self.fake is not None:
            return dict(self.fake.payloads[container_id]["HostConfig"])
        assert self.docker is not None
        data = await self.docker.containers.container(container_id).show()
        return dict(data["HostConfig"])

    async def cleanup(self) -> None:
        if self.docker is None:
            return
        docker = self.docker
        filters = json.dumps({"label": [f"{TEST_LABEL}={self.prefix}"]})
        rows = await docker._query_json("containers/json", params={"all": "1", "filters": filters})
        rows += await docker._query_json(
            "containers/json", params={"all": "1", "filters": json.dumps({"name": [self.prefix]})}
        )
        for container_id in {row["Id"] for row in rows}:
            with contextlib.suppress(aiodocker.DockerError):
                await docker.containers.container(container_id).delete(force=True, v=True)
        for image in await docker.images.list():
            for tag in image.get("RepoTags") or []:
                if tag.startswith(f"dm-test/{self.prefix}"):
                    with contextlib.suppress(aiodocker.DockerError):
                        await docker.images.delete(tag, force=True)
        dangling = await docker.images.list(filters={"dangling": ["true"], "label": [f"{TEST_LABEL}={self.prefix}"]})
        for image in dangling:
            with contextlib.suppress(aiodocker.DockerError):
                await docker.images.delete(image["Id"], force=True)


@pytest.fixture(params=["fake", pytest.param("docker", marks=pytest.mark.docker)])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    prefix = f"dmtest-{secrets.token_hex(4)}"
    if request.param == "fake":
        fake = FakeDriver()
        fake.add_image(BUSYBOX_REF, cmd=["/bin/sh"])
        h = Harness("fake", fake, prefix, BUSYBOX_REF, fake=fake)
        try:
            yield h
        finally:
            await fake.close()
        return
    image = request.getfixturevalue("docker_test_image")
    docker = aiodocker.Docker(url=DOCKER_HOST)
    driver = DockerDriver(DOCKER_HOST)
    h = Harness("docker", driver, prefix, image, docker=docker)
    try:
        yield h
    finally:
        try:
            await asyncio.wait_for(h.cleanup(), 60)
        finally:
            await driver.close()
            await docker.close()
