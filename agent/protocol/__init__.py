"""The dmd <-> dmc wire contract, shared by both ends (standard library only).

* :mod:`agent.protocol.envelope` — frames: the JSON envelope, close codes, version negotiation;
* :mod:`agent.protocol.types` — the values that cross: container specs and states, images,
  GPUs, port maps, SSH status, label names, error codes;
* :mod:`agent.protocol.messages` — every message as a type: requests with their replies,
  notices and events, and the sets each end must handle;
* :mod:`agent.protocol.codec` — typed values to JSON-able data and back, checked.

Usage::

    from agent import protocol as p

    env = p.request_envelope(p.InstanceInspect(7), "d1")     # dmd -> agent
    req = p.parse(p.InstanceInspect, env.data)               # agent: typed, checked
    env = p.reply_envelope("d1", p.MaybeContainer(None))     # agent -> dmd
"""

from __future__ import annotations

from typing import Any, TypeVar

from agent.protocol import base, codec, envelope, messages, notices, requests, streams, types
from agent.protocol.base import *
from agent.protocol.codec import DecodeError
from agent.protocol.envelope import *
from agent.protocol.messages import *
from agent.protocol.notices import *
from agent.protocol.requests import *
from agent.protocol.streams import *
from agent.protocol.types import *

T = TypeVar("T")

# The wire names, for code (and tests) that speak in envelopes.
HELLO = Hello.TYPE
SNAPSHOT = SnapshotPart.TYPE
HEARTBEAT = Heartbeat.TYPE
METRICS = Metrics.TYPE
FACTS = NodeFacts.TYPE
EVENT = Event.TYPE
WELCOME = Welcome.TYPE
NODE_DELETED = NodeDeleted.TYPE
PING = Ping.TYPE
FACTS_REFRESH = FactsRefresh.TYPE
CREDENTIAL_ROTATE = CredentialRotate.TYPE
INSTANCE_ENSURE = InstanceEnsure.TYPE
INSTANCE_REMOVE = InstanceRemove.TYPE
INSTANCE_RESTART = InstanceRestart.TYPE
INSTANCE_INSPECT = InstanceInspect.TYPE
INSTANCE_LOGS = InstanceLogs.TYPE
INSTANCE_SYNC = InstanceSync.TYPE
CONTAINERS_LIST = ContainersList.TYPE
IMAGES_LIST = ImagesList.TYPE
IMAGE_PULL = ImagePull.TYPE
IMAGE_IMPORT = ImageImport.TYPE
IMAGE_EXPORT = ImageExport.TYPE
IMAGE_REMOVE = ImageRemove.TYPE
IMAGE_COMMIT = ImageCommit.TYPE
PORTS_APPLY = PortsApply.TYPE
INSTANCE_ACCESS = InstanceAccess.TYPE


def to_data(value: Any) -> dict[str, Any]:
    """A message (or reply) as its envelope's ``data``."""
    if isinstance(value, Event):
        value = value.body  # an event's fields sit beside its kind, not under a key
    data = codec.encode(value)
    assert isinstance(data, dict), type(value)
    return data


def parse(cls: type[T], data: Any) -> T:
    """``data`` as a ``cls`` message; raises :class:`DecodeError` naming the bad field."""
    if cls is Event:
        body = parse_event(data)
        if body is None:
            raise DecodeError("kind", f"unknown event kind {data.get('kind')!r}")
        return Event(body)  # type: ignore[return-value]
    return codec.decode(cls, data)


def parse_event(data: Any) -> EventBody | None:
    """An event's body by its kind; None for a kind this side does not know (newer peer)."""
    if not isinstance(data, dict):
        raise DecodeError("", "an event must be an object")
    cls = EVENT_KINDS.get(data.get("kind"))  # type: ignore[arg-type]
    return None if cls is None else codec.decode(cls, data)  # type: ignore[no-any-return]


def notice_envelope(msg: Notice) -> Envelope:
    return message(msg.TYPE, to_data(msg))


def request_envelope(req: Request[Any], request_id: str) -> Envelope:
    return message(req.TYPE, to_data(req), request_id)


def reply_envelope(request_id: str, value: Any) -> Envelope:
    return reply_ok(request_id, to_data(value))


__all__ = ["DecodeError", "codec", "notice_envelope", "parse", "parse_event", "reply_envelope", "request_envelope",
           "to_data"]
__all__ += envelope.__all__
__all__ += base.__all__
__all__ += messages.__all__
__all__ += notices.__all__
__all__ += requests.__all__
__all__ += streams.__all__
__all__ += types.__all__
__all__ += [
    "CONTAINERS_LIST", "CREDENTIAL_ROTATE", "EVENT", "FACTS", "FACTS_REFRESH", "HEARTBEAT", "HELLO", "IMAGES_LIST",
    "IMAGE_COMMIT", "IMAGE_EXPORT", "IMAGE_IMPORT", "IMAGE_PULL", "IMAGE_REMOVE", "INSTANCE_ACCESS", "INSTANCE_ENSURE",
    "INSTANCE_INSPECT", "INSTANCE_LOGS", "INSTANCE_REMOVE", "INSTANCE_RESTART", "INSTANCE_SYNC", "METRICS",
    "NODE_DELETED", "PING", "PORTS_APPLY", "SNAPSHOT", "WELCOME",
]
