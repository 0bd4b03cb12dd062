"""What the SSH gateway (dmd.ssh) shares with the rest of dmd: where it listens, its host key,
and the open gateway connections of each user, so that the use cases which revoke access
(a key deleted, a user disabled or deleted) end them at once.

Kept in memory, like the hub's links: one dmd process holds its own gateway connections.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger("dmd.ssh")


class GatewayConnection(Protocol):
    """One authenticated gateway connection, as the registry needs it."""

    def end(self, reason: str) -> None:
        """Disconnect the client, telling it why (returns at once; the close runs on)."""


@dataclass(frozen=True, slots=True)
class GatewayAddress:
    """How clients reach the gateway and which host key it shows them."""

    host: str  # as clients name it (the host of dmd's public URL)
    port: int  # the port it listens on (the bound one when configured as 0)
    host_key: str  # the public host key, OpenSSH format ("ssh-ed25519 AAAA...")
    fingerprint: str  # SHA256:... as `ssh-keygen -l` shows it

    def jump(self, username: str) -> str:
        """The ProxyJump / -J argument for `username` (an IPv6 address in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{username}@{host}:{self.port}"

    @property
    def known_host(self) -> str:
        """The gateway's known_hosts line ([host]:port form unless port 22)."""
        name = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        return f"{name} {self.host_key}"


@dataclass(eq=False)
class GatewayLinks:
    address: GatewayAddress | None = None  # None while the gateway is off or not started
    _by_user: dict[int, set[GatewayConnection]] = field(default_factory=dict)

    def add(self, user_id: int, conn: GatewayConnection) -> None:
        self._by_user.setdefault(user_id, set()).add(conn)

    def discard(self, user_id: int, conn: GatewayConnection) -> None:
        held = self._by_user.get(user_id)
        if held is not None:
            held.discard(conn)
            if not held:
                del self._by_user[user_id]

    def count(self, user_id: int) -> int:
        return len(self._by_user.get(user_id, ()))

    def end_for_user(self, user_id: int, reason: str) -> int:
        """Disconnect every gateway connection of the user; how many there were."""
        held = self._by_user.pop(user_id, set())
        for conn in held:
            conn.end(reason)
        if held:
            log.info("ended %d SSH gateway connection(s) of user %d: %s", len(held), user_id, reason)
        return len(held)

    def end_all(self, reason: str) -> None:
        for user_id in list(self._by_user):
            self.end_for_user(user_id, reason)
