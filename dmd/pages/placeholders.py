"""Pages whose features arrive in later work: each says plainly what will appear there.

They show no data and no buttons. When a feature lands, its own module registers the real
page and its entry is removed from PLACEHOLDERS (a path must be registered only once).
"""

from __future__ import annotations

from aiohttp import web

from dmd.pages.render import PageHandler, login_required, render

# path -> the navigation entry it belongs to (also the catalogue prefix: empty.<key>.*)
PLACEHOLDERS: dict[str, str] = {}


def _handler(key: str) -> PageHandler:
    @login_required
    async def page(request: web.Request) -> web.StreamResponse:
        return await render(request, "empty.html", {"nav_active": key, "key": key})

    return page


def register(app: web.Application) -> None:
    for path, key in PLACEHOLDERS.items():
        app.router.add_get(path, _handler(key), name=f"page_{key}")
