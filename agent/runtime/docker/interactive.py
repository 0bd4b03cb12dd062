"""Interactive exec on the Docker Engine: a process with stdin open, on a terminal or not.

The Engine's exec API: create (``Tty``, ``AttachStdin``, ``ConsoleSize``), start on a hijacked
connection (aiodocker's exec ``Stream``), ``resize``, and the exit status from the exec's inspect.

Two things the Engine does not do by itself:

* **Detach keys.** On a TTY the Engine watches stdin for its detach sequence (ctrl-p ctrl-q by
  default) and holds back each key that could start it: a shell's ctrl-p would wait for the
  next key. DM sets a sequence nobody types (:data:`DETACH_KEYS`).
* **Stopping.** Closing the connection leaves the process running (the Engine has no call to
  end an exec). :meth:`DockerExecSession.close` signals it by its host pid from the exec's
  inspect (SIGHUP, as a terminal hang-up does, then SIGKILL), and only after checking that the
  process with that pid is in the container's cgroup: an agent in another pid namespace than
  dockerd's (where the number would name some other process) signals nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Mapping, Sequence
from typing import Any

import aiodocker
import aiohttp
from aiodocker.execs import Exec
from aiodocker.stream import Stream

from agent.runtime.docker.engine import engine_errors, translate_error
from agent.runtime.driver import ExecSession, check_terminal_size
from agent.runtime.errors import ConflictError, DriverError, RuntimeFailedError

__all__ = ["DETACH_KEYS", "DockerExecSession", "start_exec"]

log = logging.getLogger("agent.runtime.docker")

# The Engine's detach sequence on a TTY: keys are held back only while they match its start,
# so the sequence starts with a key terminals rarely send (ctrl-@, NUL) and is too long to type by chance.
DETACH_KEYS = "ctrl-@,ctrl-^,ctrl-@,ctrl-_,ctrl-@,ctrl-^,ctrl-@,ctrl-_"
HANGUP_GRACE_S = 2.0  # after SIGHUP, before SIGKILL


async def start_exec(
    docker: aiodocker.Docker,
    ref: str,
    what: str,
    argv: Sequence[str],
    *,
    tty: bool,
    user: str | None,
    env: Mapping[str, str] | None,
    workdir: str | None,
    cols: int,
    rows: int,
    container_id: str,
) -> DockerExecSession:
    """Create and start the exec; the caller has checked the arguments."""
    payload: dict[str, Any] = {
        "AttachStdin": True,
        "AttachStdout": True,
        "AttachStderr": True,
        "Tty": tty,
        "Cmd": list(argv),
        "Env": [f"{k}={v}" for k, v in (env or {}).items()],
        "User": user or "",
        "WorkingDir": workdir or "",
        "DetachKeys": DETACH_KEYS,
    }
    if tty:
        payload["ConsoleSize"] = [rows, cols]  # API 1.42+; older engines ignore it (resized below)
    with engine_errors(what):
        created = await docker._query_json(f"containers/{ref}/exec", method="POST", data=payload)
        execution = Exec(docker, str(created["Id"]), tty=tty)
        stream = execution.start(detach=False)
        await stream.__aenter__()  # the hijacked connection is up once this returns
    session = DockerExecSession(execution, stream, tty=tty, what=what, container_id=container_id)
    if tty:
        # Engines before API 1.42 start the terminal at 0x0: the size follows at once (a program
        # that reads it in its first milliseconds may still see 0x0, as with `docker exec -t`).
        try:
            await session.resize(cols, rows)
        except DriverError as exc:
            log.debug("%s: first resize: %s", what, exc)
    return session


class DockerExecSession(ExecSession):
    """One exec: its hijacked connection and its id (see the module documentation)."""

    def __init__(self, execution: Exec, stream: Stream, *, tty: bool, what: str, container_id: str) -> None:
        self._exec = execution
        self._stream = stream
        self._tty = tty
        self._what = what
        self._container_id = container_id
        self._ended = False
        self._closed = False
        self._exit: int | None = None

    async def read(self) -> tuple[int, bytes]:
        if self._ended:
            return 0, b""
        try:
            message = await self._stream.read_out()
        except (aiohttp.ClientError, OSError, RuntimeError) as exc:
            if self._closed:
                message = None
            else:
                raise translate_error(exc, f"{self._what}: output") from exc
        if message is None:
            self._ended = True
            return 0, b""
        return (1 if self._tty or message.stream != 2 else 2), bytes(message.data)

    async def write(self, data: bytes) -> None:
        if not data:
            return
        if self._closed:
            raise ConflictError(f"{self._what}: the session is closed")
        try:
            await self._stream.write_in(data)
        except (AssertionError, RuntimeError, aiohttp.ClientError, OSError) as exc:  # the connection went
            raise ConflictError(f"{self._what}: the process's input is closed ({type(exc).__name__})") from None

    async def write_eof(self) -> None:
        # aiodocker's Stream has no half close: its response's transport has.
        response = getattr(self._stream, "_resp", None)
        connection = getattr(response, "connection", None)
        transport = getattr(connection, "transport", None)
        if transport is not None and transport.can_write_eof() and not transport.is_closing():
            with contextlib.suppress(OSError, RuntimeError):
                transport.write_eof()

    async def resize(self, cols: int, rows: int) -> None:
        check_terminal_size(cols, rows)
        if not self._tty or self._closed:
            return
        try:
            with engine_errors(f"{self._what}: resize"):
                await self._exec.resize(h=rows, w=cols)
        except ConflictError:
            return  # the process ended meanwhile (or has not begun to run): nothing to resize
        except DriverError as exc:
            if any(word in exc.message.lower() for word in ("not running", "stopped", "no such exec")):
                return  # the process ended meanwhile
            raise

    async def wait(self) -> int:
        if self._exit is not None:
            return self._exit
        with engine_errors(f"{self._what}: exit status"):
            for _ in range(250):  # the exec may be reported running for a moment after its output ends
                info = await self._exec.inspect()
                if not info.get("Running") and info.get("ExitCode") is not None:
                    self._exit = int(info["ExitCode"])
                    return self._exit
                await asyncio.sleep(0.02)
        raise RuntimeFailedError(f"{self._what}: the Docker Engine did not report the exit status")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._stop()
        finally:
            with contextlib.suppress(Exception):
                await self._stream.close()

    async def _stop(self) -> None:
        """Hang the process up (then kill it) when it still runs; see the module documentation."""
        try:
            info = await self._exec.inspect()
        except Exception:  # the exec or the engine is gone: nothing to stop that we can name
            return
        pid = info.get("Pid")
        if not info.get("Running") or not isinstance(pid, int) or pid <= 0 or not self._in_container(pid):
            return
        for sig, grace in ((signal.SIGHUP, HANGUP_GRACE_S), (signal.SIGKILL, 0.0)):
            try:
                os.kill(pid, sig)
            except OSError:
                return
            deadline = asyncio.get_running_loop().time() + grace
            while asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
                try:
                    if not (await self._exec.inspect()).get("Running"):
                        return
                except Exception:
                    return

    def _in_container(self, pid: int) -> bool:
        """Whether the process ``pid`` names here is in the container's cgroup (a few hundred
        bytes from /proc: no need to leave the loop)."""
        if len(self._container_id) != 64:
            return False
        try:
            with open(f"/proc/{pid}/cgroup", encoding="utf-8", errors="replace") as fh:
                return self._container_id in fh.read(65536)
        except OSError:
            return False
