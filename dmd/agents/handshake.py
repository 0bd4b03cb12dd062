"""The start of an agent's link: its credential, its hello, its state (in parts from protocol 2).

Every refusal closes only that link, with a close code and a reason the agent logs.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from agent import protocol as p
from agent.link.snapshot import merge_parts
from dmd.auth.throttle import LoginThrottle
from dmd.models import Node

log = logging.getLogger("dmd.agents")

HELLO_TIMEOUT_S = 10.0
PART_TIMEOUT_S = 30.0  # between two parts of the state


@dataclass(frozen=True, slots=True)
class Handshake:
    """A node that said hello: what it is, what it holds, the protocol both speak."""

    node: Node
    hello: p.Hello
    facts: dict[str, Any]  # checked as NodeFacts; stored in that canonical form
    state: p.Snapshot
    version: int


class Refused(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def held_back(throttle: LoginThrottle, remote: str) -> Refused | None:
    """Bad credentials count against the address like failed logins (dmd.auth.throttle); while
    it is held back, its links are refused before any credential is looked up."""
    wait = throttle.retry_after([f"ip:{remote}"])
    if wait <= 0:
        return None
    return Refused(p.CLOSE_AUTH, f"too many failed authentications; try again in {math.ceil(wait)} s")


def canonical_facts(data: Any, where: str = "facts") -> dict[str, Any]:
    """The facts as DM stores them: checked against NodeFacts, every known key present."""
    try:
        return p.to_data(p.parse(p.NodeFacts, data))
    except p.DecodeError as e:
        raise p.ProtocolError(f"{where}: {e}") from None


async def _text(ws: web.WebSocketResponse, timeout: float, what: str) -> p.Envelope:
    try:
        msg = await ws.receive(timeout=timeout)
    except TimeoutError:
        raise Refused(p.CLOSE_PROTOCOL, f"no {what} within {timeout:g} s") from None
    if msg.type != WSMsgType.TEXT:
        raise Refused(p.CLOSE_PROTOCOL, f"expected a {what} text message")
    try:
        return p.decode(msg.data)
    except p.ProtocolError as e:
        raise Refused(e.close_code, str(e)) from None


async def receive_hello(ws: web.WebSocketResponse, node: Node) -> Handshake:
    """Read the hello (and the parts of the state that follow it); raises :class:`Refused`."""
    env = await _text(ws, HELLO_TIMEOUT_S, "hello")
    try:
        if env.type != p.HELLO:
            raise p.ProtocolError(f"the first message must be hello, not {env.type}")
        hello = p.parse(p.Hello, env.data)
        facts = canonical_facts(hello.facts, "hello.facts")
    except p.DecodeError as e:
        raise Refused(p.CLOSE_PROTOCOL, f"hello: {e}") from None
    except p.ProtocolError as e:
        raise Refused(e.close_code, str(e)) from None
    if hello.node_id != node.id:
        raise Refused(p.CLOSE_FORBIDDEN, f"this credential belongs to node {node.id}, not {hello.node_id}")
    version = p.negotiate(hello.protocol.min, hello.protocol.max)
    if version is None:
        raise Refused(p.CLOSE_PROTOCOL, f"agent speaks protocol {hello.protocol.min}-{hello.protocol.max}, dmd "
                                        f"speaks {p.MIN_PROTOCOL_VERSION}-{p.PROTOCOL_VERSION}")
    state = hello.state
    if hello.snapshot_parts:
        parts: list[p.SnapshotPart] = []
        for i in range(hello.snapshot_parts):
            env = await _text(ws, PART_TIMEOUT_S, f"part {i} of the state")
            try:
                if env.type != p.SNAPSHOT:
                    raise p.ProtocolError(f"expected part {i} of {hello.snapshot_parts} of the state, not {env.type}")
                part = p.parse(p.SnapshotPart, env.data)
            except p.DecodeError as e:
                raise Refused(p.CLOSE_PROTOCOL, f"snapshot part {i}: {e}") from None
            except p.ProtocolError as e:
                raise Refused(e.close_code, str(e)) from None
            if part.part != i:
                raise Refused(p.CLOSE_PROTOCOL, f"state part {part.part} came where part {i} was due")
            parts.append(part)
        state = merge_parts(parts)
    return Handshake(node, hello, facts, state, version)
