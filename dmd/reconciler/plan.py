"""The pure half of a reconcile round: from what a node should run and what its agent reported,
the steps that bring one to the other. No I/O here, so every case is a unit test, and random
interleavings of user actions, container events, reconnects and lost replies are property tests
(tests/reconciler/).

A round plans in two phases: the containers first (:func:`plan_containers`), then, with the
instances that run once those steps are done, each feature's steps (port maps, SSH: see
:mod:`dmd.reconciler.features`), and the sweep of containers dmd no longer knows last.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from agent import protocol as p

Desired = Literal["running", "stopped", "deleted"]


# --------------------------------------------------------------------------- what the round knows


@dataclass(frozen=True, slots=True)
class NodeView:
    id: int
    name: str
    installation_id: str
    gpus: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # ledger key -> the GPU's facts


@dataclass(frozen=True, slots=True)
class InstanceView:
    id: int
    name: str
    owner_id: int
    image: str
    desired: Desired
    status: str
    status_message: str | None = None
    container_id: str | None = None
    command: Sequence[str] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    cpus: float | None = None
    memory_mb: int | None = None
    privileged: bool = False
    host_network: bool = False
    gpu_keys: tuple[str, ...] = ()  # the devices the ledger gave it


# --------------------------------------------------------------------------- steps


@dataclass(frozen=True, slots=True)
class SetStatus:
    """Record what the instance's container is (dmd's database only)."""

    instance_id: int
    status: str
    message: str | None = None
    container_id: str | None = None


@dataclass(frozen=True, slots=True)
class Ensure:
    """Have the agent create the container if it has none, then start or stop it. ``creating``:
    the instance was never sent before, and says "creating" meanwhile (recorded while the agent
    works, not before: the start waits for nothing of dmd's)."""

    instance_id: int
    spec: p.ContainerSpec
    desired: Literal["running", "stopped"]
    creating: bool = False
    fresh: bool = False  # the agent reported no container of this instance on its current link


@dataclass(frozen=True, slots=True)
class Remove:
    """Remove the container, then forget the instance (which frees its GPUs and ports)."""

    instance_id: int


@dataclass(frozen=True, slots=True)
class Sweep:
    """Remove this installation's containers of instances dmd no longer has."""

    keep: tuple[int, ...]


ContainerStep = SetStatus | Ensure | Remove


# --------------------------------------------------------------------------- pure helpers


def container_name(instance_id: int, name: str, installation_id: str) -> str:
    """dm-<installation>-<id>-<name>: readable in `docker ps`, and never the name of another DM
    installation's container on the same Engine (a reinstall with a fresh database, a test dmd)."""
    return f"dm-{installation_id[:6]}-{instance_id}-{name}"


def status_of(container: p.ContainerInfo) -> tuple[str, str | None]:
    """The instance's status (and message) for a container in this state."""
    if container.state in ("running", "paused", "restarting"):
        # Paused only while it is committed to an image (DM never pauses otherwise).
        return "running", None
    if container.oom_killed:
        return "stopped", "killed: out of memory"
    if container.error:
        return "error", container.error
    if container.state in ("exited", "dead") and container.exit_code not in (None, 0):
        return "stopped", f"exited with code {container.exit_code}"
    return "stopped", None


def build_spec(node: NodeView, inst: InstanceView) -> p.ContainerSpec:
    """The container the instance should have on this node, its GPUs by device as the ledger holds them."""
    gpus = []
    for key in inst.gpu_keys:
        g = node.gpus.get(key)
        if g is None:
            continue  # the node no longer reports it: the container starts without (the page says so)
        # By uuid only where the uuid is the key (one device); where GPUs repeat or lack uuids the
        # key is their index, and a repeated uuid would name several devices to the runtime.
        uuid = g.get("uuid") if g.get("uuid") == key else None
        gpus.append(p.GpuRequest(vendor=g.get("vendor", "nvidia"), uuid=uuid, index=g.get("index"),
                                 dri_card=g.get("dri_card"), dri_render=g.get("dri_render")))
    return p.ContainerSpec(
        instance_id=inst.id, node_id=node.id, name=container_name(inst.id, inst.name, node.installation_id),
        image=inst.image, command=list(inst.command) if inst.command is not None else None, env=dict(inst.env),
        cpus=inst.cpus, memory_mb=inst.memory_mb, gpus=gpus,
        labels={p.LABEL_OWNER: str(inst.owner_id), p.LABEL_INSTALLATION: node.installation_id},
        privileged=inst.privileged, host_network=inst.host_network, hostname=inst.name[:63],
    )


def settled(container: p.ContainerInfo, desired: str) -> bool:
    """Whether a container already is what the instance wants (no request needed)."""
    running = container.state in ("running", "paused", "restarting")
    return running if desired == "running" else not running


# --------------------------------------------------------------------------- the plan


def plan_containers(node: NodeView, instances: Sequence[InstanceView],
                    known: Mapping[int, p.ContainerInfo], complete: bool = False) -> list[ContainerStep]:
    """The container steps of a round. ``known``: the node's containers by instance id, as the
    agent last reported them on its current link (its hello, replies, events); ``complete``: the
    hello listed every container, so one missing from ``known`` does not exist."""
    steps: list[ContainerStep] = []
    for inst in instances:
        if inst.desired == "deleted":
            steps.append(Remove(inst.id))
            continue
        container = known.get(inst.id)
        if container is not None and settled(container, inst.desired):
            status, message = status_of(container)
            if (status, message, container.id) != (inst.status, inst.status_message, inst.container_id):
                steps.append(SetStatus(inst.id, status, message, container.id))
            continue
        steps.append(Ensure(inst.id, build_spec(node, inst), inst.desired, creating=inst.status == "pending",
                            fresh=complete and container is None))
    return steps


def sweep(instances: Sequence[InstanceView]) -> Sweep:
    return Sweep(tuple(i.id for i in instances))
