"""What only the Docker driver does: engine errors mapped to codes, with the engine's own words."""

from __future__ import annotations

import aiohttp
import pytest
from aiodocker.exceptions import DockerError, DockerStreamError

from agent.runtime import (
    ConflictError,
    ContainerSpec,
    DriverError,
    GpuRequest,
    InvalidError,
    NotFoundError,
    UnavailableError,
)
from agent.runtime.docker import DockerDriver, translate_error
from tests.runtime.conftest import Harness


@pytest.mark.parametrize(
    ("exc", "kwargs", "code"),
    [
        (DockerError(404, "No such container: x"), {}, "not_found"),
        (DockerError(404, "No such image: x:1"), {"not_found": "image_not_found"}, "image_not_found"),
        (DockerError(409, "name in use"), {}, "conflict"),
        (DockerError(400, "bad parameter"), {}, "invalid"),
        (DockerError(500, "driver failed"), {}, "runtime_error"),
        (DockerError(503, "shutting down"), {}, "unavailable"),
        (DockerError(900, "Cannot connect to Docker Engine via unix:///nope"), {}, "unavailable"),
        (DockerStreamError("denied"), {"stream_code": "pull_failed"}, "pull_failed"),
        (aiohttp.ClientConnectionError("reset"), {}, "unavailable"),
        (ConnectionRefusedError(111, "refused"), {}, "unavailable"),
        (TimeoutError(), {}, "timeout"),
        (KeyError("Id"), {}, "runtime_error"),
    ],
)
def test_translate_error(exc: BaseException, kwargs: dict[str, str], code: str) -> None:
    error = translate_error(exc, "do a thing", **kwargs)
    assert isinstance(error, DriverError)
    assert error.code == code
    assert error.message.startswith("do a thing: ")


async def test_unreachable_engine_is_unavailable(tmp_path) -> None:
    driver = DockerDriver(f"unix://{tmp_path}/no-docker.sock", connect_timeout=2)
    try:
        spec = ContainerSpec(instance_id=1, node_id=1, name="dm-1", image="debian:12")
        for call in (driver.version(), driver.list(), driver.inspect("x"), driver.create(spec)):
            with pytest.raises(UnavailableError) as excinfo:
                await call
            assert "no-docker.sock" in excinfo.value.message
    finally:
        await driver.close()
    with pytest.raises(UnavailableError, match="closed"):
        await driver.version()
    with pytest.raises(InvalidError):
        DockerDriver("ssh://host")


@pytest.mark.docker
@pytest.mark.parametrize("harness", ["docker"], indirect=True)
async def test_engine_gets_dm_payload(harness: Harness) -> None:
    d = harness.driver
    spec = harness.spec("payload", command=["sleep", "600"], env={"X": "1"}, hostname="box", working_dir="/tmp")
    info = await d.create(spec)
    assert harness.docker is not None
    raw = await harness.docker.containers.container(info.id).show()
    assert raw["Config"]["Hostname"] == "box"
    assert raw["Config"]["WorkingDir"] == "/tmp"
    assert "X=1" in raw["Config"]["Env"] and "NVIDIA_VISIBLE_DEVICES=void" in raw["Config"]["Env"]
    assert raw["Config"]["Cmd"] == ["sleep", "600"]
    assert raw["HostConfig"]["PortBindings"] in (None, {})
    assert not raw["Config"].get("ExposedPorts")
    await d.start(info.id)
    assert (await d.exec(info.id, ["id", "-u"], user="65534")).stdout == b"65534\n"
    assert (await d.exec(info.id, ["pwd"])).stdout == b"/tmp\n"


@pytest.mark.docker
@pytest.mark.parametrize("harness", ["docker"], indirect=True)
async def test_engine_refusal_comes_with_its_message(harness: Harness) -> None:
    """This host has no NVIDIA toolkit: starting a GPU container fails with the engine's reason."""
    d = harness.driver
    gpu = GpuRequest(vendor="nvidia", uuid="GPU-12345678-aaaa-bbbb-cccc-0123456789ab")
    info = await d.create(harness.spec("gpu", command=["true"], gpus=[gpu]))
    with pytest.raises(DriverError) as excinfo:
        await d.start(info.id)
    assert "nvidia" in excinfo.value.message
    assert excinfo.value.code in ("runtime_error", "invalid")
    failed = await d.inspect(info.id)
    assert failed is not None and failed.state == "created"

    with pytest.raises(NotFoundError):
        await d.start("../../images/json")
    info2 = await d.create(harness.spec("dup", command=["sleep", "600"]))
    await d.start(info2.id)
    with pytest.raises(ConflictError, match="running"):
        await d.remove(info2.id)
