"""Instances whose image has no sshd, or no shell at all: "no_server", and the instance runs on."""

from __future__ import annotations

import asyncio
import io
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from agent.runtime.docker import DockerDriver
from tests.access.conftest import DOCKER_HOST, TEST_LABEL, Box, KeyPair, running_box
from tests.runtime.images import BUSYBOX_BINARY

pytestmark = [pytest.mark.docker, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def busybox(test_images: tuple[str, str]) -> AsyncIterator[Box]:
    async with running_box(test_images[1], command=["sleep", "3600"]) as made:
        yield made


async def test_busybox_has_no_server_and_keeps_running(busybox: Box, keys: dict[str, KeyPair]) -> None:
    status = await busybox.access_ssh([keys["A"].public])
    assert status["state"] == "no_server", status
    assert "/usr/sbin/sshd" in (status["message"] or "")
    assert (await busybox.info()).state == "running"
    assert (await busybox.sh("ls /etc/dm 2>&1")).exit_code != 0  # nothing was written
    assert await busybox.access.supervise_once() == {}
    assert busybox.access.status(busybox.instance_id) == status
    again = await busybox.access.on_container_event(busybox.instance_id, "start")
    assert again is not None and again["state"] == "no_server"
    assert (await busybox_disabled(busybox))["state"] == "disabled"


async def busybox_disabled(box: Box) -> dict[str, object]:
    return await box.access_ssh([], enabled=False)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shell_less_image(test_images: tuple[str, str], tmp_path_factory: pytest.TempPathFactory,
                           ) -> AsyncIterator[str]:
    """An image holding only /bin/busybox: no /bin/sh, no applet links."""
    path = tmp_path_factory.mktemp("shell-less") / "rootfs.tar"

    def write_tar() -> None:
        with tarfile.open(path, mode="w") as tar:
            data = Path(BUSYBOX_BINARY).read_bytes()
            info = tarfile.TarInfo("bin/busybox")
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))

    await asyncio.to_thread(write_tar)  # two megabytes read and written: off the loop
    driver = DockerDriver(DOCKER_HOST)
    repository = f"dm-test/shell-less-{path.parent.name.lower()}"
    try:
        await driver.import_image(str(path), repository=repository, tag="1",
                                  changes=[f"LABEL {TEST_LABEL}=shell-less"])
        yield f"{repository}:1"
    finally:
        await driver.remove_image(f"{repository}:1", force=True)
        await driver.close()


async def test_image_without_a_shell_has_no_server(shell_less_image: str, keys: dict[str, KeyPair]) -> None:
    async with running_box(shell_less_image, command=["/bin/busybox", "sleep", "3600"]) as box:
        status = await box.access_ssh([keys["A"].public])
        assert status["state"] == "no_server", status
        assert (await box.info()).state == "running"
        assert await box.access.supervise_once() == {}
        assert (await box.access_ssh([], enabled=False))["state"] == "disabled"
