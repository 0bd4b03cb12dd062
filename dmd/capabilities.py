"""What a node's runtime can do, from its facts; refusing what it cannot before its agent is asked.

Each agent reports its runtime driver's :class:`~agent.protocol.types.Capabilities` in its facts
(``"capabilities"``). A node whose facts carry none (an agent from before capabilities, or one
whose facts are not in yet) is taken to do what every agent did then
(:data:`~agent.protocol.types.LEGACY_CAPABILITIES`: Docker's).

Public API::

    capabilities.require(node, "commit")        # raises Unsupported (409 unsupported)
    capabilities.instance_refusal(node, privileged=True, host_network=False, gpu_count=1)  # why not, or None
    capabilities.passable(node, free_gpus)      # the (key, facts) of GPUs the node's runtime can pass in
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from agent.protocol.types import LEGACY_CAPABILITIES, Capabilities
from dmd.errors import ApiError
from dmd.models import Node

__all__ = ["Unsupported", "instance_refusal", "of", "passable", "require"]

# What each capability lets dmd do, for the message of a refusal.
_DOING = {
    "pull": "pull images",
    "image_import": "import images",
    "image_export": "export images (the source of a copy)",
    "commit": "save a container as an image",
    "privileged": "run privileged containers",
    "host_network": "run containers on the host's network",
    "exec": "run commands in containers",
    "exec_tty": "run commands on a terminal in containers",
    "logs_follow": "follow containers' logs",
    "file_copy": "copy files into or out of containers",
}

class Unsupported(ApiError):
    """The node's runtime cannot do this at all (unlike no_capacity, waiting does not help)."""

    status, code = 409, "unsupported"


def of(node: Node) -> Capabilities:
    """The capabilities the node's agent reported (Docker's when it reported none)."""
    reported = (node.facts or {}).get("capabilities")
    if not isinstance(reported, Mapping):
        return LEGACY_CAPABILITIES
    return Capabilities.from_dict(reported)


def _runtime(node: Node) -> str:
    runtime = (node.facts or {}).get("runtime")
    name = runtime.get("name") if isinstance(runtime, Mapping) else None
    return f"its runtime ({name})" if isinstance(name, str) and name else "its runtime"


def _refusal(node: Node, capability: str, doing: str) -> str:
    return f"node {node.name} cannot {doing}: {_runtime(node)} lacks the capability {capability}"


def require(node: Node, capability: str) -> None:
    """Raise :class:`Unsupported` (naming the node and the capability) unless the node can."""
    if not of(node).can(capability):
        raise Unsupported(_refusal(node, capability, _DOING.get(capability, capability)),
                          extra={"node_id": node.id, "capability": capability})


def _vendors(gpus: Iterable[Mapping[str, Any]]) -> list[str]:
    return list(dict.fromkeys(str(g.get("vendor")) for g in gpus))


def instance_refusal(node: Node, *, privileged: bool, host_network: bool,
                     gpus: Sequence[Mapping[str, Any]] | None = None, gpu_count: int = 0) -> str | None:
    """Why the node's runtime cannot run this instance, naming the node and the capability
    (None when it can). GPUs asked for by id (``gpus``: their facts) must all be of a vendor it can pass; GPUs asked
    for by count must be there among those (:func:`passable` leaves out the others); a count
    beyond every GPU of the node is a matter of capacity, not of the runtime."""
    caps = of(node)
    if privileged and not caps.privileged:
        return _refusal(node, "privileged", _DOING["privileged"])
    if host_network and not caps.host_network:
        return _refusal(node, "host_network", _DOING["host_network"])
    if gpus is not None:
        lacking = [v for v in _vendors(gpus) if not caps.can_pass(v)]
    elif len([g for g in node.gpus if caps.can_pass(str(g.get("vendor")))]) < gpu_count <= len(node.gpus):
        lacking = [v for v in _vendors(node.gpus) if not caps.can_pass(v)]  # only they could make up the count
    else:
        lacking = []
    if lacking:
        return _refusal(node, "gpu_vendors", f"pass {' or '.join(lacking)} GPUs into containers")
    return None


def passable(node: Node, gpus: Iterable[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """The (ledger key, GPU facts) pairs whose vendor the node's runtime can pass into a
    container: the only GPUs of the node an instance can be given."""
    caps = of(node)
    return [(key, gpu) for key, gpu in gpus if caps.can_pass(str(gpu.get("vendor")))]
