"""The ``ssh`` stream kind: dmd's SSH gateway hands the agent a stream, the agent serves SSH on it.

For an instance whose image has no SSH server, the gateway opens a stream of kind ``ssh``
(``SshParams``: the DM user, the login name when the gateway knows it, the user's public
keys) and copies the client's SSH bytes onto it; end-to-end encryption runs between the client
and this agent. The agent runs :class:`~agent.access.sshserver.SshServer` on one end of a
socket pair and copies between the other end and the stream (:func:`serve_ssh_stream`), with
each direction's end passed on as a half close.

The node's host key (:mod:`agent.access.hostkey`) is part of the node's facts
(``ssh_host_key``, an OpenSSH public key line) so that dmd can print known_hosts entries.

Public API (a feature of the agent, see :mod:`agent.features`)::

    ssh = AgentSsh(driver, host_key)        # host_key: asyncssh.SSHKey (hostkey.load_or_create)
    ssh.register_streams(streams)           # kind "ssh"
    ssh.facts()                             # {"ssh_host_key": "ssh-ed25519 AAAA... dm-node"}
    end = await serve_ssh_stream(stream, container, server=ssh.server)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import asyncssh

from agent import protocol as p
from agent.access.hostkey import public_line
from agent.access.sshserver import Grant, SshServer
from agent.features import Feature
from agent.handlers import HandlerError, HandlerRegistry
from agent.protocol.streams import CHUNK
from agent.protocol.types import ContainerInfo
from agent.runtime.driver import RuntimeDriver
from agent.streams import StreamHandlers

__all__ = ["MAX_KEYS", "MAX_KEY_CHARS", "AgentSsh", "serve_ssh_stream"]

log = logging.getLogger("agent.access.sshd")

MAX_KEYS = 1000
MAX_KEY_CHARS = 16384
END_GRACE_S = 10.0  # for the server to finish once the stream's side has ended


class AgentSsh(Feature):
    """SSH served by the agent for instances without a server (stream kind ``ssh``)."""

    name = "sshd"

    def __init__(self, driver: RuntimeDriver, host_key: asyncssh.SSHKey) -> None:
        self.server = SshServer(driver, host_key)
        self.host_key_line = public_line(host_key)

    def register(self, registry: HandlerRegistry) -> None:
        """No requests: this feature serves a stream kind."""

    def register_streams(self, streams: StreamHandlers) -> None:
        streams.register("ssh", self.ssh_stream)

    def facts(self) -> dict[str, str]:
        return {"ssh_host_key": self.host_key_line}

    async def ssh_stream(self, stream: p.Stream, container: ContainerInfo) -> p.StreamEnd:
        return await serve_ssh_stream(stream, container, server=self.server)


def _grant(params: p.SshParams | None) -> Grant:
    if params is None:
        raise HandlerError("invalid", "an ssh stream needs its parameters (ssh)")
    if len(params.keys) > MAX_KEYS:
        raise HandlerError("invalid", f"at most {MAX_KEYS} keys")
    for i, key in enumerate(params.keys):
        if not key.strip() or len(key) > MAX_KEY_CHARS or any(c in key for c in "\n\r\x00"):
            raise HandlerError("invalid", f"ssh.keys[{i}] must be one OpenSSH public key line")
    if len(params.login) > 64 or len(params.user) > 256:
        raise HandlerError("invalid", "ssh.login or ssh.user is too long")
    return Grant(keys=list(params.keys), login=params.login, user=params.user)


async def serve_ssh_stream(stream: p.Stream, container: ContainerInfo, *, server: SshServer) -> p.StreamEnd:
    """Serve SSH for ``container`` on ``stream`` until either side ends (see the module doc)."""
    grant = _grant(stream.open.ssh)
    instance = await server.open(container)  # before the stream is accepted: a failure refuses it
    ours, theirs = socket.socketpair()
    try:
        reader, writer = await asyncio.open_connection(sock=theirs)
    except BaseException:
        ours.close()
        theirs.close()
        await asyncio.to_thread(instance.close)
        raise
    stream.accept()
    serving = asyncio.ensure_future(server.serve(ours, instance, grant))

    async def up() -> None:  # server -> stream
        while data := await reader.read(CHUNK):
            await stream.write(data)
        await stream.write_eof()

    async def down() -> None:  # stream -> server
        while data := await stream.read():
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    sending, receiving = asyncio.ensure_future(up()), asyncio.ensure_future(down())
    end: p.StreamEnd | None = None
    try:
        # The server's side ends last in every case: it ends when the client's bytes end.
        try:
            await sending
        except p.StreamClosed as closed:
            end = closed.end
        except (ConnectionError, OSError):
            pass
    finally:
        receiving.cancel()
        await asyncio.gather(receiving, return_exceptions=True)
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        try:
            async with asyncio.timeout(END_GRACE_S):
                why = await asyncio.shield(serving)
        except TimeoutError:
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
            why = "the SSH server did not end in time"
        except BaseException:
            if not serving.done():
                serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
            raise
    return end or p.StreamEnd("closed", why)
