"""The exact Engine API ``POST /containers/create`` body, per GPU vendor, from real GPU tool outputs.

GpuRequests are built the way the agent builds them: the agent.gpu parsers on the fixture
outputs in tests/fixtures/gpu (and, for AMD, the DRM nodes read from a fake sysfs tree).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from agent.gpu import GpuInfo, amd, jetson, nvidia
from agent.runtime import ContainerSpec, GpuRequest, InvalidError, container_create_payload
from agent.runtime.payload import MIB, gpu_request
from tests.agent.helpers import FIXTURES

PATH_ENV = "NVIDIA_VISIBLE_DEVICES"


def fixture(name: str) -> str:
    path = FIXTURES / name
    if not path.is_file():
        pytest.fail(f"GPU fixture {name} missing from {FIXTURES}", pytrace=False)
    return path.read_text(encoding="utf-8")


def spec(**kwargs: Any) -> ContainerSpec:
    base: dict[str, Any] = {"instance_id": 42, "node_id": 3, "name": "dm-42-web", "image": "debian:12"}
    base.update(kwargs)
    return ContainerSpec(**base)


def base_payload(env: list[str], host_extra: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    host: dict[str, Any] = {
        "NetworkMode": "bridge",
        "Privileged": False,
        "PublishAllPorts": False,
        "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
        "Init": True,
    }
    host.update(host_extra or {})
    payload: dict[str, Any] = {
        "Image": "debian:12",
        "Env": env,
        "Labels": {"dm.managed": "1", "dm.instance": "42", "dm.node": "3"},
        "Tty": False,
        "OpenStdin": False,
        "AttachStdin": False,
        "AttachStdout": False,
        "AttachStderr": False,
        "HostConfig": host,
    }
    payload.update(top)
    return payload


# --------------------------------------------------------------------------- no GPU


def test_plain_container_exact_payload() -> None:
    payload = container_create_payload(
        spec(
            command=["sleep", "infinity"],
            env={"LANG": "C.UTF-8", PATH_ENV: "all"},  # the spec cannot hand itself GPUs
            cpus=1.5,
            memory_mb=2048,
            labels={"dm.owner": "alice"},
            hostname="web",
            working_dir="/srv",
            user="1000:1000",
        )
    )
    assert payload == {
        "Image": "debian:12",
        "Cmd": ["sleep", "infinity"],
        "Env": ["LANG=C.UTF-8", "NVIDIA_VISIBLE_DEVICES=void"],
        "Labels": {"dm.owner": "alice", "dm.managed": "1", "dm.instance": "42", "dm.node": "3"},
        "Hostname": "web",
        "WorkingDir": "/srv",
        "User": "1000:1000",
        "Tty": False,
        "OpenStdin": False,
        "AttachStdin": False,
        "AttachStdout": False,
        "AttachStderr": False,
        "HostConfig": {
            "NetworkMode": "bridge",
            "Privileged": False,
            "PublishAllPorts": False,
            "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
            "Init": True,
            "NanoCpus": 1_500_000_000,
            "Memory": 2048 * MIB,
            "MemorySwap": 2048 * MIB,
        },
    }


def test_minimal_spec_uses_image_defaults() -> None:
    assert container_create_payload(spec()) == base_payload(["NVIDIA_VISIBLE_DEVICES=void"])


def test_no_docker_port_publishing_ever() -> None:
    payload = container_create_payload(spec(privileged=True, host_network=True))
    assert "ExposedPorts" not in payload
    assert "PortBindings" not in payload["HostConfig"]
    assert payload["HostConfig"]["PublishAllPorts"] is False
    # ... and privileged / host networking only when asked (by an admin).
    assert payload["HostConfig"]["Privileged"] is True
    assert payload["HostConfig"]["NetworkMode"] == "host"


def test_restart_policy_and_init_follow_the_spec() -> None:
    host = container_create_payload(spec(restart_policy="unless-stopped", init=False))["HostConfig"]
    assert host["RestartPolicy"] == {"Name": "unless-stopped", "MaximumRetryCount": 0}
    assert host["Init"] is False


# --------------------------------------------------------------------------- NVIDIA


def test_nvidia_two_rtx_a5000_exact_payload() -> None:
    gpus = nvidia.parse_xml(fixture("nvidia-smi-q-x.rtx-a5000x2.v13.no-supported-clocks.xml"))
    assert len(gpus) == 2
    payload = container_create_payload(spec(gpus=[gpu_request(g) for g in gpus]))
    assert payload == base_payload(
        [],
        {
            "DeviceRequests": [
                {
                    "Driver": "nvidia",
                    "DeviceIDs": [
                        "GPU-12345678-aaaa-bbbb-cccc-0123456789ab",
                        "GPU-12345678-aaaa-bbbb-cccc-0123456789cd",
                    ],
                    "Capabilities": [["gpu"]],
                }
            ]
        },
    )


def test_nvidia_one_of_two_rtx2080_and_env_cannot_widen_it() -> None:
    gpus = nvidia.parse_xml(fixture("nvidia-smi-q-x.geforce-rtx2080x2.v13.no-supported-clocks.xml"))
    second = gpu_request(gpus[1])
    payload = container_create_payload(spec(gpus=[second], env={PATH_ENV: "all", "A": "b"}))
    assert payload["HostConfig"]["DeviceRequests"] == [
        {"Driver": "nvidia", "DeviceIDs": [gpus[1].uuid], "Capabilities": [["gpu"]]}
    ]
    assert payload["Env"] == ["A=b"]  # Docker's nvidia driver sets the variable from DeviceIDs


def test_nvidia_mig_slice_by_its_uuid() -> None:
    (a100, *_) = nvidia.parse_list(fixture("nvidia-smi-L.a100-sxm4-80gb-x4.mig.txt"))
    mig = a100.mig_devices[1]
    request = GpuRequest(vendor="nvidia", uuid=mig.uuid, index=a100.index)
    payload = container_create_payload(spec(gpus=[request]))
    assert payload["HostConfig"]["DeviceRequests"] == [
        {"Driver": "nvidia", "DeviceIDs": ["MIG-a45882f0-9215-5733-a0c1-49286ab31cb5"], "Capabilities": [["gpu"]]}
    ]


def test_nvidia_by_index_when_no_uuid() -> None:
    (t4,) = nvidia.parse_xml(fixture("nvidia-smi-q-x.tesla-t4.xml"))
    request = dataclasses.replace(gpu_request(t4), uuid=None)
    host = container_create_payload(spec(gpus=[request]))["HostConfig"]
    assert host["DeviceRequests"] == [{"Driver": "nvidia", "DeviceIDs": ["0"], "Capabilities": [["gpu"]]}]


# --------------------------------------------------------------------------- AMD


def _fake_sysfs(root: Path, gpus: list[GpuInfo]) -> None:
    """/sys/bus/pci/devices/<pci>/drm/{cardN,renderD(128+N-1)} for each GPU, N from 1."""
    for n, gpu in enumerate(gpus, start=1):
        assert gpu.pci_bus_id
        drm = root / "sys" / "bus" / "pci" / "devices" / gpu.pci_bus_id / "drm"
        drm.mkdir(parents=True)
        for name in (f"card{n}", f"renderD{127 + n}", f"controlD{63 + n}"):
            (drm / name).mkdir()


def _amd_mi100(tmp_path: Path) -> list[GpuInfo]:
    gpus = amd.parse_rocm_smi_json(fixture("rocm-smi-json.mi100x4.rocm602.json"))
    assert len(gpus) == 4
    _fake_sysfs(tmp_path, gpus)
    for gpu in gpus:
        gpu.dri_card, gpu.dri_render = amd.dri_nodes(gpu.pci_bus_id, root=str(tmp_path))
    return gpus


def test_amd_two_of_four_mi100_exact_payload(tmp_path: Path) -> None:
    gpus = _amd_mi100(tmp_path)
    requests = [gpu_request(gpus[1]), gpu_request(gpus[3])]
    assert requests[0].dri_card == "/dev/dri/card2" and requests[1].dri_render == "/dev/dri/renderD131"
    payload = container_create_payload(spec(gpus=requests))

    def dev(path: str) -> dict[str, str]:
        return {"PathOnHost": path, "PathInContainer": path, "CgroupPermissions": "rwm"}

    assert payload == base_payload(
        ["NVIDIA_VISIBLE_DEVICES=void"],
        {
            "Devices": [
                dev("/dev/kfd"),
                dev("/dev/dri/card2"),
                dev("/dev/dri/renderD129"),
                dev("/dev/dri/card4"),
                dev("/dev/dri/renderD131"),
            ],
            "GroupAdd": ["video"],
        },
    )
    assert "SecurityOpt" not in payload["HostConfig"]  # seccomp stays on
    assert "DeviceRequests" not in payload["HostConfig"]


def test_amd_numeric_render_group(tmp_path: Path) -> None:
    gpus = _amd_mi100(tmp_path)
    requests = [gpu_request(gpus[0], gids=[109]), gpu_request(gpus[2], gids=[109, 44])]
    host = container_create_payload(spec(gpus=requests))["HostConfig"]
    assert host["GroupAdd"] == ["video", "109", "44"]
    assert [d["PathOnHost"] for d in host["Devices"]] == [
        "/dev/kfd",
        "/dev/dri/card1",
        "/dev/dri/renderD128",
        "/dev/dri/card3",
        "/dev/dri/renderD130",
    ]


@pytest.mark.parametrize(
    ("name", "parse"),
    [
        ("rocm-smi-json.rx7800xt.rocm624.json", amd.parse_rocm_smi_json),
        ("rocm-smi-json.rx6700xt.rocm612.json", amd.parse_rocm_smi_json),
        ("rocm-smi-json.hygon-dcu.dtk24043.json", amd.parse_rocm_smi_json),
        ("amd-smi-static-json.mi210.json", amd.parse_amd_smi_static_json),
    ],
)
def test_amd_single_gpu_render_node_only(name: str, parse: Any) -> None:
    (gpu, *_) = parse(fixture(name))
    # These outputs carry no PCI address: only the render node is known (a fake one here).
    gpu.dri_render = "/dev/dri/renderD128"
    host = container_create_payload(spec(gpus=[gpu_request(gpu)]))["HostConfig"]
    assert host["Devices"] == [
        {"PathOnHost": "/dev/kfd", "PathInContainer": "/dev/kfd", "CgroupPermissions": "rwm"},
        {"PathOnHost": "/dev/dri/renderD128", "PathInContainer": "/dev/dri/renderD128", "CgroupPermissions": "rwm"},
    ]
    assert host["GroupAdd"] == ["video"]


def test_amd_without_render_node_is_invalid() -> None:
    (gpu,) = amd.parse_amd_smi_static_json(fixture("amd-smi-static-json.mi210.json"))
    with pytest.raises(InvalidError, match="render node"):
        container_create_payload(spec(gpus=[gpu_request(gpu)]))


# --------------------------------------------------------------------------- Jetson


@pytest.mark.parametrize(
    ("release", "model"),
    [
        ("jetson-agx-orin.nv_tegra_release.r35.4.1.txt", "jetson-agx-orin.device-tree-model.txt"),
        ("jetson-agx-thor.nv_tegra_release.r38.2.2.txt", "jetson-agx-thor.device-tree-model.txt"),
    ],
)
def test_jetson_exact_payload(tmp_path: Path, release: str, model: str) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nv_tegra_release").write_text(fixture(release))
    (tmp_path / "proc" / "device-tree").mkdir(parents=True)
    (tmp_path / "proc" / "device-tree" / "model").write_text(fixture(model))
    (gpu,) = jetson.detect_sync(root=str(tmp_path))
    payload = container_create_payload(spec(gpus=[gpu_request(gpu)], env={PATH_ENV: "0", "X": "1"}))
    assert payload == base_payload(["X=1", "NVIDIA_VISIBLE_DEVICES=all"], {"Runtime": "nvidia"})


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("gpus", "message"),
    [
        ([GpuRequest("jetson"), GpuRequest("nvidia", uuid="GPU-1")], "Jetson"),
        ([GpuRequest("nvidia")], "uuid or an index"),
        ([GpuRequest("nvidia", uuid="GPU-1"), GpuRequest("nvidia", uuid="GPU-1")], "twice"),
        ([GpuRequest("amd", dri_render="/etc/passwd")], "not under /dev"),
        ([GpuRequest("amd", dri_render="/dev/dri/renderD128", dri_card="../card0")], "not under /dev"),
        ([GpuRequest("intel", uuid="x")], "unknown GPU vendor"),  # type: ignore[arg-type]
    ],
)
def test_bad_gpu_requests(gpus: list[GpuRequest], message: str) -> None:
    with pytest.raises(InvalidError, match=message):
        container_create_payload(spec(gpus=gpus))


@pytest.mark.parametrize(
    "change",
    [
        {"name": "-starts-with-dash"},
        {"name": "has/slash"},
        {"instance_id": -1},
        {"node_id": True},
        {"image": ""},
        {"image": "debian 12"},
        {"command": "sleep 1"},
        {"cpus": -1},
        {"memory_mb": 5},
        {"labels": {"dm.managed": "0"}},
        {"labels": {"dm.node": "1"}},
        {"env": {"": "x"}},
        {"env": {"A": "nul\x00"}},
        {"restart_policy": "sometimes"},
    ],
)
def test_bad_specs(change: dict[str, Any]) -> None:
    with pytest.raises(InvalidError) as excinfo:
        container_create_payload(spec(**change))
    assert excinfo.value.code == "invalid"


def test_spec_round_trips_through_dicts() -> None:
    original = spec(gpus=[GpuRequest("amd", uuid="u", index=1, dri_render="/dev/dri/renderD128", gids=(109,))], cpus=2)
    assert ContainerSpec.from_dict(original.to_dict()) == original
