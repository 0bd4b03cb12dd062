"""PLACEHOLDER until the lead's byte streams land on main: the documented signature only. At the
merge, main's module replaces this file whole."""

from __future__ import annotations

from agent.protocol.streams import CopyParams, ExecParams, Stream
from dmd.core import Dm
from dmd.errors import ApiError
from dmd.models import Actor


async def open_instance_stream(dm: Dm, actor: Actor, instance_id: int, opening: ExecParams | CopyParams, *,
                               via: str) -> Stream:
    raise ApiError("byte streams are not merged yet", status=503, code="unavailable")
