"""AMD parsers on real ``rocm-smi --json`` / ``amd-smi`` outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.gpu import amd
from agent.gpu.amd import parse_amd_smi_static_json, parse_rocm_smi_json
from tests.agent.conftest import FakeTool
from tests.agent.helpers import fixture_path, fixture_text


def test_rocm_smi_mi100x4_rocm602() -> None:
    gpus = parse_rocm_smi_json(fixture_text("rocm-smi-json.mi100x4.rocm602.json"))
    assert [g.index for g in gpus] == [0, 1, 2, 3]  # the "system" entry is not a GPU
    assert {g.vendor for g in gpus} == {"amd"}
    assert {g.name for g in gpus} == {"Arcturus GL-XL [Instinct MI100]"}  # "Card series"
    assert [g.uuid for g in gpus] == [
        "0x79ccd55167a2124a",
        "0x4edfb117a17a07d",
        "0xd4a9ec48d03d261d",
        "0x1b9dd972253c3736",
    ]
    assert [g.pci_bus_id for g in gpus] == [
        "0000:83:00.0",
        "0000:a3:00.0",
        "0000:c3:00.0",
        "0000:e3:00.0",
    ]
    assert {g.memory_total_mb for g in gpus} == {34342961152 // 2**20}  # 32752 MiB
    assert {g.memory_used_mb for g in gpus} == {6750208 // 2**20}
    assert [g.temperature_c for g in gpus] == [53.0, 55.0, 54.0, 51.0]  # edge sensor
    assert {g.utilization_pct for g in gpus} == {0.0}
    assert {g.driver_version for g in gpus} == {"6.3.6"}  # from "system"


def test_rocm_smi_rx6700xt_rocm612_without_unique_id() -> None:
    gpus = parse_rocm_smi_json(fixture_text("rocm-smi-json.rx6700xt.rocm612.json"))
    assert len(gpus) == 1
    gpu = gpus[0]
    assert gpu.name == "Navi 22 [Radeon RX 6700/6700 XT / 6800M]"
    # Unique ID and serial are "N/A": a stable id from the PCI address instead.
    assert gpu.uuid == "amd-0000:07:00.0"
    assert gpu.pci_bus_id == "0000:07:00.0"
    assert gpu.memory_total_mb == 12868124672 // 2**20
    assert gpu.memory_used_mb == 1572745216 // 2**20
    assert gpu.temperature_c == 45.0
    assert gpu.utilization_pct == 0.0
    assert gpu.driver_version == "6.3.6"


def test_rocm_smi_rx7800xt_rocm624_without_bus_or_system() -> None:
    gpus = parse_rocm_smi_json(fixture_text("rocm-smi-json.rx7800xt.rocm624.json"))
    assert len(gpus) == 1
    gpu = gpus[0]
    assert gpu.name == "Navi 32 [Radeon RX 7700 XT / 7800 XT]"
    assert gpu.uuid == "0x5c88007d760374f3"
    assert gpu.pci_bus_id is None
    assert gpu.memory_total_mb == 17163091968 // 2**20  # 16368
    assert gpu.memory_used_mb == 11615076352 // 2**20
    assert gpu.utilization_pct == 100.0
    assert gpu.temperature_c == 45.0
    assert gpu.driver_version is None


def test_rocm_smi_hygon_dcu_keys() -> None:
    gpus = parse_rocm_smi_json(fixture_text("rocm-smi-json.hygon-dcu.dtk24043.json"))
    assert len(gpus) == 1
    dcu = gpus[0]
    assert dcu.vendor == "amd"  # ROCm-compatible: /dev/kfd + /dev/dri
    assert dcu.name == "DCU xxxx"  # redacted upstream
    assert dcu.uuid == "7100fa8866904061"
    assert dcu.memory_total_mb == 65520  # "vram Total Memory (MiB)"
    assert dcu.memory_used_mb == 2
    assert dcu.utilization_pct == 0.0  # "DCU use (%)"
    assert dcu.temperature_c == 41.0


def test_rocm_smi_tolerates_leading_warnings_and_missing_keys() -> None:
    text = 'WARNING: AMD GPU device(s) is/are in a low-power state.\n{"card0": {}, "system": {}}'
    gpus = parse_rocm_smi_json(text)
    assert len(gpus) == 1
    assert gpus[0].name == "AMD GPU"
    assert gpus[0].uuid == "amd-card0"
    assert gpus[0].memory_total_mb is None


@pytest.mark.parametrize("text", ["", "garbage", "[1, 2]", "{not json"])
def test_rocm_smi_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rocm_smi_json(text)


def test_rocm_smi_concise_table_is_not_json() -> None:
    with pytest.raises(ValueError):
        parse_rocm_smi_json(fixture_text("rocm-smi.mi300x-x4.concise.txt"))


def test_amd_smi_static_mi210() -> None:
    gpus = parse_amd_smi_static_json(fixture_text("amd-smi-static-json.mi210.json"))
    assert len(gpus) == 1
    gpu = gpus[0]
    assert gpu.vendor == "amd"
    assert gpu.index == 0
    assert gpu.name == "AMD Instinct MI210"
    assert gpu.memory_total_mb == 65520
    # The in-kernel amdgpu "version" is a squashed /proc/version: keep the release.
    assert gpu.driver_version == "6.14.0-24-generic"
    assert gpu.uuid == "amd-card0"  # product_serial is "0", no bus address given
    assert gpu.utilization_pct is None


def test_amd_smi_static_bare_list_form() -> None:
    text = '[{"gpu": 1, "asic": {"market_name": "X", "asic_serial": "0xABC"},'
    text += ' "bus": {"bdf": "0000:C3:00.0"}, "vram": {"size": "192 GB"}}]'
    gpus = parse_amd_smi_static_json(text)
    assert [(g.index, g.name, g.uuid, g.pci_bus_id, g.memory_total_mb) for g in gpus] == [
        (1, "X", "0xABC", "0000:c3:00.0", 192 * 1024)
    ]


def _sysfs_drm(root: Path, bus: str, card: str, render: str) -> None:
    drm = root / "sys" / "bus" / "pci" / "devices" / bus / "drm"
    (drm / card).mkdir(parents=True)
    (drm / render).mkdir()


def test_dri_nodes_from_sysfs(tmp_path: Path) -> None:
    _sysfs_drm(tmp_path, "0000:83:00.0", "card1", "renderD128")
    assert amd.dri_nodes("0000:83:00.0", root=str(tmp_path)) == (
        "/dev/dri/card1",
        "/dev/dri/renderD128",
    )
    assert amd.dri_nodes("0000:99:00.0", root=str(tmp_path)) == (None, None)
    assert amd.dri_nodes(None, root=str(tmp_path)) == (None, None)


async def test_detect_with_fake_rocm_smi(fake_tool: FakeTool, tmp_path: Path) -> None:
    fixture = fixture_path("rocm-smi-json.mi100x4.rocm602.json")
    fake_tool("rocm-smi", f'cat "{fixture}"')
    root = tmp_path / "root"
    for n, bus in enumerate(["0000:83:00.0", "0000:a3:00.0", "0000:c3:00.0", "0000:e3:00.0"]):
        _sysfs_drm(root, bus, f"card{n + 1}", f"renderD{128 + n}")
    info = root / "opt" / "rocm" / ".info"
    info.mkdir(parents=True)
    (info / "version").write_text("6.0.2-115\n")
    gpus = await amd.detect(timeout=5, root=str(root))
    assert len(gpus) == 4
    assert [g.dri_card for g in gpus] == [f"/dev/dri/card{n}" for n in (1, 2, 3, 4)]
    assert [g.dri_render for g in gpus] == [f"/dev/dri/renderD{n}" for n in (128, 129, 130, 131)]
    assert {g.runtime_version for g in gpus} == {"6.0.2-115"}
    assert {g.driver_version for g in gpus} == {"6.3.6"}


async def test_detect_amd_failures_give_nothing(fake_tool: FakeTool, tmp_path: Path) -> None:
    fake_tool("rocm-smi", "echo 'ERROR: GPU[0] : Unable to open device' >&2; exit 2")
    assert await amd.detect(timeout=5, root=str(tmp_path)) == []
    fake_tool("rocm-smi", "echo garbage")
    assert await amd.detect(timeout=5, root=str(tmp_path)) == []
    assert await amd.detect(timeout=5, binary=str(tmp_path / "no-such-rocm-smi")) == []
