"""OpenAPI 3.1 document generated from the route registry's own schemas."""

from __future__ import annotations

import re
from typing import Any

import pydantic
from pydantic.json_schema import models_json_schema

from dmd import __version__
from dmd.api.registry import Route
from dmd.schemas import MAX_ID, ErrorOut

_PARAM = re.compile(r"\{(\w+)\}")
_ERROR_TEXT = {
    400: "Malformed request", 401: "Not authenticated", 403: "Forbidden", 404: "Not found or not yours",
    409: "Conflict", 413: "Body too large", 415: "Body is not JSON", 422: "A field is invalid",
    429: "Too many attempts", 507: "Not enough free space on dmd",
}


def _models(routes: list[Route]) -> list[type[pydantic.BaseModel]]:
    seen: dict[str, type[pydantic.BaseModel]] = {"ErrorOut": ErrorOut}
    for r in routes:
        for m in (r.body, r.query, r.response):
            if isinstance(m, type) and issubclass(m, pydantic.BaseModel):
                seen[m.__name__] = m
    return list(seen.values())


def build(routes: list[Route]) -> dict[str, Any]:
    models = _models(routes)
    keyed, defs = models_json_schema(
        [(m, "validation" if m.__name__.endswith("In") else "serialization") for m in models],
        ref_template="#/components/schemas/{model}",
    )
    ref = {m: keyed[(m, "validation" if m.__name__.endswith("In") else "serialization")] for m in models}
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        op: dict[str, Any] = {
            "operationId": f"{r.method.lower()}_{re.sub(r'[^a-z0-9]+', '_', r.path.lower()).strip('_')}",
            "summary": r.summary,
            "tags": [r.tag],
            "parameters": [
                {"name": p, "in": "path", "required": True,
                 "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID}}
                for p in _PARAM.findall(r.path)
            ],
            "responses": {},
        }
        if r.auth in ("user", "admin"):
            op["security"] = [{"bearer": []}, {"session": []}]
        if r.auth == "admin":
            op["description"] = "Administrators only."
        if r.query is not None:
            qs = r.query.model_json_schema(ref_template="#/components/schemas/{model}")
            required = set(qs.get("required", []))
            for name, schema in qs.get("properties", {}).items():
                op["parameters"].append(
                    {"name": name, "in": "query", "required": name in required, "schema": schema}
                )
        if r.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref[r.body]}},
            }
        if r.response is not None:
            if r.response in ref:
                schema = ref[r.response]
            else:  # a plain type such as list[Model]
                schema = pydantic.TypeAdapter(r.response).json_schema(
                    ref_template="#/components/schemas/{model}", mode="serialization"
                )
                for name, d in schema.pop("$defs", {}).items():
                    defs.setdefault("$defs", {}).setdefault(name, d)
            op["responses"][str(r.status)] = {
                "description": "OK",
                "content": {"application/json": {"schema": schema}},
            }
        else:
            op["responses"][str(r.status)] = {"description": "Done"}
        codes = set(r.errors)
        if r.body is not None:
            codes |= {400, 413, 415, 422}
        if r.query is not None:
            codes.add(422)
        # Any route reads a bearer token when one is sent: a bad one is a 401, and an address
        # held back by failed authentications (dmd.auth.throttle) gets a 429 before its token
        # is looked up.
        codes |= {401, 429}
        if r.auth == "admin":
            codes.add(403)
        for c in sorted(codes):
            op["responses"][str(c)] = {
                "description": _ERROR_TEXT.get(c, "Error"),
                "content": {"application/json": {"schema": ref[ErrorOut]}},
            }
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "DM API", "version": __version__,
                 "description": "Errors are {\"error\": {\"code\", \"message\", \"field\"?}}. "
                                "Cookie-authenticated writes need the X-CSRF-Token header."},
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "A personal API token"},
                "session": {"type": "apiKey", "in": "cookie", "name": "dm_session"},
            },
        },
    }
