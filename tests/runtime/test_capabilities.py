"""Capabilities as the facts carry them, the fake's switches, and an agent's reply to what its driver cannot do.

Whether each driver's claims are true is checked against the driver itself in the conformance
suite (``test_capabilities_are_what_the_driver_does``).
"""

from __future__ import annotations

import dataclasses

import pytest

from agent import protocol as p
from agent.config import AgentConfig
from agent.handlers import HandlerError
from agent.runtime import LEGACY_CAPABILITIES, Capabilities, ContainerSpec, GpuRequest, UnsupportedError, make_driver
from agent.runtime.docker import CAPABILITIES as DOCKER
from agent.runtime.fake import CAPABILITIES as FAKE
from agent.runtime.fake import FakeDriver
from agent.runtime.validate import check_supported
from agent.workloads import Workloads
from tests.wire import call

IMAGE = "debian:12"


def test_round_trip_and_a_report_read_tolerantly() -> None:
    assert Capabilities.from_dict(DOCKER.to_dict()) == DOCKER
    assert DOCKER.to_dict()["gpu_vendors"] == ["nvidia", "amd", "jetson"]
    # What a peer does not say, or says in a shape this side does not know, it cannot do.
    read = Capabilities.from_dict({"commit": True, "pull": "yes", "exec": 1, "gpu_vendors": ["amd", "intel"],
                                   "teleport": True})
    assert read == Capabilities(commit=True, gpu_vendors=("amd",))
    assert Capabilities.from_dict({"gpu_vendors": "nvidia"}).gpu_vendors == ()
    assert Capabilities.from_dict({}) == Capabilities()
    assert read.can("commit") and not read.can("pull") and not read.can("gpu_vendors") and not read.can("teleport")
    assert read.can_pass("amd") and not read.can_pass("nvidia")


def test_the_drivers_claim_what_agents_did_before_capabilities() -> None:
    """dmd takes a node that reports nothing to do LEGACY_CAPABILITIES: today's drivers do
    that and more (exec on a terminal and file copy came later; a driver that drops one must
    report it, which is what the facts are for)."""
    later = {"exec_tty": False, "file_copy": False}
    assert dataclasses.replace(DOCKER, **later) == LEGACY_CAPABILITIES and DOCKER.exec_tty and DOCKER.file_copy
    assert dataclasses.replace(FAKE, **later) == LEGACY_CAPABILITIES and FAKE.exec_tty and FAKE.file_copy


def test_check_supported_names_each_capability() -> None:
    spec = ContainerSpec(instance_id=1, node_id=2, name="dm-1", image=IMAGE, privileged=True, host_network=True,
                         gpus=[GpuRequest(vendor="amd", dri_render="/dev/dri/renderD128"),
                               GpuRequest(vendor="nvidia", index=0), GpuRequest(vendor="nvidia", index=1)])
    check_supported(spec, DOCKER)
    with pytest.raises(UnsupportedError) as excinfo:
        check_supported(spec, dataclasses.replace(DOCKER, privileged=False, host_network=False, gpu_vendors=("amd",)))
    assert excinfo.value.message == (
        "create container dm-1: this runtime driver cannot give a container privileged containers (capability "
        "privileged), the host's network (capability host_network), nvidia GPUs (capability gpu_vendors)")


async def test_fake_switches() -> None:
    fake = make_driver("fake", capabilities=dataclasses.replace(FAKE, pull=False))
    try:
        assert isinstance(fake, FakeDriver) and not fake.capabilities().pull
        assert fake.set_capabilities(commit=False, pull=True) == dataclasses.replace(FAKE, commit=False)
        assert fake.capabilities() == dataclasses.replace(FAKE, commit=False)
    finally:
        await fake.close()


async def test_the_agent_replies_unsupported() -> None:
    fake = FakeDriver(capabilities=dataclasses.replace(FAKE, commit=False, privileged=False))
    fake.add_image(IMAGE)
    config = AgentConfig(server="http://127.0.0.1:9", node_id=2, credential=None)
    workloads = Workloads(fake, lambda: config)
    try:
        spec = ContainerSpec(instance_id=1, node_id=2, name="dm-1", image=IMAGE, privileged=True)
        ensure = workloads._translated(workloads.ensure)
        with pytest.raises(HandlerError) as excinfo:
            await call(ensure, p.InstanceEnsure, {"spec": spec.to_dict(), "desired": "running"})
        assert excinfo.value.code == "unsupported" and "capability privileged" in excinfo.value.message
        assert await fake.list() == []
        await call(ensure, p.InstanceEnsure,
                   {"spec": dataclasses.replace(spec, privileged=False).to_dict(), "desired": "running"})
        commit = workloads._translated(workloads.commit)
        with pytest.raises(HandlerError) as excinfo:
            await call(commit, p.ImageCommit, {"instance_id": 1, "repository": "dm-test/saved"})
        assert excinfo.value.code == "unsupported" and "capability commit" in excinfo.value.message
        assert [i.repo_tags for i in await fake.list_images()] == [[f"{IMAGE}"]]
    finally:
        await workloads.close_features(node_deleted=False)
        await fake.close()
