"""Detection robustness: fake vendor tools on PATH, failures, timeouts, the data model."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

import pytest

from agent.gpu import GpuInfo, MigDevice, detect_gpus, normalize_pci_bus_id, nvidia
from tests.agent.conftest import FakeTool
from tests.agent.helpers import fixture_path, fixture_text

XML_T4 = "nvidia-smi-q-x.tesla-t4.xml"


async def test_fake_nvidia_smi_prints_xml(fake_tool: FakeTool) -> None:
    fake_tool("nvidia-smi", f'cat "{fixture_path(XML_T4)}"')
    gpus = await nvidia.detect(timeout=5)
    assert [(g.name, g.uuid, g.runtime_version) for g in gpus] == [
        ("Tesla T4", "GPU-d37e67a5-91dd-3774-a5cb-99096249601a", "11.7")
    ]


async def test_detect_gpus_finds_fake_nvidia(fake_tool: FakeTool, tmp_path: Path) -> None:
    fake_tool(
        "nvidia-smi",
        f'cat "{fixture_path("nvidia-smi-q-x.rtx-a5000x2.v13.no-supported-clocks.xml")}"',
    )
    fake_tool("rocm-smi", "exit 1")
    gpus = await detect_gpus(timeout=5, root=str(tmp_path))
    assert [(g.vendor, g.index, g.pci_bus_id) for g in gpus] == [
        ("nvidia", 0, "0000:81:00.0"),
        ("nvidia", 1, "0000:c1:00.0"),
    ]
    json.dumps([g.to_dict() for g in gpus])


async def test_xml_failure_falls_back_to_query_csv(fake_tool: FakeTool) -> None:
    # -q -x fails; --query-gpu answers in the agent's noheader,nounits form.
    fake_tool(
        "nvidia-smi",
        'case "$1" in -q) echo "Unable to determine the device handle" >&2; exit 15;; esac\n'
        "echo '0, GPU-c7b57be0-94ff-d352-a59b-d0ee00aeed43, Quadro RTX 4000, 8192, 1, 3, 35, "
        "535.129.03, 00000000:3B:00.0'",
    )
    gpus = await nvidia.detect(timeout=5)
    assert len(gpus) == 1
    assert gpus[0].name == "Quadro RTX 4000"
    assert gpus[0].pci_bus_id == "0000:3b:00.0"
    assert gpus[0].runtime_version is None


async def test_xml_count_mismatch_merges_query_csv(fake_tool: FakeTool) -> None:
    # The A100 host: the XML holds GPU 0 only but says 4 attached; the CSV lists all four
    # (names and UUIDs from the same host's nvidia-smi -L).
    xml = fixture_path("nvidia-smi-q-x.a100-sxm4-80gb.mig.first-of-4.xml")
    rows = [
        f"{g.index}, {g.uuid}, {g.name}, 81920, 1, 0, 30, 535.54.03, 00000000:{b}:00.0"
        for g, b in zip(
            nvidia.parse_list(fixture_text("nvidia-smi-L.a100-sxm4-80gb-x4.mig.txt")),
            ["01", "41", "81", "C1"],
            strict=True,
        )
    ]
    fake_tool(
        "nvidia-smi",
        f'case "$1" in -q) cat "{xml}"; exit 0;; esac\n'
        + "\n".join(f"echo '{row}'" for row in rows),
    )
    gpus = await nvidia.detect(timeout=5)
    assert [g.index for g in gpus] == [0, 1, 2, 3]
    assert gpus[0].uuid == "GPU-513536b6-7d19-9063-b049-1e69664bb298"
    assert len(gpus[0].mig_devices) == 4  # the XML entry, richer, is kept for GPU 0
    assert gpus[3].uuid == "GPU-69ec2344-ebac-b028-f88f-452abb3d7f11"
    assert {g.runtime_version for g in gpus} == {"12.2"}  # CUDA from the XML for all


async def test_nvidia_smi_exits_1(fake_tool: FakeTool, caplog: pytest.LogCaptureFixture) -> None:
    fake_tool("nvidia-smi", "echo 'NVIDIA-SMI has failed' ; exit 1")
    with caplog.at_level(logging.WARNING, logger="agent.gpu"):
        assert await nvidia.detect(timeout=5) == []
        first = len(caplog.records)
        assert await nvidia.detect(timeout=5) == []
    assert first >= 1
    assert len(caplog.records) == first  # warned once, not on every heartbeat


async def test_nvidia_smi_prints_garbage(fake_tool: FakeTool) -> None:
    fake_tool("nvidia-smi", "echo 'hello, world'; echo '<html>'; printf '\\001\\377,\\376,GPU-\\n'")
    started = time.monotonic()
    assert await nvidia.detect(timeout=5) == []
    assert time.monotonic() - started < 4


async def test_nvidia_smi_prints_the_default_table(fake_tool: FakeTool) -> None:
    table = fixture_path("nvidia-smi.h100-80gb-hbm3-x8.table.txt")
    fake_tool("nvidia-smi", f'cat "{table}"')
    assert await nvidia.detect(timeout=5) == []


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    if sys.platform.startswith("linux"):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return True
        return "\nState:\tZ" in status  # killed, waiting for its reaper
    return False


async def test_nvidia_smi_hangs_past_the_timeout(fake_tool: FakeTool, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    fake_tool("nvidia-smi", f'sleep 30 &\necho "$$ $!" > "{pids}"\nwait')
    started = time.monotonic()
    assert await nvidia.detect(timeout=0.5) == []
    assert time.monotonic() - started < 3  # no second try after a hang
    shell_pid, sleep_pid = (int(p) for p in pids.read_text().split())
    deadline = time.monotonic() + 3
    while not (_gone(shell_pid) and _gone(sleep_pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(shell_pid) and _gone(sleep_pid)  # the whole process group was killed


async def test_missing_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert await nvidia.detect(timeout=5) == []
    assert await nvidia.detect(timeout=5, binary=str(tmp_path / "nope" / "nvidia-smi")) == []
    assert await detect_gpus(timeout=5, root=str(tmp_path)) == []


async def test_not_executable_tool(fake_tool: FakeTool) -> None:
    script = fake_tool("nvidia-smi", "exit 0")
    script.chmod(0o644)
    assert await nvidia.detect(timeout=5, binary=str(script)) == []


async def test_jetson_igpu_from_nvidia_smi_is_folded(fake_tool: FakeTool, tmp_path: Path) -> None:
    # JetPack 6 ships nvidia-smi; its "Orin (nvgpu)" row is the same GPU as the Jetson entry.
    csv_fixture = fixture_path("nvidia-smi-query-gpu.jetson-agx-orin.csv")
    fake_tool("nvidia-smi", f'case "$1" in -q) exit 6;; esac\ncat "{csv_fixture}"')
    fake_tool("rocm-smi", "exit 1")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nv_tegra_release").write_text(
        fixture_text("jetson-agx-orin.nv_tegra_release.r36.4.4.txt")
    )
    gpus = await detect_gpus(timeout=5, root=str(tmp_path))
    assert len(gpus) == 1
    assert (gpus[0].vendor, gpus[0].runtime_version, gpus[0].driver_version) == (
        "jetson",
        "36.4.4",
        "595.78",
    )


async def test_vendors_run_concurrently(fake_tool: FakeTool, tmp_path: Path) -> None:
    fake_tool("nvidia-smi", "exec sleep 30")
    fake_tool("rocm-smi", "exec sleep 30")
    started = time.monotonic()
    assert await detect_gpus(timeout=0.7, root=str(tmp_path)) == []
    assert time.monotonic() - started < 2.5


# --------------------------------------------------------------------------- model


def test_gpuinfo_round_trip_through_json() -> None:
    gpu = GpuInfo(
        vendor="nvidia",
        index=0,
        name="NVIDIA A100-SXM4-80GB",
        uuid="GPU-513536b6-7d19-9063-b049-1e69664bb298",
        pci_bus_id="0000:01:00.0",
        memory_total_mb=81920,
        mig_mode="Enabled",
        mig_devices=[MigDevice(index=0, uuid="MIG-x", profile="1g.20gb")],
    )
    data = json.loads(json.dumps(gpu.to_dict()))
    assert data["mig_devices"][0]["profile"] == "1g.20gb"
    assert set(data) >= {
        "vendor",
        "index",
        "uuid",
        "name",
        "pci_bus_id",
        "memory_total_mb",
        "memory_used_mb",
        "utilization_pct",
        "temperature_c",
        "driver_version",
        "runtime_version",
        "dri_card",
        "dri_render",
        "mig_mode",
    }
    assert GpuInfo.from_dict(data) == gpu
    assert GpuInfo.from_dict({**data, "from_a_newer_agent": 1}) == gpu
    with pytest.raises(ValueError):
        GpuInfo.from_dict({**data, "vendor": "intel"})


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("00000000:81:00.0", "0000:81:00.0"),
        ("0000:C3:00.0", "0000:c3:00.0"),
        ("81:00.0", "0000:81:00.0"),
        ("00000001:00:00.0", "0001:00:00.0"),
        ("10000:e0:00.0", "10000:e0:00.0"),
        ("N/A", None),
        ("", None),
        (None, None),
    ],
)
def test_normalize_pci_bus_id(raw: str | None, normal: str | None) -> None:
    assert normalize_pci_bus_id(raw) == normal
