"""The browser terminal's WebSocket: `GET /instances/{id}/terminal/ws?csrf=…&cols=…&rows=…[&shell=/bin/zsh]`.

Everything is checked before the upgrade, so a refusal is a plain HTTP 4xx the page can show:
the caller's browser session (a cookie; bearer tokens are not for this route), the Origin header
(this site's own: a page elsewhere cannot open a terminal with the visitor's cookie), the session's
CSRF token (opening a shell is a write), and then the use case, which checks that the caller may
use the instance (its owner or an administrator, as for start/stop and its logs), that it runs,
and the caller's limit on open streams. An instance the caller may not use is a 403 whether or
not it exists.

Then the socket is a pipe to an exec stream with a TTY (the shell the agent picks):

* browser → dmd: binary frames are keystrokes (bytes for the shell's stdin, at most
  ``MAX_INPUT`` per frame: terminal.js splits a large paste); text frames are JSON controls,
  today ``{"resize": [cols, rows]}`` (1..1000 each). A malformed control is answered with
  ``{"error": …}`` and ignored.
* dmd → browser: binary frames are the terminal's output; one text frame
  ``{"end": {"code", "reason", "exit_status"}}`` says how the session ended, then the socket closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp_session import get_session

from agent import protocol as p
from dmd.auth import csrf
from dmd.auth.flows import actor_of
from dmd.errors import ApiError, BadRequest, Forbidden, NotFound, Unauthorized
from dmd.net import same_origin
from dmd.pages.render import dm_of, identity, path_id
from dmd.state import Identity
from dmd.usecases import streams as streams_uc

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

MAX_INPUT = 64 * 1024  # bytes in one frame from the browser (keystrokes, a piece of a paste)
MAX_SIZE = 1000  # columns and rows, each
SHELL_RE = re.compile(r"/[A-Za-z0-9._+/-]{1,254}")  # a path, never a command line
DEFAULT_COLS, DEFAULT_ROWS = 80, 24
HEARTBEAT_S = 30.0  # pings keep proxies from closing an idle terminal and find dead browsers
BROWSER_CLOSED = "the browser closed the terminal"


def bounded_size(value: Any) -> int | None:
    """A terminal dimension from the browser: an integer 1..MAX_SIZE, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = int(value) if value.isdigit() and len(value) <= 4 else None
    return value if isinstance(value, int) and 1 <= value <= MAX_SIZE else None


async def browser_session(request: web.Request) -> Identity:
    """The caller, when the request is a same-origin browser request with the session's CSRF
    token in the query (``csrf``); else 401/403 with the reason. Used before an upgrade."""
    ident = identity(request)
    if ident is None:
        raise Unauthorized("sign in first: this WebSocket opens with the browser's session")
    if ident.via != "session":
        raise Forbidden("this WebSocket is for the browser's session, not for API tokens", code="session_only")
    if not same_origin(request):
        raise Forbidden("the WebSocket's Origin is not this site", code="origin")
    session = await get_session(request)
    if not csrf.matches(request.query.get("csrf"), session.get("csrf")):
        raise Forbidden("missing or wrong CSRF token: pass the dm_csrf cookie's value as ?csrf=", code="csrf")
    return ident


@contextlib.asynccontextmanager
async def instance_stream(request: web.Request, ident: Identity, opening: p.StreamOpen,
                          via: str) -> AsyncIterator[p.Stream]:
    """The use case's stream while inside (it records the session and ends it on revocation); an
    instance the caller may not use is a 403 whether or not it exists."""
    async with contextlib.AsyncExitStack() as stack:
        try:
            opened = await stack.enter_async_context(streams_uc.instance_stream(
                dm_of(request), actor_of(request, ident), ident.user, opening.instance_id, opening, via=via))
        except ApiError as e:
            if e.status == 404 and e.code == "not_found":  # the instance, not something the agent did not find
                raise Forbidden("no instance you may use has this id", code="forbidden") from None
            raise
        yield opened.stream


def _control(text: str) -> dict[str, Any] | str:
    """A control message as the stream's CONTROL payload, or why it is refused."""
    try:
        msg = json.loads(text)
    except ValueError:
        return "a text frame must be a JSON control message"
    size = msg.get("resize") if isinstance(msg, dict) else None
    if not isinstance(size, list) or len(size) != 2:
        return 'the only control message is {"resize": [cols, rows]}'
    cols, rows = bounded_size(size[0]), bounded_size(size[1])
    if cols is None or rows is None:
        return f"cols and rows must be integers from 1 to {MAX_SIZE}"
    return {"resize": {"cols": cols, "rows": rows}}


async def _to_browser(ws: web.WebSocketResponse, stream: p.Stream) -> None:
    while chunk := await stream.read():
        await ws.send_bytes(chunk)
    end = await stream.wait_closed()
    await ws.send_str(json.dumps({"end": {"code": end.code, "reason": end.reason, "exit_status": end.exit_status}}))


async def _from_browser(ws: web.WebSocketResponse, stream: p.Stream) -> None:
    async for msg in ws:
        if msg.type == WSMsgType.BINARY:
            await stream.write(msg.data)
        elif msg.type == WSMsgType.TEXT:
            control = _control(msg.data)
            if isinstance(control, str):
                await ws.send_str(json.dumps({"error": control}))
            else:
                stream.control(control)
        elif msg.type == WSMsgType.ERROR:
            break


async def pump(ws: web.WebSocketResponse, stream: p.Stream) -> p.StreamEnd:
    """Until either side ends: the stream's output to the browser, the browser's input to the
    stream. Returns how the stream ended (closing it when the browser went first)."""
    out = asyncio.ensure_future(_to_browser(ws, stream))
    inp = asyncio.ensure_future(_from_browser(ws, stream))
    try:
        done, _ = await asyncio.wait({out, inp}, return_when=asyncio.FIRST_COMPLETED)
        if out in done:
            # The stream ended and the browser was told how: close the socket, which ends the
            # reading side as the browser answers the close.
            await ws.close()
            first, last = out, inp
        else:
            # The browser closed (or went away): end the shell too.
            await stream.close(p.StreamEnd("closed", BROWSER_CLOSED))
            first, last = inp, out
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(last), 5)
        for task in (first, last):
            if task.done() and not task.cancelled() and task.exception() is not None:
                exc = task.exception()
                if not isinstance(exc, ConnectionError | p.StreamClosed):
                    log.warning("terminal %s: %s", stream.id, exc)
    finally:
        for task in (out, inp):
            task.cancel()
        for task in (out, inp):
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, p.StreamClosed):
                await task
        if not stream.closed:
            # Also when this handler is cancelled: aiohttp does that when the browser's
            # connection drops.
            await stream.close(p.StreamEnd("closed", BROWSER_CLOSED))
        await ws.close()
    return await stream.wait_closed()


def json_error(e: ApiError) -> web.Response:
    """A refusal as the API words it (these routes answer scripts, not readers of a page)."""
    return web.json_response({"error": {"code": e.code, "message": e.message, "field": e.field}}, status=e.status)


@routes.get("/instances/{id}/terminal/ws")
async def terminal_ws(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse(max_msg_size=MAX_INPUT, heartbeat=HEARTBEAT_S)
    try:
        iid = path_id(request)
        if iid is None:  # malformed: no such instance, as every page says
            raise NotFound("no such instance")
        ident = await browser_session(request)
        cols = bounded_size(request.query.get("cols", str(DEFAULT_COLS)))
        rows = bounded_size(request.query.get("rows", str(DEFAULT_ROWS)))
        if cols is None or rows is None:
            raise BadRequest(f"cols and rows must be integers from 1 to {MAX_SIZE}", code="invalid")
        shell = request.query.get("shell", "")
        if shell and not SHELL_RE.fullmatch(shell):
            raise BadRequest("shell must be an absolute path of letters, digits and ._+-/ (for example /bin/bash)",
                             code="invalid", field="shell")
        if not ws.can_prepare(request).ok:
            raise BadRequest("this address takes a WebSocket only", code="websocket_only")
        # The user's shell when they chose one; else the agent picks (login shell, bash, sh).
        opening = p.StreamOpen("exec", iid, exec=p.ExecParams(cmd=[shell] if shell else [], tty=True, cols=cols,
                                                              rows=rows))
        async with contextlib.AsyncExitStack() as stack:
            stream = await stack.enter_async_context(instance_stream(request, ident, opening, "terminal"))
            moved = stack.pop_all()
    except ApiError as e:
        return json_error(e)
    async with moved:  # the session, from here on: it ends (and is recorded) whichever way this ends
        await ws.prepare(request)
        end = await pump(ws, stream)
        log.debug("terminal %s of instance %s ended: %s %s", stream.id, iid, end.code, end.reason)
    return ws


def setup(app: web.Application) -> None:
    app.router.add_routes(routes)
