"""Messages from agents to dmd: a registry of notice type -> (message class, handler), like the
agent's registry of requests. A message that does not decode as its class breaks the protocol
(the link closes with a code); a type nobody registered is ignored as a notice (a newer agent)
and answered ``unknown_type`` as a request."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent import protocol as p

if TYPE_CHECKING:
    from dmd.agents.hub import AgentConn

log = logging.getLogger("dmd.agents")

NoticeHandler = Callable[["AgentConn", Any], None]


@dataclass(frozen=True, slots=True)
class _Entry:
    cls: type[p.Notice]
    handler: NoticeHandler | None
    refusal: str = ""  # a message that only the handshake may carry: why it is refused here


class Incoming:
    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def register(self, cls: type[p.Notice], handler: NoticeHandler) -> None:
        self._entries[cls.TYPE] = _Entry(cls, handler)

    def refuse(self, cls: type[p.Notice], why: str) -> None:
        """A message of the handshake (see dmd.agents.handshake): on an established link it breaks the protocol."""
        self._entries[cls.TYPE] = _Entry(cls, None, why)

    def types(self) -> set[str]:
        return set(self._entries)

    def dispatch(self, conn: AgentConn, env: p.Envelope) -> None:
        """Handle one message of an established link; raises ProtocolError to close it."""
        if env.type == p.REPLY:
            conn.resolve(env)
            return
        claimed = env.data.get("node_id")
        if claimed is not None and claimed != conn.node_id:
            raise p.ProtocolError(f"message about node {claimed} on the link of node {conn.node_id}",
                                  p.CLOSE_FORBIDDEN)
        entry = self._entries.get(env.type)
        if entry is None:
            if env.id is not None:
                conn.send(p.reply_error(env.id, p.UNKNOWN_TYPE, f"dmd does not handle {env.type!r} requests"))
            else:
                log.debug("node %s: ignoring unknown notice %r", conn.node_id, env.type)
            return
        if entry.handler is None:
            raise p.ProtocolError(entry.refusal)
        try:
            msg = p.parse(entry.cls, env.data)
        except p.DecodeError as e:
            if entry.cls is p.Event and p.parse_event(env.data) is None:
                log.debug("node %s: ignoring an event of unknown kind %r", conn.node_id, env.data.get("kind"))
                return
            raise p.ProtocolError(f"{env.type}: {e}") from None
        entry.handler(conn, msg)
