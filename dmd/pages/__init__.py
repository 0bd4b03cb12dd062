"""Server-rendered pages (aiohttp-jinja2). Placeholder until the pages land."""

from __future__ import annotations

from aiohttp import web


def setup_pages(app: web.Application) -> None:
    return None
