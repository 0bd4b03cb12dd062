"""Port maps: every map of your instances (administrators: all, with their owners) with the
address to connect to and whether it forwards; adding one to any of your instances, and
deleting one (from here or from the instance's page).

Changes go through dmd.usecases.port_maps, the same calls the JSON API makes.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dmd.auth.flows import actor_of
from dmd.errors import NotFound
from dmd.models import PortMap
from dmd.pages import access as acc
from dmd.pages import forms
from dmd.pages.render import (
    current_identity,
    dm_of,
    flash,
    lang_of,
    login_required,
    path_id,
    redirect,
    render,
    safe_next,
)
from dmd.schemas import PageQuery, page_of, parse_id
from dmd.usecases import port_maps as uc

routes = web.RouteTableDef()

PER_PAGE = 100
MAX_CHOICES = 500  # instances offered in the add form


async def _page(request: web.Request, *, status: int = 200, **extra: Any) -> web.Response:
    user = current_identity(request).user
    try:
        q = PageQuery(limit=PER_PAGE, cursor=request.query.get("cursor") or None)
    except ValueError:
        q = PageQuery(limit=PER_PAGE)
    found = await uc.overview(dm_of(request), user, limit=q.limit + 1, after_id=q.cursor_id,
                              max_choices=MAX_CHOICES)
    page = page_of(found.maps, q)
    maps: list[PortMap] = page["items"]
    choices, nodes, owners = found.choices, found.nodes, found.owners
    ctx: dict[str, Any] = {
        "nav_active": "port_maps",
        "rows": acc.map_rows(request, maps, nodes),
        "next_cursor": page["next_cursor"], "first_page": q.cursor is None,
        "choices": choices, "nodes": nodes, "owners": owners,
        "pools": {nid: acc.pools_text(n) for nid, n in sorted(nodes.items()) if any(i.node_id == nid for i in choices)},
        "error": None,
        "form": {"instance_id": request.query.get("instance", "")[:20], "instance_port": "", "protocol": "tcp",
                 "host_port": ""},
        "here": "/port-maps",
    }
    ctx.update(extra)
    return await render(request, "port_maps.html", ctx, status=status)


@routes.get("/port-maps")
@login_required
async def maps_list(request: web.Request) -> web.StreamResponse:
    return await _page(request)


@routes.post("/port-maps")
@login_required
async def map_add(request: web.Request) -> web.StreamResponse:
    data = await request.post()
    raw_id = data.get("instance_id", "")
    try:
        instance_id = parse_id(raw_id)
        if instance_id is None:
            raise forms.FormError(422, "err.portmap.instance", "instance_id")
        try:
            m = await acc.add_map(request, instance_id, data)
        except NotFound:
            # Not one of yours (or deleted meanwhile): said in the form, never which exists.
            raise forms.FormError(404, "err.portmap.no_instance", "instance_id") from None
    except forms.FormError as fe:
        return await _page(request, status=fe.status, error=fe.view(lang_of(request)), form=acc.kept_map(data))
    await acc.flash_added(request, m)
    return redirect(f"/port-maps#map-{m.id}")


@routes.post("/port-maps/{id}/delete")
@login_required
async def map_delete(request: web.Request) -> web.StreamResponse:
    ident = current_identity(request)
    map_id = path_id(request)
    if map_id is None:
        raise NotFound("no such port map")
    data = await request.post()
    nxt = data.get("next")
    m = await uc.remove(dm_of(request), actor_of(request, ident), ident.user, map_id)
    await flash(request, "ok", "flash.port_map_removed", host_port=m.host_port, instance_port=m.instance_port,
                protocol=m.protocol, name=m.instance_name or "")
    return redirect(safe_next(nxt if isinstance(nxt, str) else None, "/port-maps"))


def setup(app: web.Application) -> None:
    app.router.add_routes(routes)
