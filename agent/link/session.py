"""The agent's link to dmd: one outgoing WebSocket, kept up for as long as the agent runs.

On every (re)connect the agent authenticates with its node credential (``Authorization:
Bearer``), sends ``hello`` (protocol range, version, full facts and a snapshot of its
state) and waits for ``welcome``. Then, concurrently: a ``heartbeat`` every
``heartbeat_s`` (dmd's value from ``welcome``), ``metrics`` every ``metrics_interval_s``,
``facts`` when they change (checked every 5 minutes), and requests from dmd, each run in
its own task under a time limit and answered with a reply (see :mod:`agent.handlers`).

When the link drops the reason is logged and the agent reconnects after a jittered
exponential backoff (1 s doubling to 60 s, reset once a link stayed up for 60 s). A
refused credential (HTTP 401/403 or close code 4001) is retried at the longest delay with
an error each time. ``node.deleted`` (or close code 4010) removes the credential from the
config file and ends :meth:`AgentLink.run` with status 0.

Public API::

    link = AgentLink(config, handlers=registry, streams=streams, state_provider=snapshot)
    status = await link.run()      # until stop() or node deletion; 0 on a clean end
    await link.stop()              # closes the link with code 1000

No globals and no signal handling here: several links may run in one process (dmd runs
one for its own node) and the CLI owns the signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import aiohttp

from agent import __version__, protocol
from agent.config import AgentConfig, ConfigError, save_config
from agent.handlers import BAD_REQUEST, HandlerError, HandlerRegistry, dispatch
from agent.link.backoff import Backoff, LinkTimings
from agent.link.connection import Connection, LinkEnded, Outcome, Stopped, close_name, describe
from agent.link.reporting import FactsProvider, Reporter
from agent.link.snapshot import snapshot_parts
from agent.streams import StreamHandlers

__all__ = ["AgentLink", "StateProvider"]

log = logging.getLogger("agent.link")

T = TypeVar("T")
StateProvider = Callable[[], Awaitable[protocol.Snapshot] | protocol.Snapshot]

MAX_REQUESTS_IN_FLIGHT = 64


class AgentLink:
    """The agent's side of the dmd link. See the module docstring."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        handlers: HandlerRegistry | None = None,
        streams: StreamHandlers | None = None,
        state_provider: StateProvider | None = None,
        facts_provider: FactsProvider | None = None,
        timings: LinkTimings | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self.timings = timings or LinkTimings()
        self._handlers = handlers if handlers is not None else HandlerRegistry()
        self._builtins = HandlerRegistry()
        self._builtins.register(protocol.Ping, self._handle_ping, timeout_s=self.timings.request_timeout_s)
        self._builtins.register(protocol.FactsRefresh, self._handle_facts_refresh,
                                timeout_s=self.timings.request_timeout_s)
        self._builtins.register(protocol.CredentialRotate, self._handle_credential_rotate,
                                timeout_s=self.timings.request_timeout_s)
        self._streams = streams
        self._state_provider = state_provider
        self._rng = rng
        self._reporter = Reporter(lambda: self.config, self.timings, facts_provider)
        self._stop_event = asyncio.Event()
        self._done = asyncio.Event()
        self._stopping = False
        self._running = False
        self._conn: Connection | None = None
        self._connected = False
        self._connects = 0
        self.last_error: str | None = None  # why the previous link ended (for status pages and tests)
        self.negotiated_protocol: int | None = None
        self.server_version: str | None = None
        # Which DM installation this node belongs to (from welcome): containers carry it as a
        # label, so two installations sharing one Docker Engine never touch each other's.
        self.installation_id: str | None = None

    # -- public --------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True between ``welcome`` and the end of that link."""
        return self._connected

    @property
    def connects(self) -> int:
        """How many links completed the handshake (welcome received) so far."""
        return self._connects

    async def run(self) -> int:
        """Keep the link up until :meth:`stop` (0) or the node is deleted (0).

        Returns 2 without connecting when the config has no credential."""
        if self._running:
            raise RuntimeError("AgentLink.run() is already running")
        if self.config.credential is None:
            log.error("no node credential in the config (the node was deleted or never joined); "
                      "run `dmc join <server-url> <token>`")
            return 2
        self._running = True
        self._done.clear()
        t = self.timings
        backoff = Backoff(t.backoff_initial_s, t.backoff_max_s, jitter=t.backoff_jitter, rng=self._rng)
        try:
            async with aiohttp.ClientSession(headers={"User-Agent": f"dmc/{__version__}"}) as session:
                while not self._stopping:
                    outcome = await self._attempt(session)
                    self.last_error = None if outcome.kind == "stopped" else outcome.reason
                    if outcome.kind == "deleted":
                        log.warning("dmd deleted this node (%s); forgetting the credential and stopping",
                                    outcome.reason)
                        await self._forget_credential()
                        return 0
                    if outcome.kind == "stopped" or self._stopping:
                        break
                    if outcome.up_for >= t.stable_after_s:
                        backoff.reset()
                    if outcome.kind in ("auth", "refused"):
                        delay = backoff.longest()
                        log.error("link to dmd refused: %s; retrying in %.2f s", outcome.reason, delay)
                    else:
                        delay = backoff.next()
                        log.warning("link to dmd down: %s; reconnecting in %.2f s", outcome.reason, delay)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._stop_event.wait()
            log.info("agent link stopped")
            return 0
        finally:
            self._connected = False
            self._conn = None
            self._running = False
            self._done.set()

    async def stop(self) -> None:
        """End run(): the link is closed with code 1000. Waits (bounded) for run() to end."""
        self._stopping = True
        self._stop_event.set()
        if self._running:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.timings.close_timeout_s + 5):
                    await self._done.wait()

    async def send_event(self, body: protocol.EventBody) -> bool:
        """Send an ``event``; False when no link is up (the next hello's snapshot carries the
        state instead)."""
        conn = self._conn
        if conn is None or not self._connected:
            return False
        try:
            await conn.send(protocol.notice_envelope(protocol.Event(body)))
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            return False
        return True

    # -- one connection -------------------------------------------------------------

    async def _interruptible(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` unless stop() comes first (then it is cancelled, Stopped raised)."""
        task = asyncio.ensure_future(coro)
        stopper = asyncio.ensure_future(self._stop_event.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if task.done() and not task.cancelled():
            return task.result()
        raise Stopped

    async def _attempt(self, session: aiohttp.ClientSession) -> Outcome:
        try:
            try:
                facts = await self._interruptible(self._reporter.collect_facts())
            except Stopped:
                raise
            except Exception as exc:  # connect anyway; facts follow later
                log.error("collecting host facts failed: %s", describe(exc), exc_info=exc)
                facts = {}
            return await self._connect_and_serve(session, facts)
        except Stopped:
            return Outcome("stopped", "stopped")
        except LinkEnded as ended:
            return ended.outcome

    async def _connect_and_serve(self, session: aiohttp.ClientSession, facts: dict[str, Any]) -> Outcome:
        url = self.config.ws_url
        credential = self.config.credential or ""
        try:
            ws = await self._interruptible(self._ws_connect(session, url, credential))
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (401, 403):
                return Outcome("auth", f"dmd refused the node credential (HTTP {exc.status})")
            return Outcome("dropped", f"WebSocket handshake with {url} failed: HTTP {exc.status} {exc.message}")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return Outcome("dropped", f"cannot connect to {url}: {describe(exc)}")
        conn = Connection(ws, self._streams.run if self._streams is not None else None)
        outcome: Outcome | None = None
        try:
            outcome = await self._serve(conn, facts)
            return outcome
        finally:
            self._connected = False
            self._conn = None
            await conn.close_streams(outcome.reason if outcome is not None else "the link ended")
            for task in list(conn.tasks):
                task.cancel()
            if conn.tasks:
                await asyncio.gather(*conn.tasks, return_exceptions=True)
            if not ws.closed:
                await self._close(ws, protocol.CLOSE_GOING_AWAY, "agent reconnecting")

    async def _ws_connect(
        self, session: aiohttp.ClientSession, url: str, credential: str
    ) -> aiohttp.ClientWebSocketResponse[Any]:
        async with asyncio.timeout(self.timings.connect_timeout_s):
            return await session.ws_connect(
                url,
                headers={"Authorization": f"Bearer {credential}"},
                heartbeat=self.config.heartbeat_s,
                max_msg_size=protocol.MAX_MESSAGE_BYTES,
            )

    async def _close(self, ws: aiohttp.ClientWebSocketResponse[Any], code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.timings.close_timeout_s):
                await ws.close(code=code, message=reason.encode()[:120])

    async def _serve(self, conn: Connection, facts: dict[str, Any]) -> Outcome:
        ws = conn.ws
        t = self.timings
        # -- handshake
        try:
            state = await self._interruptible(self._collect_state())
        except Stopped:
            await self._close(ws, protocol.CLOSE_NORMAL, "agent stopping")
            raise
        except Exception as exc:  # a broken provider must not end run()
            log.error("the state snapshot failed", exc_info=exc)
            await self._close(ws, 1011, "agent state snapshot failed")
            return Outcome("dropped", f"state snapshot failed: {describe(exc)}")
        try:
            parts = snapshot_parts(state)
            hello = protocol.Hello(
                node_id=self.config.node_id,
                agent_version=__version__,
                # The state follows in parts: dmd must speak protocol 2 (dmd has since it had parts).
                protocol=protocol.ProtocolRange(protocol.PROTOCOL_VERSION, protocol.PROTOCOL_VERSION),
                facts=facts,
                snapshot_parts=len(parts),
            )
            await conn.send(protocol.notice_envelope(hello))
            for part in parts:
                await conn.send(protocol.notice_envelope(part))
            welcome = await self._interruptible(self._receive_welcome(ws))
        except Stopped:
            await self._close(ws, protocol.CLOSE_NORMAL, "agent stopping")
            raise
        except protocol.ProtocolError as exc:
            await self._close(ws, exc.close_code, str(exc))
            return Outcome("dropped", f"handshake failed: {exc}")
        except TimeoutError:
            await self._close(ws, protocol.CLOSE_PROTOCOL, "no welcome")
            return Outcome("dropped", f"dmd sent no welcome within {t.welcome_timeout_s:g} s")
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            # dmd may have closed the link already (a refused credential): its close frame says why.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    msg = await ws.receive()
                if msg.type == aiohttp.WSMsgType.CLOSE:
                    return self._outcome_of(ws, msg)
            return Outcome("dropped", f"handshake failed: {describe(exc)}")

        heartbeat_s = welcome.heartbeat_s
        if heartbeat_s is None or not 0 < heartbeat_s <= 3600:
            heartbeat_s = self.config.heartbeat_s
        self.negotiated_protocol = welcome.protocol
        self.server_version = welcome.server_version
        self.installation_id = welcome.installation_id
        self._reporter.last_facts = facts
        self._conn = conn
        self._connected = True
        self._connects += 1
        up_since = time.monotonic()
        log.info("connected to dmd at %s as node %d (protocol %d, dmd %s, heartbeat %g s)",
                 self.config.server, self.config.node_id, self.negotiated_protocol,
                 self.server_version or "?", heartbeat_s)

        # -- the established link
        receiver = asyncio.create_task(self._receive_loop(conn), name="dmc-receive")
        senders = [
            asyncio.create_task(self._reporter.heartbeats(conn.send, heartbeat_s), name="dmc-heartbeat"),
            asyncio.create_task(self._reporter.metrics(conn.send), name="dmc-metrics"),
            asyncio.create_task(self._reporter.facts_changes(conn.send), name="dmc-facts"),
        ]
        stopper = asyncio.create_task(self._stop_event.wait(), name="dmc-stop")
        everything = {receiver, stopper, *senders}
        try:
            done, _ = await asyncio.wait(everything, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in everything:
                task.cancel()
            await asyncio.gather(*everything, return_exceptions=True)
        self._connected = False
        up_for = time.monotonic() - up_since
        if stopper in done:
            await self._close(ws, protocol.CLOSE_NORMAL, "agent stopping")
            return Outcome("stopped", "stopped", up_for)
        if receiver in done and not receiver.cancelled() and receiver.exception() is None:
            outcome = receiver.result()
            outcome.up_for = up_for
            return outcome
        failed = next((task for task in done if not task.cancelled() and task.exception() is not None), None)
        error = failed.exception() if failed is not None else None
        if isinstance(error, protocol.ProtocolError):  # a message of ours was too large
            log.error("%s", error)
            await self._close(ws, error.close_code, str(error))
        elif error is not None and not isinstance(error, ConnectionError | aiohttp.ClientError):
            log.error("agent link task failed", exc_info=error)
        reason = f"sending failed: {describe(error)}" if error is not None else "link task ended"
        return Outcome("dropped", reason, up_for)

    async def _receive_welcome(self, ws: aiohttp.ClientWebSocketResponse[Any]) -> protocol.Welcome:
        async with asyncio.timeout(self.timings.welcome_timeout_s):
            msg = await ws.receive()
        if msg.type != aiohttp.WSMsgType.TEXT:
            if msg.type == aiohttp.WSMsgType.BINARY:
                raise protocol.ProtocolError("binary frames are not part of the protocol")
            outcome = self._outcome_of(ws, msg)
            if outcome.kind == "dropped" and ws.close_code == protocol.CLOSE_PROTOCOL:
                # dmd does not accept our hello (most likely our protocol version): a retry
                # soon will not change that.
                outcome.kind = "refused"
            raise LinkEnded(outcome)
        env = protocol.decode(msg.data)
        if env.type == protocol.NODE_DELETED:
            await self._close(ws, protocol.CLOSE_NORMAL, "node deleted")
            raise LinkEnded(Outcome("deleted", "dmd sent node.deleted"))
        if env.type != protocol.WELCOME:
            raise protocol.ProtocolError(f"expected welcome, got {env.type}")
        try:
            welcome = protocol.parse(protocol.Welcome, {"node_id": self.config.node_id, **env.data})
        except protocol.DecodeError as exc:
            raise protocol.ProtocolError(f"welcome: {exc}") from None
        if welcome.protocol != protocol.PROTOCOL_VERSION:
            raise protocol.ProtocolError(f"welcome chose protocol {welcome.protocol!r}, which this agent does not "
                                         "speak")
        if welcome.node_id != self.config.node_id:
            raise protocol.ProtocolError(f"welcome is for node {welcome.node_id!r}, this is node {self.config.node_id}")
        return welcome

    def _outcome_of(self, ws: aiohttp.ClientWebSocketResponse[Any], msg: aiohttp.WSMessage) -> Outcome:
        """The outcome of a CLOSE / CLOSING / CLOSED / ERROR message."""
        if msg.type == aiohttp.WSMsgType.ERROR:
            exc = ws.exception() or msg.data
            return Outcome("dropped", f"link error: {describe(exc) if isinstance(exc, BaseException) else exc}")
        code = ws.close_code
        if msg.type == aiohttp.WSMsgType.CLOSE and isinstance(msg.data, int):
            code = msg.data
        reason = msg.extra if msg.type == aiohttp.WSMsgType.CLOSE and isinstance(msg.extra, str) else ""
        if code is None or msg.type != aiohttp.WSMsgType.CLOSE:
            exc = ws.exception()
            detail = f": {describe(exc)}" if exc is not None else ""
            return Outcome("dropped", f"connection lost without a close frame{detail}")
        text = f"dmd closed the link with code {close_name(code)}" + (f": {reason}" if reason else "")
        if code == protocol.CLOSE_DELETED:
            return Outcome("deleted", text)
        if code == protocol.CLOSE_AUTH:
            return Outcome("auth", text)
        return Outcome("dropped", text)

    # -- loops of an established link -------------------------------------------------

    async def _receive_loop(self, conn: Connection) -> Outcome:
        ws = conn.ws
        while True:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.TEXT:
                try:
                    env = protocol.decode(msg.data)
                except protocol.ProtocolError as exc:
                    await self._close(ws, exc.close_code, str(exc))
                    return Outcome("dropped", f"dmd sent a bad message ({exc}); closed with {exc.close_code}")
                if env.is_reply:
                    log.debug("reply %s from dmd ignored (no request of ours is outstanding)", env.id)
                elif env.type == protocol.NODE_DELETED:
                    await self._close(ws, protocol.CLOSE_NORMAL, "node deleted")
                    return Outcome("deleted", "dmd sent node.deleted")
                elif env.id is not None:
                    self._start_request(conn, env)
                else:
                    log.debug("notice %s from dmd ignored", env.type)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                try:
                    conn.mux.feed(msg.data)
                except protocol.ProtocolError as exc:
                    await self._close(ws, exc.close_code, str(exc))
                    return Outcome("dropped", f"dmd sent a bad stream frame ({exc}); closed with {exc.close_code}")
            elif msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                return self._outcome_of(ws, msg)

    def _start_request(self, conn: Connection, env: protocol.Envelope) -> None:
        if len(conn.tasks) >= MAX_REQUESTS_IN_FLIGHT:
            reply = protocol.reply_error(env.id or "", "busy", f"{MAX_REQUESTS_IN_FLIGHT} requests already running")
            task = asyncio.create_task(self._send_reply(conn, reply))
        else:
            task = asyncio.create_task(self._run_request(conn, env), name=f"dmc-request-{env.id}")
        conn.tasks.add(task)
        task.add_done_callback(conn.tasks.discard)

    async def _run_request(self, conn: Connection, env: protocol.Envelope) -> None:
        registry = self._handlers if env.type in self._handlers else self._builtins
        reply = await dispatch(registry, env, default_timeout_s=self.timings.request_timeout_s)
        await self._send_reply(conn, reply)

    async def _send_reply(self, conn: Connection, reply: protocol.Envelope) -> None:
        try:
            await conn.send(reply)
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            log.info("reply %s lost: %s", reply.id, describe(exc))

    # -- providers -------------------------------------------------------------------

    async def _collect_state(self) -> protocol.Snapshot:
        if self._state_provider is None:
            return protocol.Snapshot()
        state = self._state_provider()
        if inspect.isawaitable(state):
            state = await state
        if not isinstance(state, protocol.Snapshot):
            raise TypeError("the state provider must return a protocol.Snapshot")
        return state

    # -- built-in request handlers -------------------------------------------------------

    async def _handle_ping(self, req: protocol.Ping) -> protocol.PingReply:
        return protocol.PingReply(time.time())

    async def _handle_facts_refresh(self, req: protocol.FactsRefresh) -> protocol.NodeFacts:
        facts = await self._reporter.collect_facts()
        self._reporter.last_facts = facts
        try:
            return protocol.parse(protocol.NodeFacts, facts)
        except protocol.DecodeError as exc:
            raise HandlerError(protocol.INTERNAL_ERROR, f"this host's facts are malformed: {exc}") from None

    async def _handle_credential_rotate(self, req: protocol.CredentialRotate) -> protocol.Empty:
        try:
            new = self.config.replace(credential=req.credential)
        except ConfigError as exc:
            raise HandlerError(BAD_REQUEST, str(exc)) from None
        if new.credential is None:
            raise HandlerError(BAD_REQUEST, "credential is required")
        try:
            await asyncio.to_thread(save_config, new)  # on disk first: a reply means it is kept
        except OSError as exc:
            raise HandlerError("config_write_failed",
                               f"cannot save the new credential to {new.path}: {exc.strerror or exc}") from None
        self.config = new
        log.info("node credential rotated%s", f" and saved to {new.path}" if new.path else "")
        return protocol.Empty()

    async def _forget_credential(self) -> None:
        new = self.config.replace(credential=None)
        try:
            await asyncio.to_thread(save_config, new)
        except OSError as exc:
            log.error("could not remove the credential from %s: %s", new.path, exc.strerror or exc)
        self.config = new
