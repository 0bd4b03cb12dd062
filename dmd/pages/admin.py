"""Administration: users (list, create, change, disable, delete) and the audit trail."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dmd.auth.flows import actor_of
from dmd.errors import ApiError, NotFound
from dmd.models import User
from dmd.pages import forms
from dmd.pages.render import (
    admin_required,
    current_identity,
    dm_of,
    flash,
    form_data,
    lang_of,
    path_id,
    redirect,
    render,
    url_with,
)
from dmd.schemas import AuditQuery, PageQuery, UserCreateIn, UserPatchIn, page_of
from dmd.usecases import accounts
from dmd.usecases import audit as audit_uc

routes = web.RouteTableDef()

USERS_PER_PAGE = 50
AUDIT_PER_PAGE = 50
QUOTAS = accounts.LIMIT_FIELDS
# Families offered as one-click filters on the audit page.
AUDIT_FAMILIES = ("auth.", "setup.", "user.", "token.")


def _page_query(request: web.Request, limit: int) -> PageQuery | None:
    cursor = request.query.get("cursor") or None
    try:
        return PageQuery(limit=limit, cursor=cursor)
    except ValueError:
        return None


def _quota_text(v: int | None) -> str:
    return "" if v is None else str(v)


def _user_form(u: User) -> dict[str, str]:
    return {"email": u.email, "username": u.username, "role": u.role,
            **{q: _quota_text(getattr(u, q)) for q in QUOTAS}}


async def _target(request: web.Request) -> User:
    uid = path_id(request)
    if uid is None:
        raise NotFound("no such user")
    return await accounts.get_user(dm_of(request), uid)


# --- users ------------------------------------------------------------------------------

@routes.get("/users")
@admin_required
async def users_list(request: web.Request) -> web.StreamResponse:
    q = _page_query(request, USERS_PER_PAGE)
    if q is None:
        return redirect("/users")
    rows = await accounts.list_users(dm_of(request), limit=q.limit + 1, after_id=q.cursor_id)
    page = page_of(rows, q)
    return await render(request, "users.html", {
        "nav_active": "users", "users": page["items"], "next_cursor": page["next_cursor"],
        "first_page": q.cursor is None, "quotas": QUOTAS,
    })


def _new_form(data: dict[str, str] | None = None) -> dict[str, str]:
    # Prefilled with what a new plain user gets (no node until an administrator allows one).
    defaults = accounts.new_user_limits("user")
    base = {"email": "", "username": "", "role": "user", **{q: _quota_text(defaults.get(q)) for q in QUOTAS}}
    base.update(data or {})
    return base


@routes.get("/users/new")
@admin_required
async def user_new(request: web.Request) -> web.StreamResponse:
    return await render(request, "user_new.html", {"nav_active": "users", "form": _new_form(),
                                                   "error": None, "quotas": QUOTAS})


@routes.post("/users")
@admin_required
async def user_create(request: web.Request) -> web.StreamResponse:
    data = await form_data(request)
    try:
        if data.get("password", "") != data.get("password2", ""):
            raise forms.FormError(422, "err.passwords_differ", "password2")
        body = forms.validate(UserCreateIn, {
            "email": data.get("email", "").strip(),
            "password": data.get("password", ""),
            "role": data.get("role", "user"),
            "username": forms.optional_text(data.get("username")),
            **{q: forms.quota(data.get(q)) for q in QUOTAS},
        })
        try:
            user = await accounts.create_user(
                dm_of(request), actor_of(request, current_identity(request)), **body.model_dump()
            )
        except ApiError as e:
            raise forms.from_api_error(e) from None
    except forms.FormError as fe:
        return await render(request, "user_new.html", {
            "nav_active": "users", "quotas": QUOTAS, "error": fe.view(lang_of(request)),
            "form": _new_form(forms.kept(data, "email", "username", "role", *QUOTAS)),
            "here": "/users/new",
        }, status=fe.status)
    await flash(request, "ok", "flash.user_created", name=user.username)
    return redirect("/users")


async def _edit_page(request: web.Request, user: User, *, status: int = 200, **extra: Any) -> web.Response:
    ctx: dict[str, Any] = {
        "nav_active": "users", "user": user, "form": _user_form(user), "quotas": QUOTAS,
        "error": None, "pw_error": None,
        "is_self": user.id == current_identity(request).user.id,
        "here": f"/users/{user.id}",
    }
    ctx.update(extra)
    return await render(request, "user_edit.html", ctx, status=status)


@routes.get("/users/{id}")
@admin_required
async def user_edit(request: web.Request) -> web.StreamResponse:
    return await _edit_page(request, await _target(request))


async def _apply(request: web.Request, user: User, fields: dict[str, Any]) -> User:
    try:
        return await accounts.update_user(dm_of(request), actor_of(request, current_identity(request)), user.id,
                                          fields)
    except ApiError as e:
        raise forms.from_api_error(e) from None


@routes.post("/users/{id}")
@admin_required
async def user_update(request: web.Request) -> web.StreamResponse:
    user = await _target(request)
    data = await form_data(request)
    try:
        body = forms.validate(UserPatchIn, {
            "email": data.get("email", "").strip(),
            "username": data.get("username", "").strip(),
            "role": data.get("role", ""),
            **{q: forms.quota(data.get(q)) for q in QUOTAS},
        })
        after = await _apply(request, user, {k: getattr(body, k) for k in body.model_fields_set})
    except forms.FormError as fe:
        return await _edit_page(
            request, user, status=fe.status, error=fe.view(lang_of(request)),
            form=forms.kept(data, "email", "username", "role", *QUOTAS),
        )
    await flash(request, "ok", "flash.user_saved", name=after.username)
    return redirect(f"/users/{after.id}")


@routes.post("/users/{id}/password")
@admin_required
async def user_password(request: web.Request) -> web.StreamResponse:
    user = await _target(request)
    data = await form_data(request)
    try:
        if data.get("password", "") != data.get("password2", ""):
            raise forms.FormError(422, "err.passwords_differ", "password2")
        body = forms.validate(UserPatchIn, {"password": data.get("password", "")})
        await _apply(request, user, {"password": body.password})
    except forms.FormError as fe:
        return await _edit_page(request, user, status=fe.status, pw_error=fe.view(lang_of(request)))
    await flash(request, "ok", "flash.password_reset", name=user.username)
    return redirect(f"/users/{user.id}")


async def _set_disabled(request: web.Request, disabled: bool) -> web.StreamResponse:
    user = await _target(request)
    try:
        after = await _apply(request, user, {"disabled": disabled})
    except forms.FormError as fe:
        return await _edit_page(request, user, status=fe.status, error=fe.view(lang_of(request)))
    await flash(request, "ok", "flash.user_disabled" if disabled else "flash.user_enabled",
                name=after.username)
    return redirect(f"/users/{user.id}")


@routes.post("/users/{id}/disable")
@admin_required
async def user_disable(request: web.Request) -> web.StreamResponse:
    return await _set_disabled(request, True)


@routes.post("/users/{id}/enable")
@admin_required
async def user_enable(request: web.Request) -> web.StreamResponse:
    return await _set_disabled(request, False)


@routes.get("/users/{id}/delete")
@admin_required
async def user_delete_confirm(request: web.Request) -> web.StreamResponse:
    user = await _target(request)
    return await render(request, "user_delete.html", {"nav_active": "users", "user": user,
                                                      "error": None})


@routes.post("/users/{id}/delete")
@admin_required
async def user_delete(request: web.Request) -> web.StreamResponse:
    user = await _target(request)
    try:
        await accounts.delete_user(dm_of(request), actor_of(request, current_identity(request)), user.id)
    except ApiError as e:
        fe = forms.from_api_error(e)
        return await render(request, "user_delete.html", {
            "nav_active": "users", "user": user, "error": fe.view(lang_of(request)),
            "here": f"/users/{user.id}/delete",
        }, status=fe.status)
    await flash(request, "ok", "flash.user_deleted", name=user.username)
    return redirect("/users")


# --- audit ------------------------------------------------------------------------------

def _short(v: Any) -> str:
    text = "—" if v is None or v == "" else str(v)
    return text if len(text) <= 80 else text[:79] + "…"


def detail_text(detail: dict[str, Any]) -> str:
    """An entry's detail on one line: `name=x`, and `role: user → admin` for changes."""
    parts = []
    for k, v in detail.items():
        if k == "changes" and isinstance(v, dict):
            for field, pair in v.items():
                if isinstance(pair, list) and len(pair) == 2:
                    parts.append(f"{field}: {_short(pair[0])} → {_short(pair[1])}")
                else:
                    parts.append(f"{field}: {_short(pair)}")
        else:
            parts.append(f"{k}={_short(v)}")
    return "; ".join(parts)


@routes.get("/audit")
@admin_required
async def audit(request: web.Request) -> web.StreamResponse:
    action = request.query.get("action", "").strip().lower()
    if action and "." not in action:
        action += "."  # a bare family name means every action in it
    ctx: dict[str, Any] = {"nav_active": "audit", "action": action, "families": AUDIT_FAMILIES,
                           "entries": [], "next_cursor": None, "error": None}
    cursor = request.query.get("cursor") or None
    if cursor is not None and _page_query(request, AUDIT_PER_PAGE) is None:
        return redirect(url_with("/audit", action=action))  # a mangled cursor: start over
    try:
        q = AuditQuery(limit=AUDIT_PER_PAGE, cursor=cursor, action=action or None)
    except ValueError:
        ctx["error"] = forms.FormError(422, "err.field.action", "action").view(lang_of(request))
        return await render(request, "audit.html", {**ctx, "first_page": True}, status=422)
    rows = await audit_uc.list_entries(dm_of(request), limit=q.limit + 1, before_id=q.cursor_id, action=q.action)
    for r in rows:
        r["detail_text"] = detail_text(r["detail"])
    page = page_of(rows, q)
    ctx.update(entries=page["items"], next_cursor=page["next_cursor"], first_page=q.cursor is None)
    return await render(request, "audit.html", ctx)
