"""Instances: the list, the create form (showing each node's free CPU, memory and GPUs; SSH and
port maps), an instance's details with its live status, logs and actions (start, stop,
restart, delete, commit to an image), its SSH access and its port maps.

Every change goes through dmd.usecases.instances (and images for a commit, port_maps for port
maps), the same calls the JSON API makes. An instance that is not
yours is a 404 (administrators see all).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from dmd import capabilities, csp, i18n
from dmd.auth.flows import actor_of
from dmd.errors import ApiError, NotFound
from dmd.models import Instance, Node, mib_text
from dmd.pages import access as acc
from dmd.pages import forms
from dmd.pages.figures import ago
from dmd.pages.render import (
    current_identity,
    dm_of,
    flash,
    lang_of,
    login_required,
    path_id,
    redirect,
    render,
    translator,
)
from dmd.schemas import CommitIn, InstanceCreateIn, PageQuery, is_digits, page_of, parse_id
from dmd.usecases import images as image_uc
from dmd.usecases import instances as uc

routes = web.RouteTableDef()

PER_PAGE = 50
STATUSES = ("pending", "creating", "running", "stopped", "error", "deleting")
# Statuses that change by themselves: the pages watch these (dm.js) or offer a refresh.
TRANSITIONAL = frozenset({"pending", "creating", "deleting"})
LOG_TAIL = uc.DEFAULT_LOG_TAIL
LOG_TIMEOUT_S = 10.0
MAX_TEXTAREA = 200_000


# --- formatting -----------------------------------------------------------------------------

def cpus_text(v: float | None) -> str:
    return "—" if v is None else f"{max(v, 0):g}"


def node_status(request: web.Request, node: Node) -> str:
    """online / offline / pending, as the node pages show it."""
    if dm_of(request).hub.is_online(node.id):
        return "online"
    return "offline" if node.status == "online" else node.status


def status_labels(_: Callable[..., str]) -> dict[str, str]:
    return {s: _(f"inst.status.{s}") for s in (*STATUSES, "deleted")}


def gpu_label(g: dict[str, Any]) -> str:
    return f"#{g.get('index', '?')} {g.get('name') or 'GPU'}"


def _instance_id(request: web.Request) -> int:
    iid = path_id(request)
    if iid is None:
        raise NotFound("no such instance")
    return iid


# --- the list -------------------------------------------------------------------------------

@routes.get("/instances")
@login_required
async def instances_list(request: web.Request) -> web.StreamResponse:
    try:
        q = PageQuery(limit=PER_PAGE, cursor=request.query.get("cursor") or None)
    except ValueError:
        q = PageQuery(limit=PER_PAGE)
    user = current_identity(request).user
    dm = dm_of(request)
    page = page_of(await uc.list_held(dm, user, limit=q.limit + 1, after_id=q.cursor_id), q)
    held: list[uc.Held] = page["items"]
    items: list[Instance] = [h.instance for h in held]
    gpus = {h.instance.id: h.gpus for h in held}
    names = await uc.names(dm, {i.owner_id for i in items}, {i.node_id for i in items})
    owners, nodes = names.users, names.nodes
    _ = translator(request)
    online = {nid for nid in {i.node_id for i in items} if dm.hub.is_online(nid)}
    # An instance on an offline node shows "node offline" (its status is only the last one reported).
    rows = [{
        "i": i, "node": nodes.get(i.node_id), "owner": owners.get(i.owner_id), "gpus": len(gpus[i.id]),
        "created": ago(_, i.created_at), "node_online": i.node_id in online,
        "live": i.status in TRANSITIONAL and i.node_id in online,
    } for i in items]
    return await render(request, "instances.html", {
        "nav_active": "instances", "rows": rows, "next_cursor": page["next_cursor"], "first_page": q.cursor is None,
        "labels": status_labels(_), "counts": {s: sum(1 for i in items if i.status == s) for s in STATUSES},
    })


# --- the create form ------------------------------------------------------------------------

_FIELD_KEYS = {
    "name": "err.inst.name", "image": "err.inst.image", "node_id": "err.inst.node", "cpus": "err.inst.cpus",
    "memory_mb": "err.inst.memory", "gpus": "err.inst.gpus", "env": "err.inst.env", "command": "err.inst.command",
    "port_maps": "err.inst.ports", "ssh_key_ids": "err.ssh.keys", "ssh": "err.invalid",
}
_CODE_KEYS = {
    "name_taken": ("err.inst.name_taken", "name"),
    "no_capacity": ("err.inst.no_capacity", None),
    "quota_exceeded": ("err.inst.quota", None),
    "admin_only": ("err.inst.admin_only", "privileged"),
}
FORM_FIELDS = ("name", "image", "node", "cpus", "memory_mb", "gpus", "env", "command", "port_maps")


_SHORT_KEYS = {"too few CPUs": "cap.short.cpus", "too little memory": "cap.short.memory",
               "too few GPUs": "cap.short.gpus"}


def capacity_text(lang: str, e: ApiError) -> str:
    """A no_capacity refusal in the page's language: what was asked (once), then why each node
    said no, its free CPUs, memory (in the units the pages use) and GPUs named once."""
    def t(key: str, **kw: Any) -> str:
        return i18n.gettext(lang, key, **kw)

    asked, refused = e.extra.get("asked"), e.extra.get("nodes")
    if not isinstance(asked, dict) or not isinstance(refused, list):
        return e.message  # e.g. no node at all: one sentence, already plain
    cpus, mem, gpus = asked.get("cpus"), asked.get("memory_mb"), asked.get("gpus")
    what = ", ".join((
        t("cap.cpus", n=f"{cpus:g}") if isinstance(cpus, int | float) else t("cap.default_cpus"),
        t("cap.memory", size=mib_text(mem)) if isinstance(mem, int) else t("cap.default_memory"),
        t("cap.gpu_ids", ids=", ".join(map(str, gpus))) if isinstance(gpus, list) else t("cap.gpus", n=gpus or 0),
    ))
    lines: list[str] = []
    for r in refused:
        node, reason = r.get("node", "?"), r.get("reason")
        if reason == "offline":
            lines.append(t("cap.node_offline", node=node))
        elif reason == "cordoned":
            lines.append(t("cap.node_cordoned", node=node))
        elif reason == "no_image":
            lines.append(t("cap.node_no_image", node=node, image=r.get("image", "")))
        elif reason == "full" and isinstance(free := r.get("free"), dict):
            short = r.get("short", "")
            fc, fm = free.get("cpus"), free.get("memory_mb")
            lines.append(t("cap.node_full", node=node, cpus="?" if fc is None else f"{max(fc, 0):g}",
                           memory="?" if fm is None else mib_text(max(fm, 0)), gpus=free.get("gpus", 0),
                           gpus_total=free.get("gpus_total", 0),
                           why=t(_SHORT_KEYS[short]) if short in _SHORT_KEYS else short))
        else:
            lines.append(str(r.get("message", "")))  # the runtime's own words (which capability)
    return t("cap.detail", asked=what, nodes=t("cap.sep").join(lines))


def _create_error(e: ApiError | forms.FormError, lang: str = "en") -> forms.FormError:
    """A refusal as a form message: the field's own words, or the use case's detail (which names
    the nodes and what is free on each) inside a translated sentence."""
    if isinstance(e, forms.FormError):
        key = _FIELD_KEYS.get(e.field or "")
        own = e.key.startswith("err.inst.")
        return forms.FormError(e.status, key, e.field) if key and not own else e
    if e.code in _CODE_KEYS:
        key, field = _CODE_KEYS[e.code]
        detail = capacity_text(lang, e) if e.code == "no_capacity" else e.message
        return forms.FormError(e.status, key, field or e.field, {"message": detail})
    if e.code in acc.MAP_CODES or e.field in ("host_port", "instance_port", "protocol"):
        return forms.FormError(e.status, "err.inst.port_map", "port_maps", {"message": e.message})
    if e.field == "ssh_key_ids":
        return forms.FormError(e.status, "err.ssh.keys", "ssh_key_ids")
    if e.field in ("name", "node_id", "image"):
        return forms.FormError(e.status, _FIELD_KEYS[e.field], e.field)
    if e.field in _FIELD_KEYS:  # e.g. which GPUs the chosen node has
        return forms.FormError(e.status, "err.inst.detail", e.field, {"message": e.message})
    return forms.from_api_error(e)


def _lines(text: str) -> list[str]:
    """The non-empty lines of a textarea (browsers send CR LF)."""
    return [line.rstrip("\r") for line in text.split("\n") if line.strip()]


def parse_env(text: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for n, line in enumerate(_lines(text), 1):
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise forms.FormError(422, "err.inst.env_line", "env", {"n": n})
        env[key.strip()] = value
    return env


def parse_command(text: str) -> list[str] | None:
    """One argument per line, exactly as written (no shell, no splitting on spaces)."""
    return _lines(text) or None


def _number(value: str, kind: type) -> Any:
    v = value.strip()
    if not v:
        return None
    try:
        return kind(v)
    except ValueError:
        return v  # left as text: validation names the field


def create_body(data: Any) -> dict[str, Any]:
    """The JSON API's create body, from the form (a MultiDict: the GPU checkboxes repeat)."""
    def text(name: str) -> str:
        v = data.get(name, "")
        return v if isinstance(v, str) else ""

    for name in ("env", "command", "port_maps"):
        if len(text(name)) > MAX_TEXTAREA:
            raise forms.FormError(422, _FIELD_KEYS[name], name)
    node = text("node").strip()
    picked = [g for g in data.getall("gpu", []) if isinstance(g, str) and g]
    gpus: Any = picked if picked else (_number(text("gpus"), int) or 0)
    body: dict[str, Any] = {
        "name": text("name").strip(), "image": text("image").strip(),
        "node_id": None if node in ("", "auto") else _number(node, int),
        "cpus": _number(text("cpus"), float), "memory_mb": _number(text("memory_mb"), int), "gpus": gpus,
        "env": parse_env(text("env")), "command": parse_command(text("command")),
        "ssh": bool(text("ssh")), "ssh_key_ids": acc.key_choice(data), "port_maps": acc.parse_ports(text("port_maps")),
    }
    # Only administrators see these boxes; anyone else who sends them is refused (403).
    body["privileged"] = bool(text("privileged"))
    body["host_network"] = bool(text("host_network"))
    return body


async def _form_page(request: web.Request, *, status: int = 200, error: dict[str, Any] | None = None,
                     form: dict[str, Any] | None = None) -> web.Response:
    user = current_identity(request).user
    _ = translator(request)
    offer = await uc.create_form(dm_of(request), user)
    nodes: list[dict[str, Any]] = []
    for c, images in offer.nodes:
        n = c.node
        st = node_status(request, n)
        facts = n.facts or {}
        nodes.append({
            "node": n, "status": st, "usable": st == "online" and not n.cordoned,
            "cpus_free": cpus_text(c.free.cpus), "cpus_total": facts.get("cpu_count"),
            "mem_free": max(c.free.memory_mb, 0) if c.free.memory_mb is not None else None,
            "mem_total": facts.get("memory_total_mb"),
            "gpus_free": [{"uuid": g.get("uuid"), "label": gpu_label(g), "key": k} for k, g in c.free.gpus],
            "gpus_total": c.free.gpus_total,
            "images": images, "pools": acc.pools_text(n),
        })
    keys = offer.keys
    f: dict[str, Any] = {k: "" for k in FORM_FIELDS}
    f.update({"node": "auto", "gpus": "0", "gpu": [], "privileged": False, "host_network": False, "ssh": True,
              "ssh_keys": "all", "ssh_key_ids": []})
    f.update(form or {})
    # The same image may be on several nodes: mark it once, preferably under the chosen node.
    chosen: dict[str, Any] | None = None
    if f["image"]:
        groups = [n for n in nodes if f["image"] in n["images"]]
        preferred = [n for n in groups if str(n["node"].id) == f["node"]]
        chosen = next(iter(preferred or groups), None)
    return await render(request, "instance_new.html", {
        "nav_active": "instances", "nodes": nodes, "form": f, "error": error,
        "image_node_id": chosen["node"].id if chosen else None,
        "any_image": any(n["images"] for n in nodes), "any_usable": any(n["usable"] for n in nodes), "keys": keys,
    }, status=status)


@routes.get("/instances/new")
@login_required
async def instance_new(request: web.Request) -> web.StreamResponse:
    f: dict[str, Any] = {}
    if request.query.get("image"):
        f["image"] = request.query["image"][:255]
    if is_digits(request.query.get("node")):
        f["node"] = request.query["node"][:18]
    return await _form_page(request, form=f)


@routes.post("/instances")
@login_required
async def instance_create(request: web.Request) -> web.StreamResponse:
    ident = current_identity(request)
    data = await request.post()
    try:
        try:
            body = forms.validate(InstanceCreateIn, create_body(data))
            held = await uc.create(dm_of(request), actor_of(request, ident), ident.user, body)
        except (ApiError, forms.FormError) as e:
            if isinstance(e, ApiError) and e.status == 404:
                raise
            raise _create_error(e, lang_of(request)) from None
    except forms.FormError as fe:
        kept: dict[str, Any] = {k: v for k in FORM_FIELDS if isinstance(v := data.get(k, ""), str)}
        kept["gpu"] = [g for g in data.getall("gpu", []) if isinstance(g, str)]
        kept["privileged"] = bool(data.get("privileged"))
        kept["host_network"] = bool(data.get("host_network"))
        kept["ssh"] = bool(data.get("ssh"))
        kept["ssh_keys"] = "chosen" if data.get("ssh_keys") == "chosen" else "all"
        kept["ssh_key_ids"] = [k for k in data.getall("ssh_key_ids", []) if isinstance(k, str)]
        return await _form_page(request, status=fe.status, error=fe.view(lang_of(request)), form=kept)
    await flash(request, "ok", "flash.instance_created", name=held.instance.name)
    return redirect(f"/instances/{held.instance.id}")


# --- one instance ---------------------------------------------------------------------------

async def _detail(request: web.Request, *, status: int = 200, **extra: Any) -> web.Response:
    user = current_identity(request).user
    iid = _instance_id(request)
    dm = dm_of(request)
    found = await uc.page(dm, user, iid)
    inst, keys, node = found.instance, found.gpus, found.node
    access_ctx = acc.instance_context(request, found)
    by_key = dict(uc.gpu_keys(node)) if node else {}
    held = [{"key": k, "label": gpu_label(by_key[k]) if k in by_key else k, "uuid": (by_key.get(k) or {}).get("uuid")}
            for k in keys]
    _ = translator(request)
    logs: str | None = None
    logs_error = None
    if inst.status not in ("pending", "deleting"):
        try:
            got = await uc.logs(dm, user, inst.id, LOG_TAIL, timeout=LOG_TIMEOUT_S)
            logs = "".join(line if line.endswith("\n") else line + "\n" for line in got.lines)
        except ApiError as e:
            logs_error = "logs.offline" if e.code == "node_offline" else "logs.unavailable"
    node_online = node is not None and dm.hub.is_online(node.id)
    ctx: dict[str, Any] = {
        "nav_active": "instances", "inst": inst, "node": node,
        "node_status": node_status(request, node) if node else None,
        # While the node is offline its status is only the last one reported, and whatever needs
        # the agent now (restart, terminal, files, logs, commit) is disabled, saying why.
        "node_online": node_online,
        # An ssh line is shown only when it can work: the instance runs and its node is online.
        "ssh_live": node_online and inst.status == "running",
        "owner": found.owner, "mine": inst.owner_id == user.id,
        "gpus": held, "logs": logs, "logs_error": logs_error, "log_tail": LOG_TAIL,
        "live": inst.status in TRANSITIONAL, "labels": status_labels(_),
        "created": ago(_, inst.created_at), "updated": ago(_, inst.updated_at),
        "action_error": None, "commit_error": None,
        "commit_form": {"repository": "", "tag": "latest"},
        "here": f"/instances/{inst.id}",
        "ssh_error": None, "map_error": None, "map_form": {"instance_port": "", "protocol": "tcp", "host_port": ""},
        "ssh_form": None,
        # What the node's runtime can do for the terminal and the files sections.
        "can_terminal": node is not None and capabilities.of(node).exec_tty,
        "can_copy": node is not None and capabilities.of(node).file_copy,
    }
    ctx.update(access_ctx)
    ctx.update(extra)
    # xterm.js makes <style> elements: this response's nonce lets them in (dmd/csp.py).
    nonce = ctx["style_nonce"] = (csp.new_nonce() if inst.status == "running" and ctx["can_terminal"] and node_online
                                  else None)
    resp = await render(request, "instance.html", ctx, status=status)
    if nonce:
        resp.headers["Content-Security-Policy"] = csp.policy(nonce)
    return resp


@routes.get("/instances/{id}")
@login_required
async def instance_detail(request: web.Request) -> web.StreamResponse:
    return await _detail(request)


async def _action(request: web.Request, action: str) -> web.StreamResponse:
    ident = current_identity(request)
    iid = _instance_id(request)
    dm, actor = dm_of(request), actor_of(request, ident)
    try:
        if action == "start":
            inst = await uc.start(dm, actor, ident.user, iid)
        elif action == "stop":
            inst = await uc.stop(dm, actor, ident.user, iid)
        else:
            inst = await uc.restart(dm, actor, ident.user, iid)
    except ApiError as e:
        if e.status in (403, 404):
            raise
        fe = _action_error(e)
        return await _detail(request, status=fe.status, action_error=fe.view(lang_of(request)))
    await flash(request, "ok", f"flash.instance_{action}", name=inst.name)
    return redirect(f"/instances/{inst.id}")


def _action_error(e: ApiError) -> forms.FormError:
    if e.code in ("deleting", "node_offline", "agent_timeout", "agent_error"):
        return forms.FormError(e.status, f"err.inst.{e.code}", None, {"message": e.message})
    return forms.from_api_error(e)


@routes.post("/instances/{id}/start")
@login_required
async def instance_start(request: web.Request) -> web.StreamResponse:
    return await _action(request, "start")


@routes.post("/instances/{id}/stop")
@login_required
async def instance_stop(request: web.Request) -> web.StreamResponse:
    return await _action(request, "stop")


@routes.post("/instances/{id}/restart")
@login_required
async def instance_restart(request: web.Request) -> web.StreamResponse:
    return await _action(request, "restart")


@routes.get("/instances/{id}/delete")
@login_required
async def instance_delete_confirm(request: web.Request) -> web.StreamResponse:
    user = current_identity(request).user
    dm = dm_of(request)
    held = await uc.get_held(dm, user, _instance_id(request))
    inst, keys = held.instance, held.gpus
    node = (await uc.names(dm, set(), {inst.node_id})).nodes.get(inst.node_id)
    return await render(request, "instance_delete.html", {
        "nav_active": "instances", "inst": inst, "node": node, "n_gpus": len(keys),
        "node_online": bool(node and dm.hub.is_online(node.id)),
    })


@routes.post("/instances/{id}/delete")
@login_required
async def instance_delete(request: web.Request) -> web.StreamResponse:
    ident = current_identity(request)
    held = await uc.delete(dm_of(request), actor_of(request, ident), ident.user, _instance_id(request))
    await flash(request, "ok", "flash.instance_deleted", name=held.instance.name)
    return redirect("/instances")


@routes.post("/instances/{id}/commit")
@login_required
async def instance_commit(request: web.Request) -> web.StreamResponse:
    ident = current_identity(request)
    iid = _instance_id(request)
    data = await request.post()
    raw = {k: v.strip() for k in ("repository", "tag") if isinstance(v := data.get(k, ""), str)}
    try:
        try:
            body = forms.validate(CommitIn, {"repository": raw.get("repository", ""),
                                             "tag": raw.get("tag") or "latest"})
            row = await image_uc.commit(dm_of(request), actor_of(request, ident), ident.user, iid, body.repository,
                                        body.tag)
        except (ApiError, forms.FormError) as e:
            if isinstance(e, ApiError) and e.status in (403, 404):
                raise
            raise _commit_error(e) from None
    except forms.FormError as fe:
        return await _detail(request, status=fe.status, commit_error=fe.view(lang_of(request)),
                             commit_form={"repository": raw.get("repository", ""), "tag": raw.get("tag", "")})
    await flash(request, "ok", "flash.instance_committed", ref=row["ref"])
    return redirect(f"/images#image-{row['id']}")


def _commit_error(e: ApiError | forms.FormError) -> forms.FormError:
    if isinstance(e, forms.FormError):
        if e.field in ("repository", "tag"):
            return forms.FormError(e.status, f"err.image.{e.field}", e.field)
        return e
    if e.code in ("node_offline", "agent_timeout", "agent_error", "invalid_image"):
        return forms.FormError(e.status, f"err.inst.{e.code}", None, {"message": e.message})
    return forms.from_api_error(e)


# --- SSH and port maps of one instance ---------------------------------------------------------

@routes.post("/instances/{id}/ssh")
@login_required
async def instance_ssh(request: web.Request) -> web.StreamResponse:
    """Turn SSH on or off and choose the keys that go in (all of the owner's, or the ticked ones)."""
    ident = current_identity(request)
    iid = _instance_id(request)
    data = await request.post()
    enabled = bool(data.get("enabled"))
    try:
        try:
            ids = acc.key_choice(data)
            inst = await uc.set_ssh(dm_of(request), actor_of(request, ident), ident.user, iid, enabled=enabled,
                                    key_ids=ids, set_keys=True)
        except ApiError as e:
            if e.status in (403, 404):
                raise
            raise _ssh_error(e) from None
    except forms.FormError as fe:
        kept = {"enabled": enabled, "keys_all": data.get("ssh_keys") != "chosen",
                "key_ids": [k for k in map(parse_id, data.getall("ssh_key_ids", [])) if k is not None]}
        return await _detail(request, status=fe.status, ssh_error=fe.view(lang_of(request)), ssh_form=kept)
    await flash(request, "ok", "flash.ssh_saved" if inst.ssh_enabled else "flash.ssh_off", name=inst.name)
    return redirect(f"/instances/{inst.id}#ssh")


def _ssh_error(e: ApiError) -> forms.FormError:
    if e.code in ("host_network", "deleting"):
        return forms.FormError(e.status, f"err.ssh.{e.code}", None)
    if e.field == "ssh_key_ids":
        return forms.FormError(e.status, "err.ssh.keys", "ssh_key_ids")
    return forms.from_api_error(e)


@routes.post("/instances/{id}/port-maps")
@login_required
async def instance_map_add(request: web.Request) -> web.StreamResponse:
    """Map a host port of the instance's node to one of its ports; back to the instance."""
    iid = _instance_id(request)
    data = await request.post()
    try:
        m = await acc.add_map(request, iid, data)
    except forms.FormError as fe:
        return await _detail(request, status=fe.status, map_error=fe.view(lang_of(request)),
                             map_form=acc.kept_map(data))
    await acc.flash_added(request, m)
    return redirect(f"/instances/{iid}#port-maps")


def setup(app: web.Application) -> None:
    app.router.add_routes(routes)
