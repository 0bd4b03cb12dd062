"""Which containers are DM's, and whose: the labels DM puts on a container and reads back.

Every container DM creates carries ``dm.managed=1``, ``dm.instance=<id>`` and ``dm.node=<id>``
(and ``dm.installation`` from dmd); containers without ``dm.managed=1`` are never adopted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from agent.protocol.types import (
    LABEL_INSTALLATION,
    LABEL_INSTANCE,
    LABEL_MANAGED,
    LABEL_NODE,
    ContainerInfo,
    ContainerSpec,
)

if TYPE_CHECKING:
    from agent.runtime.driver import RuntimeDriver

__all__ = [
    "container_labels",
    "identity_labels",
    "is_ours",
    "labels_for",
    "ours_by_instance",
    "pick_instance_container",
]


def identity_labels(spec: ContainerSpec) -> dict[str, str]:
    """The labels that say a container is this spec's: its node and its DM installation."""
    out = {LABEL_NODE: str(spec.node_id)}
    installation = spec.labels.get(LABEL_INSTALLATION)
    if installation:
        out[LABEL_INSTALLATION] = installation
    return out


def labels_for(instance_id: int, node_id: int, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The labels of a DM container: the spec's own, then DM's ids (which win)."""
    labels = dict(extra or {})
    labels[LABEL_MANAGED] = "1"
    labels[LABEL_INSTANCE] = str(instance_id)
    labels[LABEL_NODE] = str(node_id)
    return labels


def is_ours(c: ContainerInfo, node_id: int, installation: str | None) -> bool:
    """A managed container of this node in this DM installation (before dmd has said which
    installation it is, ``installation`` is None and any installation's counts)."""
    if not c.managed or c.node_id != node_id:
        return False
    return installation is None or c.labels.get(LABEL_INSTALLATION) == installation


async def ours_by_instance(driver: RuntimeDriver, node_id: int,
                           installation: str | None) -> dict[int, ContainerInfo]:
    """This node's containers of this installation by instance id; a running one wins where an
    instance has several."""
    out: dict[int, ContainerInfo] = {}
    for c in await driver.list(all=True, managed_only=True):
        if c.instance_id is not None and is_ours(c, node_id, installation) and (
                c.instance_id not in out or c.state == "running"):
            out[c.instance_id] = c
    return out


def _label_int(labels: Mapping[str, str], key: str) -> int | None:
    value = labels.get(key)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def container_labels(info: Mapping[str, str] | None) -> tuple[dict[str, str], bool, int | None, int | None]:
    """(labels, managed, instance_id, node_id) from a container's labels."""
    labels = dict(info or {})
    managed = labels.get(LABEL_MANAGED) == "1"
    if not managed:
        return labels, False, None, None
    return labels, True, _label_int(labels, LABEL_INSTANCE), _label_int(labels, LABEL_NODE)


def pick_instance_container(found: Sequence[ContainerInfo]) -> ContainerInfo | None:
    """The container to treat as an instance's when (wrongly) several carry its id:
    a running one first, then the newest."""
    if not found:
        return None

    def rank(info: ContainerInfo) -> tuple[int, float]:
        created = info.created_at.timestamp() if info.created_at else 0.0
        return (1 if info.state == "running" else 0, created)

    return max(found, key=rank)
