"""Server-rendered pages (aiohttp-jinja2): plain HTML forms that work without JavaScript.

Every form posts, then redirects (303) to a page that shows the outcome; a rejected form
is shown again with the message and a 4xx status. Templates and static files live in
web/ (shipped as `dmd.web`); the English and Japanese texts in dmd.i18n.
"""

from __future__ import annotations

from aiohttp import web

from dmd.pages import (
    account,
    admin,
    auth_pages,
    files,
    gpus,
    images,
    instances,
    nodes,
    port_maps,
    shares,
    ssh_keys,
    terminal,
)
from dmd.pages.render import carry_flashes, setup_jinja, web_dir


def setup_pages(app: web.Application) -> None:
    setup_jinja(app)
    app.on_response_prepare.append(carry_flashes)  # anonymous flashes travel in a signed cookie
    app.router.add_static("/static/", web_dir() / "static", name="static", append_version=True)
    for mod in (auth_pages, account, admin, shares, gpus):
        app.router.add_routes(mod.routes)
    nodes.setup(app)
    instances.setup(app)
    images.setup(app)
    ssh_keys.setup(app)
    port_maps.setup(app)
    terminal.setup(app)
    files.setup(app)
