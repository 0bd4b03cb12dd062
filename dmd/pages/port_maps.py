"""Port maps: every map of your instances (administrators: all, with their owners) with the
address to connect to and whether it forwards; adding one to any of your instances, and
deleting one (from here or from the instance's page).

Changes go through dmd.services.port_ops, the same calls the JSON API makes.
"""

from __future__ import annotations

import contextlib
from typing import Any

from aiohttp import web

from dmd.api.schemas import PageQuery, page_of
from dmd.auth.flows import actor_of
from dmd.errors import NotFound
from dmd.models import Instance, Node
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
from dmd.services import instances as inst_svc
from dmd.services import nodes as node_svc
from dmd.services import port_maps as svc
from dmd.services import port_ops
from dmd.services import users as user_svc

routes = web.RouteTableDef()

PER_PAGE = 100
MAX_CHOICES = 500  # instances offered in the add form


async def _page(request: web.Request, *, status: int = 200, **extra: Any) -> web.Response:
    user = current_identity(request).user
    try:
        q = PageQuery(limit=PER_PAGE, cursor=request.query.get("cursor") or None)
    except ValueError:
        q = PageQuery(limit=PER_PAGE)
    async with dm_of(request).db.read() as conn:
        page = page_of(await svc.list_visible(conn, user, limit=q.limit + 1, after_id=q.cursor_id), q)
        maps: list[svc.PortMap] = page["items"]
        choices: list[Instance] = [
            i for i in await inst_svc.list_visible(conn, user, limit=MAX_CHOICES, after_id=None)
            if i.desired != "deleted" and not i.host_network]
        nodes: dict[int, Node] = {}
        for nid in {m.node_id for m in maps} | {i.node_id for i in choices}:
            with contextlib.suppress(NotFound):
                nodes[nid] = await node_svc.get(conn, nid)
        owners: dict[int, str] = {}
        if user.is_admin:
            for uid in {m.owner_id for m in maps if m.owner_id is not None} | {i.owner_id for i in choices}:
                u = await user_svc.find(conn, uid)
                if u is not None:
                    owners[uid] = u.username
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
        if not (isinstance(raw_id, str) and raw_id.isdigit() and len(raw_id) <= 18):
            raise forms.FormError(422, "err.portmap.instance", "instance_id")
        try:
            m = await acc.add_map(request, int(raw_id), data)
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
    m = await port_ops.remove(dm_of(request).db, dm_of(request).ports, actor_of(request, ident), ident.user,
                              map_id)
    await flash(request, "ok", "flash.port_map_removed", host_port=m.host_port, instance_port=m.instance_port,
                protocol=m.protocol, name=m.instance_name or "")
    return redirect(safe_next(nxt if isinstance(nxt, str) else None, "/port-maps"))


def setup(app: web.Application) -> None:
    app.router.add_routes(routes)
