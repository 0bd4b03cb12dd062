"""What both forwarders (kernel rules, asyncio proxy) are given and what they answer."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Failures", "Forward", "PortKey"]

PortKey = tuple[str, int]  # (protocol, host port)
Failures = dict[PortKey, tuple[str, str]]  # -> (code, message) for forwards that could not be set up


@dataclass(frozen=True, slots=True)
class Forward:
    """host_port on this host -> target_ip:target_port (a running container), one protocol."""

    protocol: str  # "tcp" | "udp"
    host_port: int
    target_ip: str
    target_port: int

    @property
    def key(self) -> PortKey:
        return (self.protocol, self.host_port)
