"""The sets of messages each end must handle. The messages themselves, each a type, are in
:mod:`agent.protocol.notices` (the handshake, notices, events) and :mod:`agent.protocol.requests`
(requests with their replies).

A request names its wire type, its reply type and the time limit the agent gives it::

    reply = await hub.ask(node_id, InstanceEnsure(spec, "running"))   # -> ContainerReply

Requests go from dmd to the agent and each gets exactly one reply. Notices go either way and
get none. The wire shapes are those of protocol 1 (an agent of that version still joins); the
hello's state may now follow in parts (``snapshot`` notices, protocol 2).
"""

from __future__ import annotations

from typing import Any

from agent.protocol.base import Notice, Request
from agent.protocol.notices import Event, Heartbeat, Hello, Metrics, NodeDeleted, NodeFacts, SnapshotPart, Welcome
from agent.protocol.requests import (
    ContainersList,
    CredentialRotate,
    FactsRefresh,
    ImageCommit,
    ImageExport,
    ImageImport,
    ImagePull,
    ImageRemove,
    ImagesList,
    InstanceAccess,
    InstanceEnsure,
    InstanceInspect,
    InstanceLogs,
    InstanceRemove,
    InstanceRestart,
    InstanceSync,
    Ping,
    PortsApply,
)

__all__ = ["AGENT_NOTICES", "DMD_NOTICES", "REQUESTS"]

# =========================================================================== the sets both ends know

# Requests dmd sends (the agent registers a handler for each).
REQUESTS: dict[str, type[Request[Any]]] = {c.TYPE: c for c in (
    Ping, FactsRefresh, CredentialRotate,
    InstanceEnsure, InstanceRemove, InstanceRestart, InstanceInspect, InstanceLogs, InstanceSync, ContainersList,
    ImagesList, ImagePull, ImageImport, ImageExport, ImageRemove, ImageCommit,
    PortsApply, InstanceAccess,
)}
# Notices the agent sends (dmd registers a handler for each).
AGENT_NOTICES: dict[str, type[Notice]] = {
    c.TYPE: c for c in (Hello, SnapshotPart, Heartbeat, Metrics, NodeFacts, Event)}
# Notices dmd sends.
DMD_NOTICES: dict[str, type[Notice]] = {c.TYPE: c for c in (Welcome, NodeDeleted)}

