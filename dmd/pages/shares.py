"""Nodes shared with you: accept or decline a pending share, leave an accepted one.

A share is an offer: until its recipient accepts it here (or through the API), the node is
neither shown to them nor used for their instances, so no node owner can send anyone's
instances (and their environment) to an agent they run.
"""

from __future__ import annotations

from aiohttp import web

from dmd.auth.flows import actor_of
from dmd.errors import NotFound
from dmd.pages.render import current_identity, dm_of, flash, login_required, path_id, redirect, render
from dmd.usecases import nodes as uc

routes = web.RouteTableDef()


def _node_id(request: web.Request) -> int:
    node_id = path_id(request, "node_id")
    if node_id is None:
        raise NotFound("no such share")
    return node_id


@routes.get("/shares")
@login_required
async def shares_page(request: web.Request) -> web.StreamResponse:
    shares = await uc.shared_with(dm_of(request), current_identity(request).user)
    return await render(request, "shares.html", {
        "nav_active": "nodes", "pending": [s for s in shares if s["state"] == "pending"],
        "accepted": [s for s in shares if s["state"] == "accepted"],
    })


@routes.post("/shares/{node_id}/accept")
@login_required
async def share_accept(request: web.Request) -> web.StreamResponse:
    ident = current_identity(request)
    share = await uc.accept_share(dm_of(request), actor_of(request, ident), ident.user, _node_id(request))
    await flash(request, "ok", "flash.share_accepted", name=share["node_name"])
    return redirect("/shares")


@routes.post("/shares/{node_id}/leave")
@login_required
async def share_leave(request: web.Request) -> web.StreamResponse:
    ident = current_identity(request)
    node_id = _node_id(request)
    names = {s["node_id"]: s["node_name"] for s in await uc.shared_with(dm_of(request), ident.user)}
    await uc.leave_share(dm_of(request), actor_of(request, ident), ident.user, node_id)
    await flash(request, "ok", "flash.share_left", name=names.get(node_id, str(node_id)))
    return redirect("/shares")
