"""The fallback forwarder: an asyncio relay per map, for hosts without usable iptables.

TCP: a listener on every address (IPv4 and IPv6) of host_port; each accepted connection is
relayed to the container with bounded buffers (a side is read only while the other drains) and
half-closes passed on. UDP: one IPv4 socket on host_port; each client gets its own upstream
socket to the container, dropped after IDLE_S of silence; datagrams are dropped, never queued
without bound, when a side cannot keep up. Removing a map closes its listener at once (new
connections are refused); connections already relayed run on until either end closes them.
A changed target (the container restarted with a new address) applies to new connections.

Public API::

    proxy = ProxyForwarder()
    failures = await proxy.apply([Forward("tcp", 20080, "172.17.0.2", 80)])   # {("tcp", 20080): (code, msg)}
    proxy.held()                                                               # {"tcp": {20080}, "udp": set()}
    await proxy.close()
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Sequence
from typing import Any, cast

from agent.ports.base import Failures, Forward, PortKey

__all__ = ["ProxyForwarder"]

log = logging.getLogger(__name__)

WRITE_HIGH = 1 << 20  # bytes a side's transport buffers before its peer stops reading
CONNECT_TIMEOUT_S = 10.0
IDLE_S = 60.0
UDP_MAX_CLIENTS = 1024
UDP_MAX_PENDING = 64  # datagrams held per client while its upstream socket opens
UDP_MAX_BUFFER = 256 * 1024  # bytes a UDP transport may hold before datagrams are dropped


def _buffered(transport: asyncio.DatagramTransport) -> int:
    # Selector datagram transports have it; the stubs only declare it for write transports.
    size: int = getattr(transport, "get_write_buffer_size", lambda: 0)()
    return size


class _Side(asyncio.Protocol):
    """One end of a relayed TCP connection: what it reads is written to its peer's transport.

    Protocols rather than streams: no reader buffers and no task per direction, so a relay
    costs one write per read. Backpressure is the transports' own: when a side's write buffer
    passes its high-water mark (pause_writing), its peer stops reading until it drains."""

    def __init__(self, listener: _TcpListener, *, accepted: bool = False) -> None:
        self.listener = listener
        self.accepted = accepted  # the client's side: it dials the container once it is made
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.eof = False  # the other end half-closed before the peer was connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=WRITE_HIGH)
        self.listener.transports.add(self.transport)
        if self.accepted:
            self.transport.pause_reading()  # nothing to write what it sends to yet
            self.listener.dial(self)

    def link(self, peer: _Side) -> None:
        self.peer, peer.peer = peer, self

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.transport.is_closing():
            peer.transport.write(data)

    def eof_received(self) -> bool:
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.transport.is_closing():
            if peer.transport.can_write_eof():
                peer.transport.write_eof()  # half-close passed on; the other direction goes on
        else:
            self.eof = True
        return True

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None and not self.peer.transport.is_closing():
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.listener.transports.discard(self.transport)
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.transport.is_closing():
            if exc is None:
                peer.transport.close()  # after what is buffered for it
            else:
                peer.transport.abort()  # a reset on either side ends both directions


class _TcpListener:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.server: asyncio.Server | None = None
        self.transports: set[asyncio.Transport] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Side(self, accepted=True), host=None, port=port)

    def dial(self, client: _Side) -> None:
        task = asyncio.get_running_loop().create_task(self._connect(client))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _connect(self, client: _Side) -> None:
        assert client.transport is not None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                _, upstream = await loop.create_connection(lambda: _Side(self), *self.target)
        except (OSError, TimeoutError) as e:
            log.info("port proxy: cannot reach %s:%d: %s", *self.target, e)
            client.transport.abort()
            return
        if client.transport.is_closing():
            if upstream.transport is not None:
                upstream.transport.close()
            return
        client.link(upstream)
        if client.eof and upstream.transport is not None and upstream.transport.can_write_eof():
            upstream.transport.write_eof()
        client.transport.resume_reading()

    async def close(self, *, connections: bool) -> None:
        if self.server is not None:
            # No new accepts; then one turn of the loop, so that a connection accepted already
            # becomes a connection before the server closes (asyncio 3.11 asserts on one that
            # attaches to a closed server).
            loop = asyncio.get_running_loop()
            for sock in self.server.sockets:
                loop.remove_reader(sock.fileno())
            await asyncio.sleep(0)
            self.server.close()  # the listening sockets only: relayed connections go on
        if connections:
            for task in list(self.tasks):
                task.cancel()
            for transport in list(self.transports):
                transport.abort()


class _UdpSession(asyncio.DatagramProtocol):
    """One client's upstream socket to the container."""

    def __init__(self, relay: _UdpRelay, client: Any) -> None:
        self.relay = relay
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: list[bytes] = []
        self.last = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # 3.11's is no DatagramTransport subclass
        for data in self.pending:
            self.send(data)
        self.pending.clear()

    def send(self, data: bytes) -> None:
        self.last = time.monotonic()
        if self.transport is None:
            if len(self.pending) < UDP_MAX_PENDING:
                self.pending.append(data)
        elif _buffered(self.transport) < UDP_MAX_BUFFER:
            self.transport.sendto(data)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.last = time.monotonic()
        self.relay.reply(data, self.client)

    def error_received(self, exc: Exception) -> None:
        pass  # e.g. ICMP port unreachable while the container's program restarts

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _UdpRelay(asyncio.DatagramProtocol):
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.transport: asyncio.DatagramTransport | None = None
        self.sessions: dict[Any, _UdpSession] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.sweeper: asyncio.Task[None] | None = None

    async def start(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=("0.0.0.0", port))
        self.sweeper = loop.create_task(self._sweep())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # 3.11's is no DatagramTransport subclass

    def datagram_received(self, data: bytes, addr: Any) -> None:
        session = self.sessions.get(addr)
        if session is None:
            if len(self.sessions) >= UDP_MAX_CLIENTS:
                return
            session = self.sessions[addr] = _UdpSession(self, addr)
            task = asyncio.get_running_loop().create_task(self._open(session))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        session.send(data)

    async def _open(self, session: _UdpSession) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_datagram_endpoint(lambda: session, remote_addr=self.target)
        except OSError as e:
            log.info("port proxy: cannot reach udp %s:%d: %s", *self.target, e)
            if self.sessions.get(session.client) is session:
                del self.sessions[session.client]

    def reply(self, data: bytes, client: Any) -> None:
        if self.transport is not None and _buffered(self.transport) < UDP_MAX_BUFFER:
            self.transport.sendto(data, client)

    def retarget(self, target: tuple[str, int]) -> None:
        self.target = target
        self.drop_sessions()

    def drop_sessions(self) -> None:
        for session in self.sessions.values():
            session.close()
        self.sessions.clear()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(IDLE_S / 4)
            now = time.monotonic()
            for addr, session in list(self.sessions.items()):
                if now - session.last > IDLE_S:
                    session.close()
                    del self.sessions[addr]

    async def close(self) -> None:
        if self.sweeper is not None:
            self.sweeper.cancel()
        for task in list(self.tasks):
            task.cancel()
        self.drop_sessions()
        if self.transport is not None:
            self.transport.close()


class ProxyForwarder:
    def __init__(self) -> None:
        self._tcp: dict[int, _TcpListener] = {}
        self._udp: dict[int, _UdpRelay] = {}

    def held(self) -> dict[str, set[int]]:
        """The host ports our own listeners hold (not "busy" for the manager)."""
        return {"tcp": set(self._tcp), "udp": set(self._udp)}

    async def apply(self, forwards: Sequence[Forward]) -> Failures:
        """Listen on exactly the host ports of ``forwards``, relaying to their targets."""
        wanted: dict[PortKey, Forward] = {f.key: f for f in forwards}
        for port in [p for p in self._tcp if ("tcp", p) not in wanted]:
            await self._tcp.pop(port).close(connections=False)
        for port in [p for p in self._udp if ("udp", p) not in wanted]:
            await self._udp.pop(port).close()
        failures: Failures = {}
        for key, f in wanted.items():
            target = (f.target_ip, f.target_port)
            try:
                if f.protocol == "tcp":
                    if f.host_port in self._tcp:
                        self._tcp[f.host_port].target = target
                        continue
                    listener = _TcpListener(target)
                    await listener.start(f.host_port)
                    self._tcp[f.host_port] = listener
                else:
                    if f.host_port in self._udp:
                        if self._udp[f.host_port].target != target:
                            self._udp[f.host_port].retarget(target)
                        continue
                    relay = _UdpRelay(target)
                    await relay.start(f.host_port)
                    self._udp[f.host_port] = relay
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    failures[key] = ("port_busy", f"{f.protocol} port {f.host_port} is in use on this host")
                else:
                    failures[key] = ("forward_failed", f"cannot listen on {f.protocol} port {f.host_port}: "
                                                       f"{e.strerror or e}")
        return failures

    async def close(self) -> None:
        """Stop every listener and relayed connection (the agent is stopping)."""
        for listener in self._tcp.values():
            await listener.close(connections=True)
        for relay in self._udp.values():
            await relay.close()
        self._tcp.clear()
        self._udp.clear()
        await asyncio.sleep(0)  # let the aborted transports call connection_lost
