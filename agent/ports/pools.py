"""Host port pools (which host ports DM may hand out) and the ports host programs listen on.

The agent config holds one pool per protocol as text: ``{"tcp": "20000-29999", "udp": "20000-20999,
30000-30099"}`` (a missing protocol or an empty string: no pool for it). dmd gets them as
``{"tcp": [[20000, 29999]], "udp": [[20000, 20999], [30000, 30099]]}`` in the hello's facts.

Public API::

    pools = PortPools.parse({"tcp": "20000-29999", "udp": "20000-29999"})   # PoolError: one line
    pools.contains("tcp", 20080); pools.to_dict()
    busy = await asyncio.to_thread(listening_ports, pools)   # {"tcp": [20001], "udp": []}
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["PROTOCOLS", "PoolError", "PortPools", "listening_ports"]

PROTOCOLS = ("tcp", "udp")
Range = tuple[int, int]


class PoolError(ValueError):
    """A port pool that cannot be parsed; the message is one line."""


def _port(text: str, where: str) -> int:
    text = text.strip()
    if not text.isdigit():
        raise PoolError(f"{where}: {text!r} is not a port number")
    value = int(text)
    if not 1 <= value <= 65535:
        raise PoolError(f"{where}: port {value} is outside 1-65535")
    return value


def _merge(ranges: Iterable[Range]) -> tuple[Range, ...]:
    """Sorted, with overlapping or adjacent ranges joined (so membership checks stay simple)."""
    out: list[Range] = []
    for first, last in sorted(ranges):
        if out and first <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], last))
        else:
            out.append((first, last))
    return tuple(out)


def parse_ranges(text: object, where: str) -> tuple[Range, ...]:
    """``"20000-20999,30000"`` -> ((20000, 20999), (30000, 30000)); PoolError otherwise."""
    if not isinstance(text, str):
        raise PoolError(f"{where} must be a text like \"20000-29999\" or \"20000-20999,30000-30099\"")
    ranges: list[Range] = []
    for part in text.split(","):
        if not part.strip():
            if text.strip():
                raise PoolError(f"{where}: empty range in {text!r}")
            continue
        low, sep, high = part.partition("-")
        first = _port(low, where)
        last = _port(high, where) if sep else first
        if first > last:
            raise PoolError(f"{where}: range {part.strip()!r} ends before it starts")
        ranges.append((first, last))
    return _merge(ranges)


@dataclass(frozen=True, slots=True)
class PortPools:
    """Ranges of host ports per protocol, sorted and merged."""

    ranges: Mapping[str, tuple[Range, ...]] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: object) -> PortPools:
        if not isinstance(value, Mapping):
            raise PoolError('port pools must be an object like {"tcp": "20000-29999", "udp": "20000-29999"}')
        unknown = sorted(str(k) for k in value if k not in PROTOCOLS)
        if unknown:
            raise PoolError(f"port pools: unknown protocol {unknown[0]!r} (tcp or udp)")
        return cls({proto: parse_ranges(value[proto], f"port pool {proto}") if proto in value else ()
                    for proto in PROTOCOLS})

    def contains(self, proto: str, port: int) -> bool:
        return any(first <= port <= last for first, last in self.ranges.get(proto, ()))

    def to_dict(self) -> dict[str, list[list[int]]]:
        return {proto: [[first, last] for first, last in self.ranges.get(proto, ())] for proto in PROTOCOLS}


# /proc/net/tcp* state 0A is LISTEN. A UDP socket "listens" when it is bound and not connected
# (a connected one, a resolver's query say, takes replies from its peer only).
_TCP_LISTEN = "0A"
_PROC_FILES = (("tcp", "tcp"), ("tcp", "tcp6"), ("udp", "udp"), ("udp", "udp6"))


def _local_ports(path: str, proto: str) -> set[int]:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            lines = fh.read().splitlines()[1:]  # the first line is the header
    except FileNotFoundError:
        return set()  # no IPv6 on this host, say
    ports: set[int] = set()
    for line in lines:
        fields = line.split()
        if len(fields) < 4:
            continue
        if proto == "tcp" and fields[3] != _TCP_LISTEN:
            continue
        if proto == "udp" and fields[2].rpartition(":")[2].strip("0"):
            continue  # connected to a peer port
        _, _, port_hex = fields[1].rpartition(":")
        try:
            port = int(port_hex, 16)
        except ValueError:
            continue
        if port:
            ports.add(port)
    return ports


def listening_ports(pools: PortPools, root: str = "/") -> dict[str, list[int]]:
    """Host ports inside ``pools`` that host programs listen on (TCP) or hold (UDP), from
    ``<root>/proc/net``. Blocking file reads: call it with asyncio.to_thread from coroutines."""
    found: dict[str, set[int]] = {proto: set() for proto in PROTOCOLS}
    for proto, name in _PROC_FILES:
        found[proto] |= _local_ports(os.path.join(root, "proc", "net", name), proto)
    return {proto: sorted(p for p in ports if pools.contains(proto, p)) for proto, ports in found.items()}
