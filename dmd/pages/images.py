"""Images: the catalogue of each node you may use, with pull (registry credentials used once,
never stored), import of an uploaded tarball, copy to another node, public/private and
delete (refused while an instance uses the image, unless forced).

The import form is read as a stream (request.multipart()): its CSRF token and names come
first, then the file goes straight to a blob file on disk, never whole into memory. The
changes go through dmd.usecases.images, the same calls the JSON API makes.
"""

from __future__ import annotations

from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp_session import get_session

from dmd.auth import csrf
from dmd.auth.flows import actor_of
from dmd.auth.tokens import same
from dmd.errors import ApiError, BadRequest, Forbidden, NotFound
from dmd.models import Node
from dmd.pages import forms
from dmd.pages.instances import node_status
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
)
from dmd.schemas import CopyIn, PullIn, is_digits, parse_id
from dmd.usecases import images as uc

routes = web.RouteTableDef()

FIELD_LIMIT = 8192  # bytes of one plain field of the import form


def human_bytes(n: Any) -> str:
    if not isinstance(n, int) or isinstance(n, bool):
        return "—"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" or size >= 100 else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def _image_id(request: web.Request) -> int:
    iid = path_id(request)
    if iid is None:
        raise NotFound("no such image")
    return iid


# --- the catalogue ------------------------------------------------------------------------

async def _catalogue_page(request: web.Request, *, status: int = 200, node_id: int | None = None,
                          kind: str | None = None, error: dict[str, Any] | None = None,
                          form: dict[str, str] | None = None) -> web.Response:
    """Every usable node with its images. A rejected form (kind: pull, import, copy) is shown
    again under its node with the message and the user's input."""
    user = current_identity(request).user
    found = await uc.catalogue(dm_of(request), user)
    groups: list[dict[str, Any]] = []
    for n, entries in found.nodes:
        rows = [{"img": e.image, "size": human_bytes(e.image["size"]), "in_use": len(e.users_of),
                 "users_of": e.users_of if user.is_admin or e.image["owner_id"] == user.id else [],
                 "manage": uc.may_manage(user, e.image)} for e in entries]
        groups.append({"node": n, "status": node_status(request, n), "rows": rows})
    owners = found.owners
    targets = [{"id": g["node"].id, "name": g["node"].name, "online": g["status"] == "online"} for g in groups]
    return await render(request, "images.html", {
        "nav_active": "images", "groups": groups, "owners": owners, "targets": targets,
        "err_node": node_id, "err_kind": kind, "error": error, "form": form or {},
        "here": "/images",
    }, status=status)


@routes.get("/images")
@login_required
async def images_list(request: web.Request) -> web.StreamResponse:
    return await _catalogue_page(request)


def _transfer_error(e: ApiError | forms.FormError) -> forms.FormError:
    if isinstance(e, forms.FormError):
        if e.field in ("ref", "repository", "tag", "node_id", "username", "password"):
            return forms.FormError(e.status, f"err.image.{e.field}", e.field)
        return e
    if e.code in ("node_offline", "agent_timeout", "agent_error", "invalid_image", "same_node", "too_large",
                  "empty_body", "transfer_failed"):
        return forms.FormError(e.status, f"err.image.{e.code}", e.field, {"message": e.message})
    if e.field in ("repository", "tag"):
        return forms.FormError(e.status, f"err.image.{e.field}", e.field)
    return forms.from_api_error(e)


async def _node(request: web.Request, raw: str) -> Node:
    node_id = parse_id(raw)
    if node_id is None:
        raise NotFound("no such node")
    return await uc.visible_node(dm_of(request), current_identity(request).user, node_id)


@routes.post("/images/pull")
@login_required
async def image_pull(request: web.Request) -> web.StreamResponse:
    ident = current_identity(request)
    data = await form_data(request)
    node = await _node(request, data.get("node_id", ""))
    try:
        try:
            body = forms.validate(PullIn, {"ref": data.get("ref", "").strip(),
                                           "username": forms.optional_text(data.get("username")),
                                           "password": data.get("password") or None})
            row = await uc.pull(dm_of(request), actor_of(request, ident), ident.user, node, body.ref,
                                       username=body.username, password=body.password)
        except (ApiError, forms.FormError) as e:
            if isinstance(e, ApiError) and e.status in (403, 404):
                raise
            raise _transfer_error(e) from None
    except forms.FormError as fe:
        return await _catalogue_page(request, status=fe.status, node_id=node.id, kind="pull",
                                     error=fe.view(lang_of(request)), form=forms.kept(data, "ref", "username"))
    await flash(request, "ok", "flash.image_pulled", ref=row["ref"], node=node.name)
    return redirect(f"/images#image-{row['id']}")


async def _small_field(part: BodyPartReader) -> str:
    data = bytearray()
    while chunk := await part.read_chunk(1024):
        data += chunk
        if len(data) > FIELD_LIMIT:
            raise BadRequest(f"the form field {part.name} is too long")
    return data.decode("utf-8", "replace")


@login_required
async def image_import(request: web.Request) -> web.StreamResponse:
    """The upload form, read part by part: csrf_token, node_id, repository, tag, then file."""
    ident = current_identity(request)
    if request.content_type != "multipart/form-data":
        raise BadRequest("send the import form as multipart/form-data")
    session = await get_session(request)
    expected = session.get("csrf")
    reader = await request.multipart()
    fields: dict[str, str] = {}
    node: Node | None = None
    try:
        try:
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    raise BadRequest("unexpected nested multipart")
                if part.name != "file":
                    if part.name in (csrf.CSRF_FIELD, "node_id", "repository", "tag"):
                        fields[part.name] = await _small_field(part)
                    continue
                # The file: check everything before a byte of it is stored.
                if not isinstance(expected, str) or not same(fields.get(csrf.CSRF_FIELD, ""), expected):
                    raise Forbidden("missing or wrong CSRF token", code="csrf")
                node = await _node(request, fields.get("node_id", ""))
                repository = fields.get("repository", "").strip()
                tag = fields.get("tag", "").strip() or "latest"
                uc.check_import_name(repository, tag)
                row = await uc.import_tarball(dm_of(request), actor_of(request, ident), ident.user, node,
                                                     repository, tag, part.read_chunk)
                break
            else:
                if not isinstance(expected, str) or not same(fields.get(csrf.CSRF_FIELD, ""), expected):
                    raise Forbidden("missing or wrong CSRF token", code="csrf")
                node = await _node(request, fields.get("node_id", ""))
                raise BadRequest("choose a tarball to upload", code="empty_body")
        except (ApiError, forms.FormError) as e:
            if isinstance(e, ApiError) and (e.status in (403, 404) or node is None):
                raise
            raise _transfer_error(e) from None
    except forms.FormError as fe:
        assert node is not None
        return await _catalogue_page(request, status=fe.status, node_id=node.id, kind="import",
                                     error=fe.view(lang_of(request)), form=forms.kept(fields, "repository", "tag"))
    await flash(request, "ok", "flash.image_imported", ref=row["ref"], node=node.name)
    return redirect(f"/images#image-{row['id']}")


# The form is multipart and may be huge: the middleware must not read it to find the CSRF
# token (request.post() would load it all); the handler checks the token itself, above.
image_import.csrf_exempt = True  # type: ignore[attr-defined]
routes.post("/images/import")(image_import)


@routes.post("/images/{id}/copy")
@login_required
async def image_copy(request: web.Request) -> web.StreamResponse:
    ident = current_identity(request)
    iid = _image_id(request)
    data = await form_data(request)
    image = await uc.get_visible(dm_of(request), ident.user, iid)
    raw = data.get("node_id", "")
    try:
        try:
            body = forms.validate(CopyIn, {"node_id": int(raw) if is_digits(raw) and len(raw) <= 18 else raw})
            row = await uc.copy(dm_of(request), actor_of(request, ident), ident.user, iid, body.node_id)
        except (ApiError, forms.FormError) as e:
            if isinstance(e, ApiError) and e.status in (403, 404):
                raise
            raise _transfer_error(e) from None
    except forms.FormError as fe:
        return await _catalogue_page(request, status=fe.status, node_id=image["node_id"], kind="copy",
                                     error=fe.view(lang_of(request)))
    await flash(request, "ok", "flash.image_copied", ref=row["ref"])
    return redirect(f"/images#image-{row['id']}")


async def _set_public(request: web.Request, public: bool) -> web.StreamResponse:
    ident = current_identity(request)
    row = await uc.set_public(dm_of(request), actor_of(request, ident), ident.user, _image_id(request), public)
    await flash(request, "ok", "flash.image_public" if public else "flash.image_private", ref=row["ref"])
    return redirect(f"/images#image-{row['id']}")


@routes.post("/images/{id}/public")
@login_required
async def image_public(request: web.Request) -> web.StreamResponse:
    return await _set_public(request, True)


@routes.post("/images/{id}/private")
@login_required
async def image_private(request: web.Request) -> web.StreamResponse:
    return await _set_public(request, False)


async def _delete_page(request: web.Request, image: dict[str, Any], *, status: int = 200,
                       error: dict[str, Any] | None = None) -> web.Response:
    user = current_identity(request).user
    users_of = await uc.in_use_by(dm_of(request), image)
    nodes = {n.id: n for n in await _usable(request)}
    return await render(request, "image_delete.html", {
        "nav_active": "images", "image": image, "node": nodes.get(image["node_id"]), "users_of": users_of,
        "error": error, "manage": uc.may_manage(user, image),
    }, status=status)


async def _usable(request: web.Request) -> list[Node]:
    return await uc.usable_nodes(dm_of(request), current_identity(request).user)


async def _manageable(request: web.Request) -> dict[str, Any]:
    return await uc.manageable(dm_of(request), current_identity(request).user, _image_id(request))


@routes.get("/images/{id}/delete")
@login_required
async def image_delete_confirm(request: web.Request) -> web.StreamResponse:
    return await _delete_page(request, await _manageable(request))


@routes.post("/images/{id}/delete")
@login_required
async def image_delete(request: web.Request) -> web.StreamResponse:
    ident = current_identity(request)
    image = await _manageable(request)
    data = await form_data(request)
    try:
        gone = await uc.delete(dm_of(request), actor_of(request, ident), ident.user, image["id"],
                                      bool(data.get("force")))
    except ApiError as e:
        if e.status in (403, 404):
            raise
        key = "err.image.in_use" if e.code == "image_in_use" else None
        fe = forms.FormError(e.status, key, None) if key else _transfer_error(e)
        return await _delete_page(request, image, status=fe.status, error=fe.view(lang_of(request)))
    await flash(request, "ok", "flash.image_deleted", ref=gone["ref"])
    return redirect("/images")


def setup(app: web.Application) -> None:
    app.router.add_routes(routes)
