"""Health and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from dmd import __version__
from dmd.api.registry import Api, Ctx, json_response
from dmd.schemas import HealthOut
from dmd.usecases import auth

api = Api()


@api.get("/health", summary="Liveness and storage check (version, database and session store: admins only)",
         tag="meta", auth="none", response=HealthOut)
async def health(ctx: Ctx) -> Any:
    dialect = await auth.health(ctx.dm)
    if ctx.identity is None or not ctx.identity.is_admin:
        # What runs where helps an attacker pick exploits: others learn only that dmd is up.
        return json_response(HealthOut(status="ok").model_dump(exclude_none=True))
    sessions = ctx.dm.config.sessions.split("://", 1)[0]
    return HealthOut(status="ok", version=__version__, database=dialect, sessions=sessions)


@api.get("/openapi.json", summary="This API's OpenAPI 3.1 document", tag="meta", auth="none")
async def openapi(ctx: Ctx) -> Any:
    return json_response(ctx.dm.openapi)
