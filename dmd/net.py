"""Where a request came from: the client's address, scheme and host, honouring only the reverse
proxies the configuration trusts (`trust_proxy`: addresses or networks, as Home Assistant's
`trusted_proxies`).

They are worked out once per request, by the outermost middleware (`remember`), and kept on the
request; everything else reads them through `client_ip`, `is_https` and `server_url`. Forwarded
headers (X-Forwarded-For/-Proto/-Host, X-Real-IP) count only when the peer that sent them is a
trusted proxy; X-Forwarded-For is read right to left through trusted hops, so the first address
no trusted proxy vouches for is the client (what a client writes into the header itself sits
to the left of what its proxy appended, and is never reached).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web

from dmd.core import DM

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_ADDRESS = 64


@dataclass(frozen=True, slots=True)
class Origin:
    ip: str  # the client's address (the peer's when no trusted proxy says otherwise)
    https: bool  # the client's request to the first trusted hop was over HTTPS
    host: str  # the Host the client used


ORIGIN_KEY: web.RequestKey[Origin] = web.RequestKey("dm_origin", Origin)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _trusted(addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None, proxies: Sequence[Network]) -> bool:
    return addr is not None and any(addr in net for net in proxies)


def _values(request: web.Request, name: str) -> list[str]:
    return [v.strip() for line in request.headers.getall(name, []) for v in line.split(",") if v.strip()]


def resolve(request: web.Request, proxies: Sequence[Network]) -> Origin:
    """The request's origin; forwarded headers only from a trusted peer."""
    peer = request.remote or "unknown"
    host = request.host
    if not proxies or not _trusted(_address(peer), proxies):
        return Origin(peer[:MAX_ADDRESS], request.secure, host)
    hops = _values(request, "X-Forwarded-For")
    client, index = peer, None
    if hops:
        for i in range(len(hops) - 1, -1, -1):
            addr = _address(hops[i])
            if addr is None:
                break  # garbage from a trusted proxy: the hop that passed it on is the client
            client, index = str(addr), i
            if not _trusted(addr, proxies):
                break
    else:
        real = _address(request.headers.get("X-Real-IP", ""))
        if real is not None:
            client = str(real)
    protos = [p.lower() for p in _values(request, "X-Forwarded-Proto")]
    if protos:
        # One entry per hop when the proxies append; else the nearest proxy's word.
        proto = protos[index] if index is not None and len(protos) == len(hops) else protos[-1]
        https = request.secure or proto == "https"
    else:
        https = request.secure
    hosts = _values(request, "X-Forwarded-Host")
    return Origin(client[:MAX_ADDRESS], https, hosts[-1][:255] if hosts else host)


def remember(request: web.Request) -> Origin:
    """Work the origin out once and keep it on the request (the outermost middleware does this)."""
    origin = request.get(ORIGIN_KEY)
    if origin is None:
        origin = request[ORIGIN_KEY] = resolve(request, request.app[DM].config.proxy_networks)
    return origin


def client_ip(request: web.Request) -> str:
    return remember(request).ip


def is_https(request: web.Request) -> bool:
    return remember(request).https


def server_url(request: web.Request) -> str:
    """The address agents should dial: the configured public URL, else what the browser used."""
    cfg = request.app[DM].config
    if cfg.public_url:
        return cfg.public_url
    origin = remember(request)
    return f"{'https' if origin.https else 'http'}://{origin.host}"


_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def _origin_text(scheme: str, host: str) -> str:
    scheme, host = scheme.lower(), host.lower().rstrip(".")
    return f"{scheme}://{host.removesuffix(_DEFAULT_PORTS.get(scheme, '@'))}"


def own_origins(request: web.Request) -> set[str]:
    """The origins this site's pages have: what the browser used to reach dmd (its scheme as
    the trusted proxies tell it) and the configured public URL's."""
    origin = remember(request)
    own = {_origin_text("https" if origin.https else "http", origin.host)}
    public = request.app[DM].config.public_url
    if public:
        scheme, _, rest = public.partition("://")
        own.add(_origin_text(scheme, rest.split("/", 1)[0]))
    return own


def same_origin(request: web.Request) -> bool:
    """The request's Origin header names this site (a WebSocket from another site's page carries
    that page's origin; browsers always send Origin on a WebSocket, so a missing one is refused)."""
    sent = request.headers.get("Origin", "")
    scheme, sep, host = sent.partition("://")
    if not sep or not host or "/" in host or len(sent) > 300:
        return False
    return _origin_text(scheme, host) in own_origins(request)
