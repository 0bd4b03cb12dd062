"""TCP connections from inside a container's network namespace (for SSH's ``-L`` to localhost).

A program in an instance that listens on 127.0.0.1 only (VS Code's server, Jupyter started
with its defaults) cannot be reached at the container's address. The agent (root on the host)
makes the socket inside the container's network namespace (``/proc/PID/ns/net``): a thread of
its own calls ``setns(2)`` (which changes only the calling thread), creates the socket, and
ends; the socket stays in that namespace for its whole life and is then used from the loop as
any other. The thread is never reused, so no other work ever runs in the container's namespace.

Public API::

    sock = await socket_in_netns(pid, socket.AF_INET)   # OSError when setns is not allowed
    available_for(pid)                                   # whether it can work here (root, /proc)
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
import threading

__all__ = ["CLONE_NEWNET", "available_for", "socket_in_netns"]

CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int, nstype: int) -> None:
    if _libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def available_for(pid: int | None) -> bool:
    """Whether the agent may enter the namespace of ``pid`` (root, its /proc entry visible)."""
    return pid is not None and os.geteuid() == 0 and os.path.exists(f"/proc/{int(pid)}/ns/net")


async def socket_in_netns(pid: int, family: int = socket.AF_INET) -> socket.socket:
    """A new non-blocking TCP socket in the network namespace of process ``pid``."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[socket.socket] = loop.create_future()

    def deliver(result: socket.socket | BaseException) -> None:
        if done.cancelled():
            if isinstance(result, socket.socket):
                result.close()
            return
        if isinstance(result, BaseException):
            done.set_exception(result)
        else:
            done.set_result(result)

    def work() -> None:
        result: socket.socket | BaseException
        try:
            fd = os.open(f"/proc/{int(pid)}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd, CLONE_NEWNET)  # this thread only; it ends right after
            finally:
                os.close(fd)
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            result = sock
        except BaseException as exc:  # handed to the waiting coroutine
            result = exc
        loop.call_soon_threadsafe(deliver, result)

    thread = threading.Thread(target=work, name=f"dm-netns-{pid}", daemon=True)
    thread.start()
    try:
        return await done
    finally:
        # The thread has delivered (or is about to): it ends without touching anything else.
        await asyncio.to_thread(thread.join, 5)
