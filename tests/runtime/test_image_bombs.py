"""Imported archives cannot expand without bound (issue 10, hole 10): real gzip bombs are refused
before the runtime expands them, by ratio and by absolute size, as files and as streams, every
gzip member counted; the Docker driver refuses one and the Engine keeps nothing of it."""

from __future__ import annotations

import asyncio
import gzip
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiodocker
import pytest

from agent.config import AgentConfig, ConfigError
from agent.runtime.docker import DockerDriver
from agent.runtime.errors import InvalidError
from agent.runtime.image_tar import DEFAULT_EXPANSION, ExpansionLimits, check_expansion, prepare_image_tar
from tests.runtime.bombs import BOMB_EXPANDED, MIB, write_gzip_bomb
from tests.runtime.conftest import DOCKER_HOST

SMALL = ExpansionLimits(max_bytes=1024 * MIB, max_ratio=50, ratio_floor=2 * MIB)


@pytest.fixture(scope="session")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A rootfs tar of 300 MiB of zeros in ~300 KiB of gzip (made once per session)."""
    path = tmp_path_factory.mktemp("bombs") / "bomb.tar.gz"
    size = write_gzip_bomb(path)
    assert size < BOMB_EXPANDED / 500, size
    return path


async def test_a_gzip_bomb_file_is_refused_by_default(bomb: Path) -> None:
    with pytest.raises(InvalidError) as e:
        await check_expansion(str(bomb))
    assert "decompression bomb" in e.value.message and "import_max_ratio" in e.value.message
    with pytest.raises(InvalidError):
        await prepare_image_tar(str(bomb))
    # The caller that measures itself may skip it; a plain tar is never measured.
    assert (await prepare_image_tar(str(bomb), limits=None)).kind == "rootfs"


async def test_absolute_cap_and_ratio(tmp_path: Path) -> None:
    path = tmp_path / "b.tar.gz"
    write_gzip_bomb(path, 8 * MIB, level=1)
    with pytest.raises(InvalidError) as e:
        await check_expansion(str(path), ExpansionLimits(max_bytes=4 * MIB, max_ratio=10**9, ratio_floor=0))
    assert "more than 4194304 bytes" in e.value.message and "import_max_expanded_bytes" in e.value.message
    with pytest.raises(InvalidError) as e:
        await check_expansion(str(path), SMALL)
    assert "times its size" in e.value.message
    await check_expansion(str(path), DEFAULT_EXPANSION)  # 8 MiB is below the default ratio floor


async def test_every_gzip_member_counts(tmp_path: Path) -> None:
    """A small honest member first, the bomb in a second one (Docker reads them all)."""
    honest = tmp_path / "honest.tar"
    with tarfile.open(honest, "w") as tar:
        tar.add(__file__, arcname="etc/hello")
    bomb = tmp_path / "second.gz"
    write_gzip_bomb(bomb, 16 * MIB)
    both = tmp_path / "both.tar.gz"
    both.write_bytes(gzip.compress(honest.read_bytes()) + bomb.read_bytes())
    with pytest.raises(InvalidError):
        await check_expansion(str(both), SMALL)
    await check_expansion(str(tmp_path / "honest.tar"), SMALL)


async def test_a_stream_is_cut_off(bomb: Path) -> None:
    data = await asyncio.to_thread(bomb.read_bytes)

    async def source() -> AsyncIterator[bytes]:
        for at in range(0, len(data), 64 * 1024):
            yield data[at:at + 64 * 1024]

    prepared = await prepare_image_tar(source(), limits=SMALL)
    assert prepared.kind == "rootfs"
    sent = 0
    with pytest.raises(InvalidError) as e:
        async for chunk in prepared.chunks():
            sent += len(chunk)
    assert "decompression bomb" in e.value.message
    assert sent < bomb.stat().st_size


def test_agent_config_keys() -> None:
    config = AgentConfig(server="http://dmd:3150", node_id=1, credential="c",
                         import_max_expanded_bytes=8 * MIB, import_max_ratio=20)
    assert config.expansion.max_bytes == 8 * MIB and config.expansion.max_ratio == 20
    assert AgentConfig.from_dict(config.to_dict()).expansion == config.expansion
    assert "import_max_ratio" not in AgentConfig(server="http://dmd:3150", node_id=1, credential="c").to_dict()
    for key, bad in (("import_max_expanded_bytes", 10), ("import_max_ratio", 1), ("import_max_ratio", "x")):
        with pytest.raises(ConfigError) as e:
            AgentConfig(server="http://dmd:3150", node_id=1, credential="c", **{key: bad})
        assert e.value.key == key


@pytest.mark.docker
async def test_the_docker_driver_refuses_a_bomb(bomb: Path, tmp_path: Path) -> None:
    repository = "dm-test/bomb"
    async with aiodocker.Docker(url=DOCKER_HOST) as engine:
        before = {i["Id"] for i in await engine.images.list(all=True)}
        driver = DockerDriver(DOCKER_HOST)
        try:
            with pytest.raises(InvalidError) as e:
                await driver.import_image(str(bomb), repository=repository, tag="1")
            assert "decompression bomb" in e.value.message
        finally:
            await driver.close()
        after = {i["Id"] for i in await engine.images.list(all=True)}
        assert after <= before
        with pytest.raises(aiodocker.DockerError):
            await engine.images.inspect(f"{repository}:1")
