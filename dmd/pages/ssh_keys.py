"""Your SSH keys: the list with fingerprints, adding one by pasting or by choosing the .pub
file, renaming, and deleting after a confirmation."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dmd import i18n
from dmd.auth.flows import actor_of
from dmd.errors import ApiError, NotFound
from dmd.pages import forms
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
from dmd.schemas import SshKeyPatchIn
from dmd.sshkeys import MAX_INPUT_BYTES, looks_private
from dmd.usecases import ssh_keys as uc

routes = web.RouteTableDef()

# Codes of refusals that have their own words on the page (err.sshkey.<code>).
_OWN_CODES = {"key_exists": "exists", "too_many_keys": "too_many"}


def _key_id(request: web.Request) -> int:
    key_id = path_id(request)
    if key_id is None:
        raise NotFound("no such SSH key")
    return key_id


def _form_error(e: ApiError | forms.FormError) -> forms.FormError:
    if isinstance(e, forms.FormError):
        if e.field == "name":
            return forms.FormError(e.status, "err.sshkey.name", "name")
        return e
    code = _OWN_CODES.get(e.code, e.code)
    if e.field == "name":
        return forms.FormError(e.status, "err.sshkey.name", "name")
    if i18n.has(f"err.sshkey.{code}"):
        return forms.FormError(e.status, f"err.sshkey.{code}", e.field or "public_key", dict(e.extra))
    return forms.from_api_error(e)


async def _page(request: web.Request, *, status: int = 200, **extra: Any) -> web.Response:
    user = current_identity(request).user
    keys = await uc.list_for(dm_of(request), user, limit=uc.MAX_KEYS_PER_USER)
    ctx: dict[str, Any] = {
        "nav_active": "ssh_keys",
        "keys": keys,
        "max_keys": uc.MAX_KEYS_PER_USER,
        "max_kib": MAX_INPUT_BYTES // 1024,
        "error": None,
        "form": {"name": "", "public_key": ""},
        "rename_id": None,
        "rename_error": None,
        "rename_form": {"name": ""},
        "confirm": None,
        "here": "/ssh-keys",
    }
    ctx.update(extra)
    return await render(request, "ssh_keys.html", ctx, status=status)


@routes.get("/ssh-keys")
@login_required
async def keys_list(request: web.Request) -> web.StreamResponse:
    return await _page(request)


def _read_upload(field: web.FileField) -> bytes:
    """The chosen file, at most one byte over the limit (enough for the parser to refuse it)."""
    data = field.file.read(MAX_INPUT_BYTES + 1)
    return data if isinstance(data, bytes) else str(data).encode("utf-8")


@routes.post("/ssh-keys")
@login_required
async def key_add(request: web.Request) -> web.StreamResponse:
    ident = current_identity(request)
    post = await request.post()  # already read (and its CSRF token checked) by the middleware
    data = {k: v for k, v in post.items() if isinstance(v, str)}
    upload = post.get("key_file")
    pasted = data.get("public_key", "")
    file_bytes = _read_upload(upload) if isinstance(upload, web.FileField) else b""
    try:
        if file_bytes.strip() and pasted.strip():
            raise forms.FormError(422, "err.sshkey.both", "public_key")
        text: str | bytes = file_bytes if file_bytes.strip() else pasted
        name = forms.optional_text(data.get("name"))
        if name is not None:
            name = forms.validate(SshKeyPatchIn, {"name": name}).name
        try:
            key, parsed = await uc.add(dm_of(request), actor_of(request, ident), ident.user, name, text)
        except ApiError as e:
            raise _form_error(e) from None
    except forms.FormError as fe:
        fe = _form_error(fe)
        if fe.field == "public_key" and file_bytes.strip():
            fe.field = "key_file"
        kept = forms.kept(data, "name", "public_key")
        if looks_private(kept["public_key"]):
            kept["public_key"] = ""  # never echo a private key back into the page
        return await _page(request, status=fe.status, error=fe.view(lang_of(request)), form=kept)
    await flash(request, "ok", "flash.ssh_key_added", name=key.name, fingerprint=key.fingerprint)
    if parsed.options_removed:
        await flash(request, "info", "flash.ssh_key_options", options=", ".join(parsed.options_removed))
    return redirect("/ssh-keys")


@routes.post("/ssh-keys/{id}/rename")
@login_required
async def key_rename(request: web.Request) -> web.StreamResponse:
    ident = current_identity(request)
    key_id = _key_id(request)
    data = await form_data(request)
    try:
        try:
            body = forms.validate(SshKeyPatchIn, {"name": data.get("name", "")})
            key = await uc.rename(dm_of(request), actor_of(request, ident), ident.user, key_id, body.name)
        except (ApiError, forms.FormError) as e:
            if isinstance(e, ApiError) and e.status in (403, 404):
                raise
            raise _form_error(e) from None
    except forms.FormError as fe:
        await uc.get(dm_of(request), ident.user, key_id)  # 404 when it is not yours
        return await _page(request, status=fe.status, rename_id=key_id, rename_error=fe.view(lang_of(request)),
                           rename_form=forms.kept(data, "name"))
    await flash(request, "ok", "flash.ssh_key_renamed", name=key.name)
    return redirect("/ssh-keys")


@routes.get("/ssh-keys/{id}/delete")
@login_required
async def key_delete_confirm(request: web.Request) -> web.StreamResponse:
    user = current_identity(request).user
    key = await uc.get(dm_of(request), user, _key_id(request))
    return await _page(request, confirm=key)


@routes.post("/ssh-keys/{id}/delete")
@login_required
async def key_delete(request: web.Request) -> web.StreamResponse:
    ident = current_identity(request)
    key = await uc.delete(dm_of(request), actor_of(request, ident), ident.user, _key_id(request))
    await flash(request, "ok", "flash.ssh_key_deleted", name=key.name)
    return redirect("/ssh-keys")


def setup(app: web.Application) -> None:
    app.router.add_routes(routes)
