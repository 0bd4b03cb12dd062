"""The OpenAPI document covers every API route and is generated from the validating schemas."""

import re


def _refs(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "$ref":
                yield v
            else:
                yield from _refs(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _refs(v)


async def test_every_api_route_is_documented(client):
    doc = await (await client.get("/api/v1/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    documented = {(p, m.upper()) for p, ops in doc["paths"].items() for m in ops}
    served = set()
    for route in client.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if path and path.startswith("/api/") and route.method != "HEAD":
            served.add((path, route.method))
    assert served, "no API routes found"
    missing = served - documented
    assert not missing, f"routes missing from the OpenAPI document: {sorted(missing)}"
    assert not documented - served, "documented routes that are not served"


async def test_refs_resolve_and_schemas_match_validation(client):
    doc = await (await client.get("/api/v1/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    for ref in _refs(doc):
        name = re.sub(r"^#/components/schemas/", "", ref)
        assert name in schemas, ref
    user_create = schemas["UserCreateIn"]
    assert user_create["additionalProperties"] is False
    assert set(user_create["required"]) == {"email", "password"}
    assert user_create["properties"]["password"]["minLength"] == 8
    op = doc["paths"]["/api/v1/users"]["post"]
    assert {"401", "403", "422", "201"} <= set(op["responses"])
