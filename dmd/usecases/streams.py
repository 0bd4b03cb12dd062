"""Sessions into an instance over its node's link: terminals, SSH, tunnels, file copies, log follows.

One use case opens them all (:func:`instance_stream`): it checks that the actor may use the
instance (its owner, or an administrator: the rule of start and stop) and that it is running,
holds the user to ``streams_per_user`` open sessions (429), opens the stream on the node's link,
registers it with the live sessions (so revoking access ends it) and records one audit entry
when it opens and one when it closes (who, which instance, how, bytes each way, how long, why
it ended).

Public API::

    async with instance_stream(dm, actor, user, instance_id, p.StreamOpen("exec", id, exec=...),
                               via="terminal") as opened:
        opened.stream.read() / write() ...      # ends (read b"") when access is revoked
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from agent import protocol as p
from dmd import capabilities
from dmd.core import Dm
from dmd.errors import ApiError, Conflict, TooManyRequests
from dmd.models import Actor, Instance, User
from dmd.queries import audit
from dmd.queries import instances as svc
from dmd.queries import nodes as node_svc

__all__ = ["VIAS", "Opened", "StreamFailed", "instance_stream", "record_session", "stream_failed"]

log = logging.getLogger("dmd.streams")

VIAS = ("terminal", "ssh", "tunnel", "files", "logs")

# What a kind of stream needs of the node's runtime (see agent.runtime Capabilities).
_NEEDS = {"exec": "exec_tty", "copy": "file_copy", "logs": "logs_follow", "ssh": "exec_tty"}

# How a stream ended (the agent's codes) as HTTP statuses; anything else is the node's failure.
_STATUS = {"not_running": 409, "not_found": 404, "limit": 429, "unsupported": 409, "conflict": 409,
           "invalid": 422, "refused": 502, "unreachable": 502, "timeout": 504, "link_lost": 503}


class StreamFailed(ApiError):
    status, code = 502, "stream_refused"


def stream_failed(end: p.StreamEnd, what: str) -> StreamFailed:
    """A refused or failed stream as the error a handler answers with (one table for all)."""
    return StreamFailed(f"{what}: {end.reason or end.code}", code=f"stream_{end.code}"[:64],
                        status=_STATUS.get(end.code, 502))


@dataclass(slots=True)
class Opened:
    stream: p.Stream
    instance: Instance
    via: str


async def _check(dm: Dm, user: User, instance_id: int, opening: p.StreamOpen) -> Instance:
    async with dm.db.read() as conn:
        inst = await svc.get_visible(conn, user, instance_id)  # owner or administrator; else 404
        node = await node_svc.get(conn, inst.node_id)
    if inst.desired == "deleted":
        raise Conflict("this instance is being deleted", code="deleting")
    if inst.status != "running":
        raise Conflict(f"instance {inst.name} is not running (it is {inst.status})", code="not_running")
    need = _NEEDS.get(opening.kind)
    if need is not None:
        capabilities.require(node, need)
    return inst


@contextlib.asynccontextmanager
async def instance_stream(dm: Dm, actor: Actor, user: User, instance_id: int, opening: p.StreamOpen, *,
                          via: str, key_id: int | None = None) -> AsyncIterator[Opened]:
    """Open a stream into the instance for ``user`` (see the module docstring)."""
    if via not in VIAS:
        raise ValueError(f"unknown via {via!r}")
    inst = await _check(dm, user, instance_id, opening)
    limit = dm.config.streams_per_user
    if dm.live.count(user_id=user.id) >= limit:
        raise TooManyRequests(f"you already have {limit} terminals, SSH sessions, tunnels or file copies open; "
                              "close one first", code="too_many_sessions")
    opening = p.StreamOpen(opening.kind, inst.id, opening.exec, opening.tcp, opening.copy, opening.logs,
                           opening.ssh)
    try:
        stream = await dm.hub.open_stream(inst.node_id, opening)
    except p.StreamRefused as e:
        raise stream_failed(e.end, "the node refused") from None

    async def end(reason: str) -> None:
        await stream.close(p.StreamEnd("revoked", reason))

    session = dm.live.add(user_id=user.id, instance_id=inst.id, via=via, end=end, key_id=key_id)
    opened_at = time.monotonic()
    await record_session(dm, actor, inst, "session.open", via=via, kind=opening.kind, session=session.id)
    try:
        yield Opened(stream, inst, via)
    finally:
        dm.live.remove(session)
        await stream.close(p.StreamEnd("closed", "closed by dmd"))
        end_state = stream.end or p.StreamEnd()
        with contextlib.suppress(Exception):  # the audit must not turn a closed session into an error
            await record_session(
                dm, actor, inst, "session.close", via=via, kind=opening.kind, session=session.id,
                bytes_in=stream.bytes_out, bytes_out=stream.bytes_in,  # as the instance sees them
                seconds=round(time.monotonic() - opened_at, 3), end=end_state.code, reason=end_state.reason[:200],
                exit_status=end_state.exit_status,
            )


async def record_session(dm: Dm, actor: Actor, inst: Instance, action: str, **detail: object) -> None:
    async with dm.db.begin() as conn:
        await audit.record(conn, actor, action, "instance", inst.id, name=inst.name, **detail)

