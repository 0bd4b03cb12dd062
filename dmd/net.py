"""What a request says about where it came from, honouring a trusted reverse proxy."""

from __future__ import annotations

from aiohttp import web

from dmd.core import DM


def client_ip(request: web.Request) -> str:
    if request.app[DM].config.trust_proxy:
        fwd = request.headers.get("X-Forwarded-For")
        if fwd:
            # The proxy appends the address it saw: the right-most entry is the one we trust.
            return fwd.split(",")[-1].strip()[:64]
        real = request.headers.get("X-Real-IP")
        if real:
            return real.strip()[:64]
    return (request.remote or "unknown")[:64]


def is_https(request: web.Request) -> bool:
    if request.secure:
        return True
    return request.app[DM].config.trust_proxy and (
        request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower() == "https"
    )


def server_url(request: web.Request) -> str:
    """The address agents should dial: the configured public URL, else what the browser used."""
    cfg = request.app[DM].config
    if cfg.public_url:
        return cfg.public_url
    host = request.headers.get("X-Forwarded-Host") if cfg.trust_proxy else None
    host = host or request.host
    return f"{'https' if is_https(request) else 'http'}://{host}"
