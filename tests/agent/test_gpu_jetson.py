"""Jetson parsers and file-based detection on real L4T / device-tree / tegrastats text."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.gpu import jetson
from agent.gpu.jetson import (
    parse_device_tree_compatible,
    parse_device_tree_model,
    parse_nv_tegra_release,
    parse_tegrastats,
)
from tests.agent.helpers import fixture_text


@pytest.mark.parametrize(
    ("name", "release"),
    [
        ("jetson-agx-orin.nv_tegra_release.r35.4.1.txt", "35.4.1"),
        ("jetson-agx-orin.nv_tegra_release.r36.4.4.txt", "36.4.4"),
        ("jetson-agx-thor.nv_tegra_release.r38.2.2.txt", "38.2.2"),
    ],
)
def test_nv_tegra_release_files(name: str, release: str) -> None:
    assert parse_nv_tegra_release(fixture_text(name)) == release


def test_nv_tegra_release_first_lines_r32_to_r35() -> None:
    lines = fixture_text("jetson.nv_tegra_release.first-lines.r32-r35.txt").splitlines()
    assert [parse_nv_tegra_release(line) for line in lines] == [
        "32.7.1",
        "34.1.1",
        "35.2.1",
        "35.3.1",
    ]


@pytest.mark.parametrize("text", ["", "garbage", "TARGET_USERSPACE_LIB_DIR=nvidia\n"])
def test_nv_tegra_release_garbage(text: str) -> None:
    assert parse_nv_tegra_release(text) is None


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("jetson-orin-nx.device-tree-model.txt", "NVIDIA Orin NX Developer Kit"),
        ("jetson-nano.device-tree-model.txt", "NVIDIA Jetson Nano Developer Kit"),
        ("jetson-agx-orin.device-tree-model.txt", "NVIDIA Jetson AGX Orin Developer Kit"),
        ("jetson-agx-thor.device-tree-model.txt", "NVIDIA Jetson AGX Thor Developer Kit"),
    ],
)
def test_device_tree_model(name: str, model: str) -> None:
    text = fixture_text(name)
    assert parse_device_tree_model(text) == model
    assert parse_device_tree_model(text + "\x00") == model  # as the kernel writes it


def test_device_tree_compatible() -> None:
    pasted = fixture_text("jetson-agx-orin-64gb.device-tree-compatible.txt")
    # The fixture lost its NULs; the real file is NUL-separated.
    real = "nvidia,p3737-0000+p3701-0005\x00nvidia,p3701-0005\x00nvidia,tegra234\x00"
    assert parse_device_tree_compatible(real) == [
        "nvidia,p3737-0000+p3701-0005",
        "nvidia,p3701-0005",
        "nvidia,tegra234",
    ]
    assert parse_device_tree_compatible(pasted) == [pasted.strip()]


async def test_detect_by_pasted_compatible_without_nuls(tmp_path: Path) -> None:
    dt = tmp_path / "proc" / "device-tree"
    dt.mkdir(parents=True)
    (dt / "compatible").write_text(fixture_text("jetson-agx-orin-64gb.device-tree-compatible.txt"))
    (gpu,) = await jetson.detect(root=str(tmp_path))
    assert (gpu.vendor, gpu.name) == ("jetson", "NVIDIA Jetson")


def test_tegrastats_orin_nano_two_formats() -> None:
    first, second = fixture_text("jetson-orin-nano.tegrastats.beszel.txt").splitlines()
    a = parse_tegrastats(first)
    assert (a.gpu_utilization_pct, a.gpu_freq_mhz, a.gpu_temperature_c) == (63.0, 621, 53.343)
    assert (a.ram_used_mb, a.ram_total_mb) == (6185, 7620)
    b = parse_tegrastats(second)  # "GR3D_FREQ 0%" with no frequency
    assert (b.gpu_utilization_pct, b.gpu_freq_mhz, b.gpu_temperature_c) == (0.0, None, 49.031)


def test_tegrastats_orin_busy() -> None:
    stats = parse_tegrastats(fixture_text("jetson-orin.tegrastats.jetson-stats-issue-624.txt"))
    assert (stats.gpu_utilization_pct, stats.gpu_freq_mhz) == (84.0, 713)
    assert stats.gpu_temperature_c == 63.5
    assert (stats.ram_used_mb, stats.ram_total_mb) == (6982, 7620)


def test_tegrastats_tx2_style() -> None:
    stats = parse_tegrastats(fixture_text("jetson-tx2-style.tegrastats.beszel.txt"))
    assert (stats.gpu_utilization_pct, stats.gpu_freq_mhz) == (0.0, 114)
    assert stats.gpu_temperature_c == 39.5  # "GPU@39.5C"
    assert (stats.ram_used_mb, stats.ram_total_mb) == (3276, 7859)


def _jetson_root(root: Path, release: str | None, model: str | None) -> None:
    if release is not None:
        (root / "etc").mkdir(parents=True, exist_ok=True)
        (root / "etc" / "nv_tegra_release").write_text(fixture_text(release))
    if model is not None:
        dt = root / "proc" / "device-tree"
        dt.mkdir(parents=True, exist_ok=True)
        (dt / "model").write_bytes(fixture_text(model).encode() + b"\x00")


@pytest.mark.parametrize(
    ("release", "model", "name", "l4t"),
    [
        (
            "jetson-agx-orin.nv_tegra_release.r36.4.4.txt",
            "jetson-agx-orin.device-tree-model.txt",
            "NVIDIA Jetson AGX Orin Developer Kit",
            "36.4.4",
        ),
        (
            "jetson-agx-thor.nv_tegra_release.r38.2.2.txt",
            "jetson-agx-thor.device-tree-model.txt",
            "NVIDIA Jetson AGX Thor Developer Kit",
            "38.2.2",
        ),
        ("jetson-agx-orin.nv_tegra_release.r35.4.1.txt", None, "NVIDIA Jetson", "35.4.1"),
        (None, "jetson-nano.device-tree-model.txt", "NVIDIA Jetson Nano Developer Kit", None),
    ],
)
async def test_detect_jetson_from_files(
    tmp_path: Path, release: str | None, model: str | None, name: str, l4t: str | None
) -> None:
    _jetson_root(tmp_path, release, model)
    gpus = await jetson.detect(root=str(tmp_path))
    assert len(gpus) == 1
    gpu = gpus[0]
    assert (gpu.vendor, gpu.index, gpu.name, gpu.runtime_version) == ("jetson", 0, name, l4t)


async def test_detect_jetson_load_and_temperature(tmp_path: Path) -> None:
    _jetson_root(
        tmp_path,
        "jetson-agx-orin.nv_tegra_release.r36.4.4.txt",
        "jetson-agx-orin.device-tree-model.txt",
    )
    load = tmp_path / "sys" / "devices" / "platform" / "bus@0" / "17000000.gpu"
    load.mkdir(parents=True)
    (load / "load").write_text("634\n")
    zone = tmp_path / "sys" / "class" / "thermal" / "thermal_zone1"
    zone.mkdir(parents=True)
    (zone / "type").write_text("gpu-thermal\n")
    (zone / "temp").write_text("53343\n")
    (gpu,) = await jetson.detect(root=str(tmp_path))
    assert gpu.utilization_pct == 63.4
    assert gpu.temperature_c == pytest.approx(53.343)


async def test_not_a_jetson(tmp_path: Path) -> None:
    assert await jetson.detect(root=str(tmp_path)) == []
    dt = tmp_path / "proc" / "device-tree"
    dt.mkdir(parents=True)
    (dt / "model").write_text("Raspberry Pi 4 Model B Rev 1.4\x00")
    (dt / "compatible").write_text("raspberrypi,4-model-b\x00brcm,bcm2711\x00")
    assert await jetson.detect(root=str(tmp_path)) == []


async def test_jetson_by_compatible_only(tmp_path: Path) -> None:
    dt = tmp_path / "proc" / "device-tree"
    dt.mkdir(parents=True)
    # JetPack 5 AGX Orin model strings may lack "NVIDIA"/"Jetson"; compatible still says Tegra.
    (dt / "model").write_text("Jetson-AGX\x00")
    (dt / "compatible").write_text("nvidia,p3737-0000+p3701-0005\x00nvidia,tegra234\x00")
    (gpu,) = await jetson.detect(root=str(tmp_path))
    assert gpu.name == "Jetson-AGX"
    assert gpu.runtime_version is None
