"""NVIDIA parsers on real ``nvidia-smi`` outputs (see tests/fixtures/gpu/README.md)."""

from __future__ import annotations

import logging

import pytest

from agent.gpu import nvidia
from agent.gpu.nvidia import QUERY_FIELDS, parse_list, parse_query_csv, parse_xml
from tests.agent.helpers import fixture_text

# --------------------------------------------------------------------------- -q -x


def test_xml_tesla_t4_v11() -> None:
    gpus = parse_xml(fixture_text("nvidia-smi-q-x.tesla-t4.xml"))
    assert len(gpus) == 1
    t4 = gpus[0]
    assert t4.vendor == "nvidia"
    assert t4.index == 0
    assert t4.name == "Tesla T4"
    assert t4.uuid == "GPU-d37e67a5-91dd-3774-a5cb-99096249601a"
    assert t4.pci_bus_id == "0000:00:1e.0"
    assert t4.memory_total_mb == 15360
    assert t4.memory_used_mb == 1032
    assert t4.utilization_pct == 0.0
    assert t4.temperature_c == 40.0
    assert t4.driver_version == "515.105.01"
    assert t4.runtime_version == "11.7"
    assert t4.mig_mode is None
    assert t4.mig_devices == []


def test_xml_a100_mig_v12_count_mismatch(caplog: pytest.LogCaptureFixture) -> None:
    text = fixture_text("nvidia-smi-q-x.a100-sxm4-80gb.mig.first-of-4.xml")
    with caplog.at_level(logging.WARNING):
        gpus, attached = nvidia.parse_xml_document(text)
    # <attached_gpus> says 4 but the document holds one <gpu>: we report what is there
    # and say so, rather than inventing three GPUs.
    assert attached == 4
    assert len(gpus) == 1
    assert "attached_gpus" in caplog.text
    a100 = gpus[0]
    assert a100.name == "NVIDIA A100-SXM4-80GB"
    assert a100.uuid == "GPU-513536b6-7d19-9063-b049-1e69664bb298"
    assert a100.pci_bus_id == "0000:01:00.0"
    assert a100.memory_total_mb == 81920
    assert a100.memory_used_mb == 50
    assert a100.utilization_pct is None  # "N/A" while MIG is on
    assert a100.temperature_c == 27.0
    assert a100.driver_version == "535.54.03"
    assert a100.runtime_version == "12.2"
    assert a100.mig_mode == "Enabled"
    assert [m.index for m in a100.mig_devices] == [0, 1, 2, 3]
    assert [m.gpu_instance_id for m in a100.mig_devices] == [3, 4, 5, 6]
    assert all(m.memory_total_mb == 19968 for m in a100.mig_devices)
    assert all(m.compute_instance_id == 0 for m in a100.mig_devices)


def test_xml_rtx3080_v13() -> None:
    gpus = parse_xml(fixture_text("nvidia-smi-q-x.geforce-rtx3080.v13.xml"))
    assert len(gpus) == 1
    gpu = gpus[0]
    assert gpu.name == "NVIDIA GeForce RTX 3080"
    assert gpu.uuid == "GPU-19d6d965-2acc-f646-00f8-4c76979aabb4"
    assert gpu.pci_bus_id == "0000:0c:00.0"
    assert (gpu.memory_total_mb, gpu.memory_used_mb) == (10240, 9184)
    assert gpu.utilization_pct == 65.0
    assert gpu.temperature_c == 27.0
    assert (gpu.driver_version, gpu.runtime_version) == ("595.58.03", "13.2")
    assert gpu.mig_mode is None


def test_xml_dual_a5000_v13() -> None:
    gpus = parse_xml(fixture_text("nvidia-smi-q-x.rtx-a5000x2.v13.no-supported-clocks.xml"))
    assert [g.index for g in gpus] == [0, 1]
    assert [g.name for g in gpus] == ["NVIDIA RTX A5000"] * 2
    assert [g.pci_bus_id for g in gpus] == ["0000:81:00.0", "0000:c1:00.0"]
    assert [g.uuid for g in gpus] == [
        "GPU-12345678-aaaa-bbbb-cccc-0123456789ab",
        "GPU-12345678-aaaa-bbbb-cccc-0123456789cd",
    ]
    assert [g.memory_total_mb for g in gpus] == [24564, 24564]
    assert [g.memory_used_mb for g in gpus] == [22437, 17253]
    assert [g.temperature_c for g in gpus] == [13.0, 15.0]
    assert {(g.driver_version, g.runtime_version) for g in gpus} == {("590.44.01", "13.1")}


def test_xml_dual_rtx2080_v13_same_masked_uuid() -> None:
    gpus = parse_xml(fixture_text("nvidia-smi-q-x.geforce-rtx2080x2.v13.no-supported-clocks.xml"))
    assert len(gpus) == 2
    assert [g.name for g in gpus] == ["NVIDIA GeForce RTX 2080"] * 2
    assert [g.pci_bus_id for g in gpus] == ["0000:01:00.0", "0000:02:00.0"]
    # Upstream masked both UUIDs to the same value: the index / bus id still differ.
    assert gpus[0].uuid == gpus[1].uuid == "GPU-12345678-aaaa-bbbb-cccc-0123456789ab"
    assert [g.memory_total_mb for g in gpus] == [8192, 8192]
    assert {g.runtime_version for g in gpus} == {"13.1"}


@pytest.mark.parametrize("text", ["", "not xml", "<other/>", "<nvidia_smi_log><gpu>"])
def test_xml_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        parse_xml(text)


def test_xml_with_no_gpus() -> None:
    text = "<nvidia_smi_log><driver_version>1</driver_version><attached_gpus>0</attached_gpus>"
    assert parse_xml(text + "</nvidia_smi_log>") == []


# --------------------------------------------------------------------------- --query-gpu


def test_csv_h100_allfields_with_units_header() -> None:
    # 212 fields with a "[unit]" header; the header decides the column order.
    gpus = parse_query_csv(
        fixture_text("nvidia-smi-query-gpu.h100-80gb-hbm3.allfields.csv"), QUERY_FIELDS
    )
    assert len(gpus) == 1
    h100 = gpus[0]
    assert h100.index == 0
    assert h100.name == "NVIDIA H100 80GB HBM3"
    assert h100.uuid == "GPU-00000000-0000-0000-0000-000000000000"  # masked upstream
    assert h100.pci_bus_id == "0000:00:09.0"
    assert h100.memory_total_mb == 81559
    assert h100.memory_used_mb == 0
    assert h100.utilization_pct == 0.0
    assert h100.temperature_c == 41.0
    assert h100.driver_version == "590.48.01"
    assert h100.mig_mode == "Disabled"
    assert h100.runtime_version is None  # the CSV has no CUDA version


@pytest.mark.parametrize(
    ("name", "gpu_name", "driver"),
    [
        ("nvidia-smi-query-gpu.jetson-agx-thor.csv", "NVIDIA Thor", "580.00"),
        ("nvidia-smi-query-gpu.jetson-agx-orin.csv", "Orin (nvgpu)", "595.78"),
        ("nvidia-smi-query-gpu.dgx-spark-gb10.csv", "NVIDIA GB10", "580.126.09"),
    ],
)
def test_csv_unified_memory_devices_report_na(name: str, gpu_name: str, driver: str) -> None:
    fields = ["name", "memory.total", "memory.used", "driver_version"]
    gpus = parse_query_csv(fixture_text(name), fields)
    assert len(gpus) == 1
    gpu = gpus[0]
    assert gpu.index == 0  # no index column: row position
    assert gpu.name == gpu_name
    assert gpu.driver_version == driver
    assert gpu.memory_total_mb is None  # "[N/A]"
    assert gpu.memory_used_mb is None
    assert gpu.uuid is None


def test_csv_header_detected_even_with_the_default_field_list() -> None:
    gpus = parse_query_csv(fixture_text("nvidia-smi-query-gpu.dgx-spark-gb10.csv"), QUERY_FIELDS)
    assert [(g.name, g.driver_version) for g in gpus] == [("NVIDIA GB10", "580.126.09")]


def test_csv_noheader_nounits_form() -> None:
    # The agent's own query (no fixture exists for it); values in the fixtures' style.
    text = (
        "0, GPU-d8594bd4-0fc3-8595-e355-7c98138f3b95, NVIDIA A100-SXM4-80GB, 81920, 50, "
        "[N/A], 27, 535.54.03, 00000000:01:00.0\n"
        "1, GPU-5e375e7e-b41f-155b-dcdc-534524c356fc, NVIDIA A100-SXM4-80GB, 81920, 3, "
        "12, [Not Supported], 535.54.03, 00000000:41:00.0\n"
    )
    gpus = parse_query_csv(text, QUERY_FIELDS)
    assert [g.index for g in gpus] == [0, 1]
    assert [g.pci_bus_id for g in gpus] == ["0000:01:00.0", "0000:41:00.0"]
    assert [g.utilization_pct for g in gpus] == [None, 12.0]
    assert [g.temperature_c for g in gpus] == [27.0, None]
    assert [g.memory_used_mb for g in gpus] == [50, 3]


@pytest.mark.parametrize(
    "name",
    ["nvidia-smi.h100-80gb-hbm3-x8.table.txt", "lspci-nn.a100-sxm4-80gb-x8.hyperv-vm.txt"],
)
def test_csv_ignores_other_formats(name: str) -> None:
    assert parse_query_csv(fixture_text(name), QUERY_FIELDS) == []


# --------------------------------------------------------------------------- -L


def test_list_a100x4_with_mig_on_gpu0() -> None:
    gpus = parse_list(fixture_text("nvidia-smi-L.a100-sxm4-80gb-x4.mig.txt"))
    assert [g.index for g in gpus] == [0, 1, 2, 3]
    assert {g.name for g in gpus} == {"NVIDIA A100-SXM4-80GB"}
    assert [g.uuid for g in gpus] == [
        "GPU-513536b6-7d19-9063-b049-1e69664bb298",
        "GPU-d8594bd4-0fc3-8595-e355-7c98138f3b95",
        "GPU-5e375e7e-b41f-155b-dcdc-534524c356fc",
        "GPU-69ec2344-ebac-b028-f88f-452abb3d7f11",
    ]
    assert gpus[0].mig_mode == "Enabled"
    assert [m.profile for m in gpus[0].mig_devices] == ["1g.20gb"] * 4
    assert [m.index for m in gpus[0].mig_devices] == [0, 1, 2, 3]
    assert gpus[0].mig_devices[0].uuid == "MIG-ce861fb0-a248-58ce-a9a8-f9adbc22a66a"
    assert gpus[0].mig_devices[3].uuid == "MIG-930574a9-d43a-5d2b-95da-3e68384c8d6b"
    assert all(g.mig_devices == [] and g.mig_mode is None for g in gpus[1:])


def test_list_and_xml_agree_on_the_same_a100_host() -> None:
    listed = parse_list(fixture_text("nvidia-smi-L.a100-sxm4-80gb-x4.mig.txt"))
    xml = parse_xml(fixture_text("nvidia-smi-q-x.a100-sxm4-80gb.mig.first-of-4.xml"))
    assert listed[0].uuid == xml[0].uuid
    assert len(listed[0].mig_devices) == len(xml[0].mig_devices) == 4


def test_list_h100_mixed_mig_profiles() -> None:
    gpus = parse_list(fixture_text("nvidia-smi-L.h100-80gb-hbm3.mig.txt"))
    assert len(gpus) == 1
    assert gpus[0].name == "NVIDIA H100 80GB HBM3"
    assert gpus[0].mig_mode == "Enabled"
    assert [m.profile for m in gpus[0].mig_devices] == ["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"]
    assert gpus[0].mig_devices[1].uuid == "MIG-00000001-0000-0000-0000-000000000001"


def test_list_quadro_rtx4000x2() -> None:
    gpus = parse_list(fixture_text("nvidia-smi-L.quadro-rtx4000x2.txt"))
    assert [(g.index, g.name, g.uuid) for g in gpus] == [
        (0, "Quadro RTX 4000", "GPU-c7b57be0-94ff-d352-a59b-d0ee00aeed43"),
        (1, "Quadro RTX 4000", "GPU-d6de6afc-bdfe-75c4-5273-0544439153fc"),
    ]
    assert all(g.mig_mode is None for g in gpus)


def test_list_ignores_other_formats() -> None:
    assert parse_list(fixture_text("lspci-nn.a10.qemu-vm.txt")) == []
    assert parse_list(fixture_text("nvidia-smi.h100-80gb-hbm3-x8.table.txt")) == []
