"""Compute nodes: the list, adding a node (its join command, shown once), a node's facts,
GPUs and live metrics, and what its owner or an administrator can do with it (rename,
cordon, new join token, rotate the credential, share, delete).

Who sees what is decided by the same use cases the API calls: a node that is neither
yours nor shared with you is a 404; a node shared with you is read-only (403 on changes).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from aiohttp_session import get_session

from dmd.auth.flows import actor_of
from dmd.errors import ApiError, NotFound
from dmd.models import Node, User
from dmd.net import server_url
from dmd.pages import forms
from dmd.pages.figures import (
    HISTORY_S,
    SERIES,
    SPARK_H,
    SPARK_W,
    addresses,
    ago,
    duration,
    gpu_mem_pct,
    gpu_rows,
    gpu_summary,
    gpu_util,
    mem_pct,
    mib,
    os_name,
    pct,
    spark_points,
    until,
)
from dmd.pages.render import (
    current_identity,
    dm_of,
    flash,
    form_data,
    lang_of,
    login_required,
    path_id,
    redirect,
    render,
    translator,
)
from dmd.schemas import NodeCreateIn, NodeOut, NodePatchIn, PageQuery, ShareIn, page_of
from dmd.usecases import gpus as gpu_uc
from dmd.usecases import nodes as uc
from dmd.usecases import port_maps as port_uc
from dmd.views import node_out

routes = web.RouteTableDef()

NODES_PER_PAGE = 50
# The one-time join command, kept in the session only until the node's page shows it.
JOIN_KEY = "node_join"
# --- views of a node -------------------------------------------------------------------

def _join_note(_: Callable[..., str], n: NodeOut) -> str | None:
    if n.join_expires_at is None:
        return None
    when = n.join_expires_at if n.join_expires_at.tzinfo else n.join_expires_at.replace(tzinfo=dt.UTC)
    if when.timestamp() <= time.time():
        return _("node.join_expired")
    return _("node.join_expires", when=until(_, when))


def _row(request: web.Request, n: NodeOut, owners: dict[int, str],
         gpu_free: tuple[int, int] | None = None) -> dict[str, Any]:
    _ = translator(request)
    facts = n.facts or {}
    seen = ago(_, n.last_seen) if n.last_seen else None
    return {
        "n": n,
        "owner": owners.get(n.owner_id) if n.owner_id is not None else None,
        "seen": seen,
        "cpu_model": facts.get("cpu_model"),
        "cpu_count": facts.get("cpu_count"),
        "mem_total": mib(facts.get("memory_total_mb")) if facts.get("memory_total_mb") else None,
        "disk_free": mib(facts.get("disk_free_mb")),
        "disk_total": mib(facts.get("disk_total_mb")) if facts.get("disk_total_mb") else None,
        "gpus": gpu_summary(n.gpus),
        "gpu_free": gpu_free,  # (free, total), on the list
        "hostname": facts.get("hostname"),
        "join_note": _join_note(_, n) if n.status == "pending" else None,
    }


async def _node(request: web.Request) -> tuple[Node, User]:
    """The node in the path if the user may see it (else 404)."""
    node_id = path_id(request)
    if node_id is None:
        raise NotFound("no such node")
    user = current_identity(request).user
    return await uc.get_visible(dm_of(request), user, node_id), user


async def _manageable(request: web.Request) -> tuple[Node, User]:
    """The node in the path if the user may change it (else 404, or 403 when only shared)."""
    user = current_identity(request).user
    return await uc.get_manageable(dm_of(request), user, _node_id(request)), user


def _node_id(request: web.Request) -> int:
    node_id = path_id(request)
    if node_id is None:
        raise NotFound("no such node")
    return node_id


# --- form errors --------------------------------------------------------------------------

_CODE_KEYS = {
    "name_taken": "err.node_name_taken",
    "quota_exceeded": "err.node_quota",
    "is_owner": "err.share_is_owner",
    "already_shared": "err.already_shared",
    "unknown_user": "err.no_such_user",
    "node_offline": "err.node_offline",
    "agent_timeout": "err.agent_timeout",
    "agent_error": "err.agent_error",
}


def _form_error(e: ApiError | forms.FormError, **params: Any) -> forms.FormError:
    """A refusal as a form message, in the nodes' own words where the shared ones do not fit."""
    fe = forms.from_api_error(e) if isinstance(e, ApiError) else e
    code = e.code if isinstance(e, ApiError) else None
    if code in _CODE_KEYS:
        return forms.FormError(fe.status, _CODE_KEYS[code], fe.field, params)
    if fe.field == "name":
        return forms.FormError(fe.status, "err.node_name", "name")
    if isinstance(e, ApiError) and fe.field == "username" and "no such user" in e.message:
        return forms.FormError(fe.status, "err.no_such_user", "username", params)
    return fe


async def _join_secret(request: web.Request, node: Node, kind: str, token: str) -> None:
    """Keep the join command for the node's page, which shows it once."""
    session = await get_session(request)
    session[JOIN_KEY] = {
        "node_id": node.id, "kind": kind, "token": token,
        "command": uc.join_command(server_url(request), token),
        "expires_at": node.join_expires_at.isoformat() if node.join_expires_at else None,
    }


# --- the list -----------------------------------------------------------------------------

async def _list_page(request: web.Request, *, status: int = 200, **extra: Any) -> web.Response:
    try:
        q = PageQuery(limit=NODES_PER_PAGE, cursor=request.query.get("cursor") or None)
    except ValueError:
        q = PageQuery(limit=NODES_PER_PAGE)
    user = current_identity(request).user
    dm = dm_of(request)
    found = await uc.list_visible(dm, user, limit=q.limit + 1, after_id=q.cursor_id)
    page = page_of(found, q)
    outs = [node_out(dm.hub, n, user) for n in page["items"]]
    owners = await uc.usernames(dm, {n.owner_id for n in outs if n.owner_id is not None})
    free = await gpu_uc.free_counts(dm, page["items"])
    ctx: dict[str, Any] = {
        "nav_active": "nodes",
        "rows": [_row(request, n, owners, free.get(n.id)) for n in outs],
        "next_cursor": page["next_cursor"], "first_page": q.cursor is None,
        "error": None, "form": {"name": ""},
        "n_online": sum(1 for n in outs if n.status == "online"),
        "join_ttl": duration(translator(request), dm.config.join_token_ttl_s),
    }
    ctx.update(extra)
    return await render(request, "nodes.html", ctx, status=status)


@routes.get("/nodes")
@login_required
async def nodes_list(request: web.Request) -> web.StreamResponse:
    return await _list_page(request)


@routes.post("/nodes")
@login_required
async def node_create(request: web.Request) -> web.StreamResponse:
    ident = current_identity(request)
    data = await form_data(request)
    try:
        try:
            body = forms.validate(NodeCreateIn, {"name": data.get("name", "").strip()})
            node, token = await uc.create(dm_of(request), actor_of(request, ident), ident.user, body.name)
        except (ApiError, forms.FormError) as e:
            raise _form_error(e) from None
    except forms.FormError as fe:
        return await _list_page(request, status=fe.status, error=fe.view(lang_of(request)),
                                form=forms.kept(data, "name"), here="/nodes")
    await _join_secret(request, node, "created", token)
    return redirect(f"/nodes/{node.id}")


# --- one node -------------------------------------------------------------------------------

async def _detail(request: web.Request, node: Node, user: User, *, status: int = 200,
                  **extra: Any) -> web.Response:
    _ = translator(request)
    dm = dm_of(request)
    n = node_out(dm.hub, node, user)
    manage = n.access in ("owner", "admin")
    samples = dm.hub.recent_metrics(node.id)
    latest = samples[-1] if samples else None
    now = time.time()
    found = await uc.detail(dm, node, manage, with_email=user.is_admin)
    owner, shares = found.owner, found.shares
    held = await gpu_uc.on_node(dm, user, node)
    gpus = gpu_rows(n, latest)
    for row, gpu in zip(gpus, held.gpus, strict=True):  # both in the order of the node's facts
        row["holder"], row["ledger_key"] = gpu.holder, gpu.key
    join = None
    if status == 200:
        session = await get_session(request)
        if JOIN_KEY in session:
            raw = session.pop(JOIN_KEY)
            if isinstance(raw, dict) and raw.get("node_id") == node.id and manage:
                expires = dt.datetime.fromisoformat(raw["expires_at"]) if raw.get("expires_at") else None
                join = {**raw, "expires_at": expires, "until": until(_, expires)}
    facts = n.facts or {}
    runtime = facts.get("runtime") if isinstance(facts.get("runtime"), dict) else None
    ctx: dict[str, Any] = {
        "nav_active": "nodes",
        "node": n,
        "row": _row(request, n, {node.owner_id: owner} if node.owner_id is not None and owner else {}),
        "owner": owner,
        "manage": manage,
        "facts": facts,
        "os_name": os_name(facts),
        "addresses": addresses(facts),
        "port_pools": {proto: port_uc.describe_pool(ranges) for proto, ranges in port_uc.pools_of(node).items()},
        "port_mode": ((facts.get("ports") or {}).get("mode") if isinstance(facts.get("ports"), dict) else None),
        "runtime": runtime,
        "runtime_error": facts.get("runtime_error"),
        "gpus": gpus,
        "instances": [{"i": i, "gpus": len(keys), "owner": held.owners.get(i.owner_id)}
                      for i, keys in held.instances],
        "more_instances": held.more,
        "is_admin_view": user.is_admin,
        "latest": latest,
        "latest_ago": ago(_, latest.get("received_at"), now) if latest else None,
        "mem_pct": mem_pct(latest) if latest else None,
        "gpu_util": gpu_util(latest) if latest else None,
        "gpu_mem_pct": gpu_mem_pct(latest) if latest else None,
        "sparks": {k: spark_points(samples, k, now) for k in SERIES},
        "spark_w": SPARK_W, "spark_h": SPARK_H,
        "history_min": HISTORY_S // 60,
        "shares": shares,
        "join": join,
        "join_ttl": duration(_, dm.config.join_token_ttl_s),
        "rename_error": None, "rename_form": {"name": n.name},
        "share_error": None, "share_form": {"username": ""},
        "action_error": None,
        "here": f"/nodes/{node.id}",
    }
    ctx.update(extra)
    return await render(request, "node.html", ctx, status=status)


@routes.get("/nodes/{id}")
@login_required
async def node_detail(request: web.Request) -> web.StreamResponse:
    node, user = await _node(request)
    return await _detail(request, node, user)


@routes.post("/nodes/{id}/rename")
@login_required
async def node_rename(request: web.Request) -> web.StreamResponse:
    ident = current_identity(request)
    node, user = await _manageable(request)
    data = await form_data(request)
    try:
        try:
            body = forms.validate(NodePatchIn, {"name": data.get("name", "").strip()})
            after = await uc.rename(dm_of(request), actor_of(request, ident), user, node.id, body.name)
        except (ApiError, forms.FormError) as e:
            if isinstance(e, ApiError) and e.status in (403, 404):
                raise
            raise _form_error(e) from None
    except forms.FormError as fe:
        return await _detail(request, node, user, status=fe.status, rename_error=fe.view(lang_of(request)),
                             rename_form=forms.kept(data, "name"))
    await flash(request, "ok", "flash.node_renamed", name=after.name)
    return redirect(f"/nodes/{after.id}")


async def _cordon(request: web.Request, cordoned: bool) -> web.StreamResponse:
    ident = current_identity(request)
    node = await uc.set_cordon(dm_of(request), actor_of(request, ident), ident.user, _node_id(request), cordoned)
    await flash(request, "ok", "flash.node_cordoned" if cordoned else "flash.node_uncordoned", name=node.name)
    return redirect(f"/nodes/{node.id}")


@routes.post("/nodes/{id}/cordon")
@login_required
async def node_cordon(request: web.Request) -> web.StreamResponse:
    return await _cordon(request, True)


@routes.post("/nodes/{id}/uncordon")
@login_required
async def node_uncordon(request: web.Request) -> web.StreamResponse:
    return await _cordon(request, False)


@routes.post("/nodes/{id}/join-token")
@login_required
async def node_join_token(request: web.Request) -> web.StreamResponse:
    ident = current_identity(request)
    node, token = await uc.new_join_token(dm_of(request), actor_of(request, ident), ident.user, _node_id(request))
    await _join_secret(request, node, "token", token)
    return redirect(f"/nodes/{node.id}")


@routes.post("/nodes/{id}/rotate-credential")
@login_required
async def node_rotate(request: web.Request) -> web.StreamResponse:
    ident = current_identity(request)
    try:
        rotated = await uc.rotate_credential(dm_of(request), actor_of(request, ident), ident.user, _node_id(request))
    except ApiError as e:
        if e.status in (403, 404):
            raise
        node, user = await _manageable(request)
        fe = _form_error(e, name=node.name)
        return await _detail(request, node, user, status=fe.status, action_error=fe.view(lang_of(request)))
    if rotated.delivered:
        await flash(request, "ok", "flash.credential_delivered", name=rotated.node.name)
        return redirect(f"/nodes/{rotated.node.id}")
    assert rotated.join_token is not None
    await _join_secret(request, rotated.node, "rotated", rotated.join_token)
    return redirect(f"/nodes/{rotated.node.id}")


@routes.get("/nodes/{id}/delete")
@login_required
async def node_delete_confirm(request: web.Request) -> web.StreamResponse:
    node, user = await _manageable(request)
    n = node_out(dm_of(request).hub, node, user)
    return await render(request, "node_delete.html", {"nav_active": "nodes", "node": n})


@routes.post("/nodes/{id}/delete")
@login_required
async def node_delete(request: web.Request) -> web.StreamResponse:
    ident = current_identity(request)
    node = await uc.delete(dm_of(request), actor_of(request, ident), ident.user, _node_id(request))
    await flash(request, "ok", "flash.node_deleted", name=node.name)
    return redirect("/nodes")


@routes.post("/nodes/{id}/shares")
@login_required
async def node_share(request: web.Request) -> web.StreamResponse:
    ident = current_identity(request)
    node, user = await _manageable(request)
    data = await form_data(request)
    username = data.get("username", "").strip()
    try:
        try:
            body = forms.validate(ShareIn, {"username": username})
            share = await uc.share(dm_of(request), actor_of(request, ident), user, node.id, username=body.username)
        except (ApiError, forms.FormError) as e:
            if isinstance(e, ApiError) and e.status in (403, 404):
                raise
            raise _form_error(e, name=username) from None
    except forms.FormError as fe:
        return await _detail(request, node, user, status=fe.status, share_error=fe.view(lang_of(request)),
                             share_form=forms.kept(data, "username"))
    await flash(request, "ok", "flash.node_shared", name=share["username"])
    return redirect(f"/nodes/{node.id}#sharing")


@routes.post("/nodes/{id}/public")
@login_required
async def node_public(request: web.Request) -> web.StreamResponse:
    """Administrators: provide the node for everyone, or stop."""
    ident = current_identity(request)
    node_id = _node_id(request)
    public = (await form_data(request)).get("public") == "1"
    try:
        node = await uc.set_public(dm_of(request), actor_of(request, ident), ident.user, node_id, public)
    except ApiError as e:
        if e.status != 409:
            raise
        node, user = await _manageable(request)
        return await _detail(request, node, user, status=e.status, action_error=forms.from_api_error(e).view(
            lang_of(request)))
    await flash(request, "ok", "flash.node_public" if public else "flash.node_private", name=node.name)
    return redirect(f"/nodes/{node.id}")


@routes.post("/nodes/{id}/shares/{user_id}/revoke")
@login_required
async def node_unshare(request: web.Request) -> web.StreamResponse:
    ident = current_identity(request)
    node_id = _node_id(request)
    user_id = path_id(request, "user_id")
    if user_id is None:
        raise NotFound("no such share")
    names = await uc.usernames(dm_of(request), {user_id})
    await uc.unshare(dm_of(request), actor_of(request, ident), ident.user, node_id, user_id)
    await flash(request, "ok", "flash.node_unshared", name=names.get(user_id, str(user_id)))
    return redirect(f"/nodes/{node_id}#sharing")


def setup(app: web.Application) -> None:
    """The node pages' routes and the template helpers they use."""
    app.router.add_routes(routes)
    env = aiohttp_jinja2.get_env(app)
    env.filters["mib"] = mib
    env.filters["pct"] = pct
