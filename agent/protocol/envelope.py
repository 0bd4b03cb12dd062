"""The frames of the dmd <-> dmc link: envelopes, close codes, versions (standard library only).

One WebSocket per node, opened by the agent (so NAT and reverse proxies are fine), with
the node credential in the upgrade request's `Authorization: Bearer` header. Every frame
is one JSON text message, an *envelope*:

    {"v": 1, "type": "heartbeat", "id": "a1", "data": {...}}

Requests and replies: a message that expects an answer carries an `id`; the answer is

    {"v": 1, "type": "reply", "id": "a1", "ok": true,  "data": {...}}
    {"v": 1, "type": "reply", "id": "a1", "ok": false, "error": {"code": "...", "message": "..."}}

Handshake: the agent's first message is `hello` (its protocol range, version, node id, facts
and, in protocol 1, a full snapshot of its state); from protocol 2 the snapshot follows the
hello in `snapshot` parts. dmd answers `welcome` with the version both will speak, or closes
the link with CLOSE_PROTOCOL. The messages themselves are types in
:mod:`agent.protocol.messages`. New message types and fields are added without a
version bump (receivers ignore unknown fields and answer unknown requests with the error
code `unknown_type`); the version changes only when an existing message changes meaning.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "AGENT_WS_PATH", "CLOSE_AUTH", "CLOSE_DELETED", "CLOSE_FORBIDDEN", "CLOSE_GOING_AWAY", "CLOSE_HEARTBEAT",
    "CLOSE_NORMAL", "CLOSE_PROTOCOL", "CLOSE_RATE_LIMITED", "CLOSE_REPLACED", "CLOSE_SLOW", "CLOSE_TOO_LARGE",
    "JOIN_PATH", "MAX_MESSAGE_BYTES", "MIN_PROTOCOL_VERSION", "PROTOCOL_VERSION", "REPLY", "Envelope", "IdSource",
    "ProtocolError", "RemoteError", "decode", "message", "negotiate", "reply_error", "reply_ok",
]

PROTOCOL_VERSION = 2  # 2: the hello's state may follow in `snapshot` parts
MIN_PROTOCOL_VERSION = 1  # dmd still takes protocol-1 agents (the whole state inside the hello)
MAX_MESSAGE_BYTES = 1 << 20  # 1 MiB: facts with many GPUs fit easily; logs travel in chunks
AGENT_WS_PATH = "/agent/ws"
JOIN_PATH = "/api/v1/nodes/join"

# WebSocket close codes (4000-4999 are for applications).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_AUTH = 4001  # missing, malformed or unknown credential
CLOSE_FORBIDDEN = 4003  # a message about another node
CLOSE_REPLACED = 4009  # the same node connected again; the older link is closed
CLOSE_DELETED = 4010  # the node was deleted: forget the credential and stop
CLOSE_HEARTBEAT = 4008  # no heartbeat for three intervals
CLOSE_PROTOCOL = 4400  # malformed message, bad handshake or unsupported version
CLOSE_TOO_LARGE = 4413
CLOSE_SLOW = 4429  # the send queue towards this agent overflowed
CLOSE_RATE_LIMITED = 4430  # the agent sent more messages (of a type) than its link allows


REPLY = "reply"  # both ways: the answer to a request

_ENVELOPE_KEYS = frozenset({"v", "type", "id", "data", "ok", "error"})


class ProtocolError(Exception):
    """A message that breaks the protocol. `close_code` says how to end the link."""

    def __init__(self, message: str, close_code: int = CLOSE_PROTOCOL) -> None:
        super().__init__(message)
        self.close_code = close_code


class RemoteError(Exception):
    """The other end answered a request with ok=false."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Envelope:
    type: str
    data: dict[str, Any] = field(default_factory=dict)
    id: str | None = None
    v: int = PROTOCOL_VERSION
    ok: bool | None = None  # replies only
    error: dict[str, str] | None = None  # failed replies only

    @property
    def is_reply(self) -> bool:
        return self.type == REPLY

    def to_json(self) -> str:
        out: dict[str, Any] = {"v": self.v, "type": self.type}
        if self.id is not None:
            out["id"] = self.id
        if self.type == REPLY:
            out["ok"] = bool(self.ok)
            if self.ok:
                out["data"] = self.data
            else:
                out["error"] = self.error or {"code": "error", "message": "unknown error"}
        else:
            out["data"] = self.data
        try:
            # allow_nan=False: NaN/Infinity are not JSON, and the other end may not parse them.
            text = json.dumps(out, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except ValueError as e:
            raise ProtocolError(f"{self.type} message is not valid JSON: {e}") from None
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > MAX_MESSAGE_BYTES:
            raise ProtocolError(f"{self.type} message of {size} bytes exceeds the limit", CLOSE_TOO_LARGE)
        return text


def message(type_: str, data: dict[str, Any] | None = None, id_: str | None = None) -> Envelope:
    return Envelope(type=type_, data=data or {}, id=id_)


def reply_ok(request_id: str, data: dict[str, Any] | None = None) -> Envelope:
    return Envelope(type=REPLY, data=data or {}, id=request_id, ok=True)


def reply_error(request_id: str, code: str, msg: str) -> Envelope:
    return Envelope(type=REPLY, id=request_id, ok=False, error={"code": code[:64], "message": msg[:2000]})


def decode(raw: str | bytes) -> Envelope:
    """Parse and check one frame. Raises ProtocolError with the close code to use."""
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "surrogatepass"))
    if size > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {size} bytes exceeds {MAX_MESSAGE_BYTES}", CLOSE_TOO_LARGE)
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        raise ProtocolError("message is not valid JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError("message must be a JSON object")
    unknown = set(obj) - _ENVELOPE_KEYS
    if unknown:
        raise ProtocolError(f"unknown envelope fields: {', '.join(sorted(unknown))}")
    v, type_, id_ = obj.get("v"), obj.get("type"), obj.get("id")
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ProtocolError("envelope field 'v' must be a positive integer")
    if not isinstance(type_, str) or not 0 < len(type_) <= 64:
        raise ProtocolError("envelope field 'type' must be a short string")
    if id_ is not None and (not isinstance(id_, str) or not 0 < len(id_) <= 64):
        raise ProtocolError("envelope field 'id' must be a string of 1-64 characters")
    if type_ == REPLY:
        if id_ is None:
            raise ProtocolError("a reply needs the id of its request")
        ok = obj.get("ok")
        if not isinstance(ok, bool):
            raise ProtocolError("a reply needs a boolean 'ok'")
        if ok:
            data = obj.get("data", {})
            if not isinstance(data, dict):
                raise ProtocolError("reply 'data' must be an object")
            return Envelope(type=REPLY, data=data, id=id_, v=v, ok=True)
        err = obj.get("error")
        if not (isinstance(err, dict) and isinstance(err.get("code"), str) and isinstance(err.get("message"), str)):
            raise ProtocolError("a failed reply needs error {code, message}")
        return Envelope(type=REPLY, id=id_, v=v, ok=False,
                        error={"code": err["code"][:64], "message": err["message"][:2000]})
    data = obj.get("data", {})
    if not isinstance(data, dict):
        raise ProtocolError("envelope field 'data' must be an object")
    return Envelope(type=type_, data=data, id=id_, v=v)


def negotiate(agent_min: int, agent_max: int) -> int | None:
    """The highest version both ends speak, or None."""
    best = min(agent_max, PROTOCOL_VERSION)
    return best if best >= max(agent_min, MIN_PROTOCOL_VERSION) else None


class IdSource:
    """Request ids unique on one link: a prefix per side and a counter."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter)}"
