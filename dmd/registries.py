"""Which registries a pull may reach: none on loopback, private, link-local or other
non-global addresses unless the `registry_allow` setting names them.

A pull makes the node (and, through its agent, anyone who may pull) talk to whatever the
reference names: without this check a user could aim nodes at services on dmd's or the
nodes' own networks. The registry's host is resolved here (without blocking the loop) and
every address it resolves to must be global, or the host must be allowed. The node resolves
the name again itself, so split-horizon DNS can still differ; an operator who needs a private
registry lists it in `registry_allow`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str], Awaitable[list[str]]]

DOCKER_HUB = "docker.io"  # where a reference without a registry host goes


@dataclass(frozen=True, slots=True)
class Allowed:
    """The parsed `registry_allow` setting: networks, and host names (with an optional port)."""

    networks: tuple[IpNetwork, ...] = ()
    hosts: tuple[tuple[str, int | None], ...] = ()

    def allows(self, host: str, port: int | None, addresses: list[IpAddress]) -> bool:
        for name, want_port in self.hosts:
            if name == host.lower() and (want_port is None or want_port == port):
                return True
        return bool(addresses) and all(any(a in n for n in self.networks) for a in addresses)


def _host_port(text: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `[v6]` or `[v6]:port`, split (ValueError when malformed)."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(text)
        return host, int(rest[1:]) if rest else None
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, None


def parse_allow(setting: str) -> Allowed:
    """`registry_allow`: comma- or space-separated hosts (`registry.lan`, `127.0.0.1:5000`,
    `[::1]:5000`) and networks (`10.0.0.0/8`, `fd00::/8`). Raises ValueError naming the entry."""
    networks: list[IpNetwork] = []
    hosts: list[tuple[str, int | None]] = []
    for entry in setting.replace(",", " ").split():
        try:
            if "/" in entry:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            with_port = _host_port(entry) if not _is_ip(entry) else (entry, None)
            host, port = with_port
            if not host or (port is not None and not 0 < port < 65536):
                raise ValueError(entry)
            if _is_ip(host) and port is None:
                networks.append(ipaddress.ip_network(host))
            else:
                hosts.append((host.lower(), port))
        except ValueError:
            raise ValueError(f"{entry!r} is neither HOST, HOST:PORT nor an address/prefix network") from None
    return Allowed(tuple(networks), tuple(hosts))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def registry_of(ref: str) -> tuple[str, int | None] | None:
    """The registry host (and port) a reference names, or None for Docker Hub (no host)."""
    first, slash, _ = ref.partition("/")
    if not slash or not ("." in first or ":" in first or first == "localhost"):
        return None
    if first.lower() in ("docker.io", "index.docker.io"):
        return None  # Docker Hub, spelled out
    host, port = _host_port(first)
    return host.lower(), port


async def system_resolve(host: str) -> list[str]:
    """The host's addresses, through the loop's resolver (a thread: never blocks the loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _global(address: IpAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


async def refusal(ref: str, allowed: Allowed, resolve: Resolver | None = None) -> str | None:
    """Why a pull of `ref` must not happen (its registry is not on a global address and not
    allowed), or None when it may. `resolve`: system_resolve unless given."""
    resolve = resolve or system_resolve
    named = registry_of(ref)
    if named is None:
        return None
    host, port = named
    if _is_ip(host):
        addresses: list[IpAddress] = [ipaddress.ip_address(host)]
    else:
        try:
            addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in await resolve(host)]
        except (OSError, ValueError):
            addresses = []
    where = f"{host}:{port}" if port is not None else host
    if not addresses:
        # What dmd cannot resolve it cannot check, and the node may resolve it differently.
        if allowed.allows(host, port, []):
            return None
        return (f"dmd cannot resolve the registry host {where}, so it cannot check where a pull would go; "
                "check the name, or an administrator can allow it with the registry_allow setting")
    if allowed.allows(host, port, addresses):
        return None
    private = sorted({str(a) for a in addresses if not _global(a)})
    if not private:
        return None
    return (f"the registry {where} is on a loopback or private address ({', '.join(private)}); "
            "an administrator can allow it with the registry_allow setting")
