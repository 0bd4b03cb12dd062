"""The JSON API's route registry.

One declaration per route carries its method, path, request/response schemas and who may
call it. The same declarations validate requests, serialise replies and generate the
OpenAPI document, so the document cannot drift from what the server accepts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import pydantic
from aiohttp import web

from dmd.core import DM, Dm
from dmd.errors import ApiError, BadRequest, Forbidden, Invalid, NotFound, TooLarge, Unauthorized
from dmd.schemas import parse_id  # ids beyond what storage holds are not found before any query
from dmd.state import IDENTITY_KEY, Identity

Auth = Literal["none", "user", "admin", "optional"]
Handler = Callable[["Ctx"], Awaitable[Any]]

_PATH_PARAM = re.compile(r"\{(\w+)\}")


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=_default)


def _default(o: Any) -> Any:
    if isinstance(o, pydantic.BaseModel):
        return o.model_dump(mode="json")
    if hasattr(o, "isoformat"):
        return o.isoformat()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def json_response(data: Any, status: int = 200) -> web.Response:
    # A model is written by pydantic-core in one pass: the same compact UTF-8 JSON as dumps()
    # (same keys, order and values), at a fraction of the cost of model_dump() + json.dumps.
    text = data.model_dump_json() if isinstance(data, pydantic.BaseModel) else dumps(data)
    return web.Response(text=text, status=status, content_type="application/json")


def error_response(err: ApiError) -> web.Response:
    resp = json_response(err.body(), status=err.status)
    if err.status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="dm"'
    return resp


def validation_message(e: pydantic.ValidationError) -> tuple[str, str]:
    """The first problem as (field, human message)."""
    first = e.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in first["loc"]) or "body"
    kind = first["type"]
    if kind == "extra_forbidden":
        msg = "unknown field"
    elif kind == "missing":
        msg = "is required"
    else:
        msg = first["msg"]
        msg = msg[0].lower() + msg[1:] if msg else msg
        if msg.startswith("value error, "):
            msg = msg[len("value error, "):]
    return loc, f"{loc}: {msg}"


@dataclass
class Ctx:
    """What a handler gets: the request, dmd's parts, who is calling, and the validated input."""

    request: web.Request
    dm: Dm
    identity: Identity | None
    body: Any = None
    query: Any = None

    @property
    def user_identity(self) -> Identity:
        assert self.identity is not None
        return self.identity

    def path_int(self, name: str) -> int:
        raw = self.request.match_info[name]
        value = parse_id(raw)
        if value is None:
            raise NotFound(f"no such {name.removesuffix('_id') or 'object'}: {raw[:20]!r}")
        return value


@dataclass
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    auth: Auth = "user"
    body: type[pydantic.BaseModel] | None = None
    query: type[pydantic.BaseModel] | None = None
    response: Any = None
    status: int = 200
    errors: tuple[int, ...] = ()
    # Only for routes whose JSON-only body a cross-site form cannot send (login).
    csrf_exempt: bool = False


class Api:
    def __init__(self, prefix: str = "/api/v1") -> None:
        self.prefix = prefix
        self.routes: list[Route] = []

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        tag: str,
        auth: Auth = "user",
        body: type[pydantic.BaseModel] | None = None,
        query: type[pydantic.BaseModel] | None = None,
        response: Any = None,
        status: int = 200,
        errors: tuple[int, ...] = (),
        csrf_exempt: bool = False,
    ) -> Callable[[Handler], Handler]:
        def deco(fn: Handler) -> Handler:
            self.routes.append(
                Route(method.upper(), self.prefix + path, fn, summary, tag, auth, body, query,
                      response, status, errors, csrf_exempt)
            )
            return fn

        return deco

    def get(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("POST", path, **kw)

    def patch(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("DELETE", path, **kw)

    def include(self, other: Api) -> None:
        self.routes.extend(other.routes)

    def register(self, app: web.Application) -> None:
        for r in self.routes:
            app.router.add_route(r.method, r.path, _wrap(r))


def _wrap(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    id_params = [n for n in _PATH_PARAM.findall(route.path) if n == "id" or n.endswith("_id")]

    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            ident: Identity | None = request.get(IDENTITY_KEY)
            if route.auth in ("user", "admin"):
                if ident is None:
                    raise Unauthorized("authentication required: log in or send 'Authorization: Bearer <token>'")
                if route.auth == "admin" and not ident.is_admin:
                    raise Forbidden("this needs an administrator")
            ctx = Ctx(request, request.app[DM], ident)
            for name in id_params:  # a bad id is a 404 whatever else the request holds
                ctx.path_int(name)
            if route.query is not None:
                ctx.query = _validate(route.query, dict(request.query), strict=False)
            if route.body is not None:
                ctx.body = _validate(route.body, await read_json(request), strict=True)
            result = await route.handler(ctx)
        except ApiError as e:
            return error_response(e)
        if isinstance(result, web.StreamResponse):
            return result
        if result is None and route.status == 204:
            return web.Response(status=204)
        return json_response(result, status=route.status)

    handler.csrf_exempt = route.csrf_exempt  # type: ignore[attr-defined]
    return handler


async def read_json(request: web.Request) -> Any:
    if not request.body_exists:
        raise BadRequest("a JSON body is required", code="malformed_json")
    ctype = request.content_type
    if ctype not in ("application/json", "") and not ctype.endswith("+json"):
        raise ApiError(
            f"send the body as application/json, not {ctype}", status=415, code="unsupported_media_type"
        )
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise TooLarge(f"the body is larger than the {request.app[DM].config.max_body_bytes} bytes allowed") from None
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        msg = e.msg if isinstance(e, json.JSONDecodeError) else "not UTF-8"
        raise BadRequest(f"the body is not valid JSON: {msg}", code="malformed_json") from None
    except RecursionError:
        raise BadRequest("the body is nested too deeply", code="malformed_json") from None


def _validate(model: type[pydantic.BaseModel], data: Any, *, strict: bool) -> pydantic.BaseModel:
    if strict and not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object", code="malformed_json")
    try:
        return model.model_validate(data, strict=strict)
    except pydantic.ValidationError as e:
        fld, msg = validation_message(e)
        raise Invalid(msg, field=fld) from None
