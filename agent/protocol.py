"""The dmd <-> dmc wire protocol, shared by both ends (standard library only).

One WebSocket per node, opened by the agent (so NAT and reverse proxies are fine), with
the node credential in the upgrade request's `Authorization: Bearer` header. Every frame
is one JSON text message, an *envelope*:

    {"v": 1, "type": "heartbeat", "id": "a1", "data": {...}}

Requests and replies: a message that expects an answer carries an `id`; the answer is

    {"v": 1, "type": "reply", "id": "a1", "ok": true,  "data": {...}}
    {"v": 1, "type": "reply", "id": "a1", "ok": false, "error": {"code": "...", "message": "..."}}

Handshake: the agent's first message is `hello` (its protocol range, version, node id and
a full snapshot of its state); dmd answers `welcome` with the version both will speak, or
closes the link with CLOSE_PROTOCOL. New message types and fields are added without a
version bump (receivers ignore unknown fields and answer unknown requests with the error
code `unknown_type`); the version changes only when an existing message changes meaning.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

PROTOCOL_VERSION = 1
MIN_PROTOCOL_VERSION = 1
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


# --- message types ------------------------------------------------------------------
# agent -> dmd
HELLO = "hello"  # data: Hello
HEARTBEAT = "heartbeat"  # data: {"seq": int}
METRICS = "metrics"  # data: {"at": float, "cpu_pct": ..., "memory_used_mb": ..., "gpus": [...]}
FACTS = "facts"  # data: the full facts dict, sent when they change
EVENT = "event"  # data: {"kind": str, ...}
# dmd -> agent
WELCOME = "welcome"  # data: {"protocol", "node_id", "heartbeat_s", "server_version", "installation_id"}
PING = "ping"  # request; reply data: {"at": float}
FACTS_REFRESH = "facts.refresh"  # request; reply data: the facts dict
CREDENTIAL_ROTATE = "credential.rotate"  # request: {"credential": str}; the agent saves it, then replies
NODE_DELETED = "node.deleted"  # notice: forget the credential and stop
# dmd -> agent: instances and images (requests; replies carry the data named here).
# Errors come back as reply errors with the runtime driver's code (not_found, image_not_found,
# conflict, invalid, unavailable, pull_failed, timeout, runtime_error) and its message.
INSTANCE_ENSURE = "instance.ensure"  # {"spec": ContainerSpec dict, "desired": "running"|"stopped"}
#   -> {"container": ContainerInfo dict}; creates when missing (idempotent by instance id), then
#   starts or stops it to match `desired`.
INSTANCE_REMOVE = "instance.remove"  # {"instance_id"} -> {"removed": bool}; missing is fine
INSTANCE_RESTART = "instance.restart"  # {"instance_id"} -> {"container": ContainerInfo dict}
INSTANCE_INSPECT = "instance.inspect"  # {"instance_id"} -> {"container": ContainerInfo dict | None}
INSTANCE_LOGS = "instance.logs"  # {"instance_id", "tail": int|None, "since": float|None}
#   -> {"lines": [str], "truncated": bool, "last_ts": float|None}; at most LOGS_MAX_BYTES
INSTANCE_SYNC = "instance.sync"  # {"keep": [instance ids]} -> {"removed": [instance ids]}
#   removes this node's managed containers whose instance no longer exists in dmd
CONTAINERS_LIST = "containers.list"  # {} -> {"containers": [ContainerInfo dict]}, managed or not
IMAGES_LIST = "images.list"  # {} -> {"images": [ImageInfo dict]}
IMAGE_PULL = "image.pull"  # {"ref", "auth": {"username", "password", "serveraddress"}|None,
#   "progress_id": str} -> {"image": ImageInfo dict}; progress as EVENT kind "image.progress"
IMAGE_IMPORT = "image.import"  # {"url", "repository", "tag"} -> {"image": ImageInfo dict}
#   the agent GETs the tarball from dmd's blob URL with its node credential
IMAGE_EXPORT = "image.export"  # {"ref", "url"} -> {"bytes": int}; the agent PUTs `docker save` output
IMAGE_REMOVE = "image.remove"  # {"ref", "force": bool} -> {}
IMAGE_COMMIT = "image.commit"  # {"instance_id", "repository", "tag"} -> {"image": ImageInfo dict}
# dmd -> agent: access to instances (SSH keys and port maps).
PORTS_APPLY = "ports.apply"  # {"maps": [PortMap dict]}: the node's *full* set of port maps
#   -> {"mode": "kernel"|"proxy", "active": [map ids forwarding now],
#       "waiting": [map ids whose instance is not running], "failed": [{"id", "code", "message"}],
#       "listening": {"tcp": [host ports in the pools a host program listens on], "udp": [...]}}
#   PortMap dict: {"id", "instance_id", "protocol": "tcp"|"udp", "host_port", "instance_port"}.
#   Declarative and idempotent: a map not in the list stops taking new connections at once. The
#   agent keeps the set and re-applies it whenever a container starts or stops (its address may
#   change). A failed code "port_busy" means a host program listens on that host port.
INSTANCE_ACCESS = "instance.access"  # {"instance_id", "ssh": {"enabled": bool, "keys": [str]}}
#   -> {"ssh": SshStatus dict}. `keys` are whole authorized_keys lines (DM's keys for this
#   instance; an empty list revokes them all). The agent writes them where the instance's sshd
#   reads them, generates missing host keys, starts sshd when it is not running, and keeps
#   supervising it (a container start, or sshd dying, brings it back) with the last keys given.
#   SshStatus dict: {"state": "ready"|"no_server"|"not_running"|"disabled"|"error", "user": str|None,
#   "message": str|None, "host_keys": [{"type": str, "fingerprint": str}]}
# The hello's facts carry "ports": {"pools": {"tcp": [[first, last], ...], "udp": [...]},
#   "mode": "kernel"|"proxy"}; its state carries "listening": {"tcp": [ports], "udp": [ports]}
#   (host ports inside the pools that host programs listen on).
# The hello's "state": {"containers": [ContainerInfo dict, managed or not], "images": [ImageInfo dict]}.
# Agent events: {"kind": "container", "instance_id", "container_id", "action", "exit_code", "state"},
# {"kind": "images.changed"}, {"kind": "image.progress", "progress_id", ...Docker's progress fields}.
LOGS_MAX_BYTES = 512 * 1024
# both ways
REPLY = "reply"

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


@dataclass(frozen=True, slots=True)
class Hello:
    """The agent's first message."""

    node_id: int
    agent_version: str
    protocol_min: int
    protocol_max: int
    facts: dict[str, Any]
    state: dict[str, Any]

    def to_data(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "agent_version": self.agent_version,
            "protocol": {"min": self.protocol_min, "max": self.protocol_max},
            "facts": self.facts,
            "state": self.state,
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Hello:
        proto = data.get("protocol")
        node_id = data.get("node_id")
        version = data.get("agent_version")
        if not isinstance(node_id, int) or isinstance(node_id, bool):
            raise ProtocolError("hello.node_id must be an integer")
        if not isinstance(version, str) or len(version) > 64:
            raise ProtocolError("hello.agent_version must be a short string")
        if not (isinstance(proto, dict) and _is_int(proto.get("min")) and _is_int(proto.get("max"))):
            raise ProtocolError("hello.protocol must be {min, max}")
        facts, state = data.get("facts", {}), data.get("state", {})
        if not isinstance(facts, dict) or not isinstance(state, dict):
            raise ProtocolError("hello.facts and hello.state must be objects")
        return cls(node_id, version, proto["min"], proto["max"], facts, state)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class IdSource:
    """Request ids unique on one link: a prefix per side and a counter."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter)}"
