"""Guards that fail a test which leaves work behind or blocks its event loop.

Modelled on Home Assistant's suite (``verify_cleanup`` in its tests/conftest.py,
``homeassistant/block_async_io.py`` and ``util/loop.py``), fitted to pytest-asyncio's loops.
Loaded as a plugin by tests/conftest.py; nothing here is imported by dmd or the agent.

* **Left behind.** When a test's event loop is closed, nothing the test or its fixtures started
  may still be pending on it: no task, no timer (``call_later``) that is not cancelled. A
  module-scoped loop (``loop_scope="module"``) is checked when its module is done. When a test
  is torn down, no thread started during it may be alive (after a short grace for threads that
  are already ending, such as aiosqlite's once its connection is closed).
* **Blocking calls on the loop.** While a coroutine runs on an event loop, these raise
  :class:`BlockingCallError` at the call site and are recorded, so that code which catches and
  logs the error still fails its test: ``time.sleep``; a blocking socket's connect, accept,
  recv or send and DNS lookups of names; ``sqlite3`` (connecting, running or fetching a
  statement); waiting for a child process (``subprocess.run``, ``Popen.wait``/``communicate``,
  ``os.system``); opening a file of 1 MiB or more. "On the loop" means the calling thread has
  a running loop, as Home Assistant's ``check_loop`` does: the same call in a worker thread
  (``asyncio.to_thread``, the default executor, aiosqlite's connection thread) is allowed.
* **Debug mode.** Every loop runs in asyncio's debug mode (``asyncio_debug`` in pyproject.toml),
  which records where each task and callback was made (the reports below name it) and refuses
  loop calls from other threads. Whatever a loop hands its exception handler fails the test:
  a task's exception never retrieved, an exception in a callback, an aiohttp session never
  closed. "coroutine ... was never awaited" is an error through a warning filter in
  pyproject.toml.

``@pytest.mark.allow_blocking(reason="...")`` lets one test block its loop on purpose.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import ipaddress
import linecache
import os
import re
import socket
import sqlite3
import sqlite3.dbapi2
import stat
import subprocess
import sys
import sysconfig
import threading
import time
import types
import weakref
from asyncio.events import _get_running_loop  # the C accessor: one thread-state read
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

REPO = Path(__file__).resolve().parents[1]
# Python's own library and the installed packages: a report names the first place outside them.
_LIBRARY = tuple({os.path.join(sysconfig.get_paths()[k], "") for k in ("stdlib", "platstdlib", "purelib", "platlib")})
# Reading a file of this size on the loop stalls every connection for milliseconds or more (and
# far more when it is not in the page cache); small reads (templates, configuration) cost
# microseconds and are left alone.
LARGE_FILE = 1 << 20
# Debug mode logs a callback that holds the loop longer than this. Two cores shared by several
# test runs make 0.1 s (asyncio's default) noise; a second is still far from any normal step.
SLOW_CALLBACK = float(os.environ.get("DM_TEST_SLOW_CALLBACK", "1.0"))
# How long teardown waits for new threads that are already finishing before it calls them left.
THREAD_GRACE = 2.0


class BlockingCallError(RuntimeError):
    """A coroutine made a blocking call on its event loop."""


class _State:
    """What the guards have found during the current test (process-wide: loops in other threads
    report here too)."""

    def __init__(self) -> None:
        self.allowed: str | None = None  # why blocking is allowed now (an allow_blocking mark, a plain fixture)
        self.problems: list[str] = []
        self.loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


STATE = _State()


# --------------------------------------------------------------------------- reporting


def _ours(filename: str) -> bool:
    """Whether a frame is DM's code (or a test's), not Python's, a package's or this module's."""
    return not filename.startswith(_LIBRARY) and not filename.startswith("<") and filename != __file__


def _relative(path: str) -> str:
    return path[len(str(REPO)) + 1:] if path.startswith(f"{REPO}{os.sep}") else path


def _where(frame: types.FrameType | None) -> str:
    if frame is None:
        return "?"
    code = frame.f_code
    line = frame.f_lineno
    text = linecache.getline(code.co_filename, line).strip()
    return f"{_relative(code.co_filename)}:{line} in {code.co_name}" + (f": {text}" if text else "")


def call_site() -> str:
    """The caller's place (the first frame outside this module), and the first place in DM's own
    code above it when that is elsewhere: a blocking call inside a library names both."""
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    first, ours = frame, frame
    while ours is not None and not _ours(ours.f_code.co_filename):
        ours = ours.f_back
    if ours is None or ours is first:
        return _where(first)
    return f"{_where(ours)} (through {_where(first)})"


def blocking_call(what: str) -> None:
    """Report `what`, about to block the running loop of this thread: recorded, then raised."""
    if STATE.allowed is not None:
        return
    message = f"blocking call on the event loop: {what}, at {call_site()}"
    STATE.problems.append(message)
    raise BlockingCallError(message + " (run it with asyncio.to_thread, or use the asyncio equivalent)")


# --------------------------------------------------------------------------- blocking calls


def _guard(func: Callable[..., Any], what: str,
           blocks: Callable[..., bool] | None = None) -> Callable[..., Any]:
    """`func`, raising when it is called on a running loop's thread (and `blocks` says it would block)."""
    if getattr(func, "__dm_unguarded__", None) is not None:
        return func  # already guarded (the plugin is loaded once per process, but be safe)

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if _get_running_loop() is not None and (blocks is None or blocks(*args, **kwargs)):
            blocking_call(what)
        return func(*args, **kwargs)

    guarded.__dm_unguarded__ = func  # type: ignore[attr-defined]
    return guarded


def _sleeps(secs: float = 0, *_: Any) -> bool:
    return bool(secs > 0)


def _socket_blocks(sock: socket.socket, *_: Any, **__: Any) -> bool:
    # asyncio's transports call the same methods on non-blocking sockets (timeout 0.0).
    return sock.gettimeout() != 0.0


def _process_running(proc: subprocess.Popen[Any], *_: Any, **__: Any) -> bool:
    return proc.returncode is None


class _Cursor(sqlite3.Cursor):
    """A cursor that refuses to step a statement on a running loop's thread."""

    execute = _guard(sqlite3.Cursor.execute, "sqlite3.Cursor.execute")
    executemany = _guard(sqlite3.Cursor.executemany, "sqlite3.Cursor.executemany")
    executescript = _guard(sqlite3.Cursor.executescript, "sqlite3.Cursor.executescript")
    fetchone = _guard(sqlite3.Cursor.fetchone, "sqlite3.Cursor.fetchone")
    fetchmany = _guard(sqlite3.Cursor.fetchmany, "sqlite3.Cursor.fetchmany")
    fetchall = _guard(sqlite3.Cursor.fetchall, "sqlite3.Cursor.fetchall")


class _Connection(sqlite3.Connection):
    """A connection that refuses to work on a running loop's thread: aiosqlite's connections
    (made and used in their own thread) pass, one used from a coroutine does not."""

    execute = _guard(sqlite3.Connection.execute, "sqlite3.Connection.execute")
    executemany = _guard(sqlite3.Connection.executemany, "sqlite3.Connection.executemany")
    executescript = _guard(sqlite3.Connection.executescript, "sqlite3.Connection.executescript")
    commit = _guard(sqlite3.Connection.commit, "sqlite3.Connection.commit")
    rollback = _guard(sqlite3.Connection.rollback, "sqlite3.Connection.rollback")
    backup = _guard(sqlite3.Connection.backup, "sqlite3.Connection.backup")

    def cursor(self, factory: Any = _Cursor) -> Any:  # type: ignore[override]
        return super().cursor(factory)


def _sqlite_connect(real: Callable[..., sqlite3.Connection]) -> Callable[..., sqlite3.Connection]:
    @functools.wraps(real)
    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        if _get_running_loop() is not None:
            blocking_call("sqlite3.connect")
        if len(args) < 6:  # factory is the sixth positional parameter
            kwargs.setdefault("factory", _Connection)
        return real(*args, **kwargs)

    connect.__dm_unguarded__ = real  # type: ignore[attr-defined]
    return connect


def _numeric(host: object) -> bool:
    """Whether looking `host` up needs no resolver (None, an address literal)."""
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    try:
        ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return False
    return True


def _large_file(path: object, flags: object) -> str | None:
    if isinstance(path, int) or path is None:
        return None  # a descriptor already open
    if isinstance(flags, int) and flags & (os.O_TRUNC | os.O_EXCL):
        return None  # emptied or new: its old size is not read
    try:
        st = os.stat(path)  # type: ignore[arg-type]
    except (OSError, TypeError, ValueError):
        return None
    if stat.S_ISREG(st.st_mode) and st.st_size >= LARGE_FILE:
        return f"open() of {os.fsdecode(path)} ({st.st_size} bytes)"  # type: ignore[arg-type]
    return None


_AUDITED = frozenset({"open", "os.system", "socket.connect", "socket.getaddrinfo", "socket.gethostbyname",
                      "socket.gethostbyname_ex", "socket.gethostbyaddr", "sqlite3.connect"})


def _audit(event: str, args: tuple[Any, ...]) -> None:
    """Audit hook: sees C-level calls too (``from socket import getaddrinfo``, ``io.open_code``)."""
    if event not in _AUDITED or _get_running_loop() is None or STATE.allowed is not None:
        return
    what: str | None
    try:
        if event == "open":
            what = _large_file(args[0], args[2] if len(args) > 2 else None)
        elif event == "socket.connect":
            # A datagram socket's connect only sets its peer (no packet, no wait).
            sock = args[0]
            blocks = _socket_blocks(sock) and sock.type != socket.SOCK_DGRAM
            what = "socket.connect on a blocking socket" if blocks else None
        elif event == "socket.getaddrinfo":
            what = None if _numeric(args[0]) else f"socket.getaddrinfo({args[0]!r}) (a DNS lookup)"
        elif event.startswith("socket.gethostby"):
            what = None if _numeric(args[0]) else f"{event}({args[0]!r}) (a DNS lookup)"
        else:  # os.system; sqlite3.connect through a reference taken before install() patched it
            what = event
    except Exception:  # a hook's own error must never break the operation it watches
        return
    if what is not None:
        blocking_call(what)


def install() -> None:
    """Patch the blocking calls no audit event covers (once per process; cheap off the loop)."""
    if getattr(time.sleep, "__dm_unguarded__", None) is not None:
        return
    time.sleep = _guard(time.sleep, "time.sleep", _sleeps)
    for name in ("accept", "recv", "recv_into", "recvfrom", "recvfrom_into", "recvmsg",
                 "send", "sendall", "sendto", "sendmsg"):
        setattr(socket.socket, name, _guard(getattr(socket.socket, name), f"socket.{name} on a blocking socket",
                                            _socket_blocks))
    # run() and call() are refused before they start a process (check_output and check_call go
    # through them); a Popen's own wait and communicate while it runs.
    subprocess.run = _guard(subprocess.run, "subprocess.run")
    subprocess.call = _guard(subprocess.call, "subprocess.call")
    subprocess.Popen.wait = _guard(subprocess.Popen.wait, "subprocess.Popen.wait", _process_running)  # type: ignore[method-assign]
    subprocess.Popen.communicate = _guard(  # type: ignore[method-assign]
        subprocess.Popen.communicate, "subprocess.Popen.communicate", _process_running)
    real = sqlite3.connect
    sqlite3.connect = sqlite3.dbapi2.connect = _sqlite_connect(real)  # type: ignore[assignment]
    sys.addaudithook(_audit)


# --------------------------------------------------------------------------- tasks, timers, threads


def _frames(coro: Any) -> Iterator[types.FrameType]:
    """The frames of a suspended coroutine, outermost first, following what each awaits."""
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None) or getattr(coro, "ag_frame", None)
        if frame is None:
            return
        yield frame
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None) or getattr(coro, "ag_await", None)


def _innermost_ours(frames: list[types.FrameType]) -> types.FrameType | None:
    ours = [f for f in frames if _ours(f.f_code.co_filename)] or frames
    return ours[-1] if ours else None


def _created(tb: Any) -> str:
    """Where debug mode saw a task or handle made: the last place in our code."""
    if not tb:
        return "?"
    ours = [fs for fs in tb if _ours(fs.filename)] or list(tb)
    fs = ours[-1]
    return f"{_relative(fs.filename)}:{fs.lineno} in {fs.name}: {(fs.line or '').strip()}"


def describe_task(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    name = getattr(coro, "__qualname__", None) or repr(coro)
    frames = list(_frames(coro))
    waiting = _innermost_ours(frames)
    return (f"task {task.get_name()!r} running {name}(), waiting at {_where(waiting)}, "
            f"created at {_created(getattr(task, '_source_traceback', None))}")


def describe_handle(handle: asyncio.TimerHandle, loop: asyncio.AbstractEventLoop) -> str:
    callback = getattr(handle, "_callback", None)
    name = getattr(callback, "__qualname__", None) or repr(callback)
    return (f"timer calling {name} (due in {handle.when() - loop.time():.1f} s), "
            f"scheduled at {_created(getattr(handle, '_source_traceback', None))}")


def _closed_websocket_heartbeat(handle: asyncio.TimerHandle) -> bool:
    """aiohttp 3.14 re-arms the heartbeat of a client WebSocket that it has closed itself: close()
    cancels the timer, then the peer's close frame arrives and resets it (``_on_data_received``
    does not look at ``closed``). Not DM's to fix; one such timer per closed socket is let pass,
    a heartbeat of a socket still open is not (tests/test_guards.py shows both)."""
    callback = getattr(handle, "_callback", None)
    ws = getattr(callback, "__self__", None)
    return (isinstance(ws, aiohttp.ClientWebSocketResponse) and getattr(callback, "__name__", "") == "_send_heartbeat"
            and ws.closed)


def pending_on(loop: asyncio.AbstractEventLoop) -> tuple[list[asyncio.Task[Any]], list[asyncio.TimerHandle]]:
    """The tasks not done and the timers not cancelled on `loop`."""
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    timers = [h for h in getattr(loop, "_scheduled", ()) if not h.cancelled() and not _closed_websocket_heartbeat(h)]
    return tasks, timers


def check_loop(loop: asyncio.AbstractEventLoop, owner: str) -> list[str]:
    """What is still pending on `loop` as its owner closes it (one line each)."""
    tasks, timers = pending_on(loop)
    # A pending task's own sleep is part of that task's report.
    waited_on = {id(getattr(t, "_fut_waiter", None)) for t in tasks}
    timers = [h for h in timers if not (getattr(h, "_args", None) and id(h._args[0]) in waited_on)]
    found = [f"{owner} left a {describe_task(t)}" for t in tasks]
    found += [f"{owner} left a {describe_handle(h, loop)}" for h in timers]
    return found


def _context(context: dict[str, Any]) -> str:
    parts = [str(context.get("message") or "unhandled error")]
    exc = context.get("exception")
    if exc is not None:
        parts.append(f"{type(exc).__name__}: {exc}")
    for key in ("task", "future", "handle"):
        if key in context:
            parts.append(f"{key} {context[key]!r}"[:300])
    if context.get("source_traceback"):
        parts.append(f"created at {_created(context['source_traceback'])}")
    return "; ".join(parts)


def watch_loop(loop: asyncio.AbstractEventLoop, owner: str) -> None:
    """Debug settings and an exception handler that records what the loop reports."""
    loop.slow_callback_duration = SLOW_CALLBACK

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        STATE.problems.append(f"the event loop of {owner} reported: {_context(context)}")
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    STATE.loops.add(loop)


def _pool_threads() -> set[threading.Thread]:
    """The default-executor threads of loops still open (a module-scoped loop's outlive a test;
    a test's own loop joins its pool when it closes)."""
    out: set[threading.Thread] = set()
    for loop in list(STATE.loops):
        executor = getattr(loop, "_default_executor", None)
        if not loop.is_closed() and executor is not None:
            out.update(getattr(executor, "_threads", ()))
    return out


def new_threads(before: set[threading.Thread], grace: float = THREAD_GRACE) -> list[threading.Thread]:
    """Threads alive now that were not in `before`, after up to `grace` seconds for them to end.

    Not counted: the interpreter's stand-ins for threads it did not start (_DummyThread) and the
    default-executor threads of loops still open (above). Everything else a test starts, it
    stops: aiosqlite's thread ends when its connection is closed (Database.close()), asyncio's
    child watcher's ``waitpid-N`` thread when its process has exited (one still running is a
    process left behind), Playwright's driver with the browser."""
    deadline = time.monotonic() + grace
    pool = _pool_threads()
    left = []
    for t in threading.enumerate():
        if t in before or isinstance(t, threading._DummyThread) or t in pool:
            continue
        t.join(max(0.0, deadline - time.monotonic()))
        if t.is_alive():
            left.append(t)
    return left


def describe_thread(t: threading.Thread) -> str:
    target = getattr(t, "_target", None)
    what = getattr(target, "__qualname__", None) or (repr(target) if target is not None else type(t).__qualname__)
    return f"thread {t.name!r} ({what}, daemon={t.daemon})"


# --------------------------------------------------------------------------- pytest plugin

_RUNNER = re.compile(r"_(function|class|module|package|session)_scoped_runner")
_THREADS = pytest.StashKey[set[threading.Thread]]()


def pytest_configure(config: pytest.Config) -> None:
    install()


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest) -> Any:
    """Watch every loop pytest-asyncio makes; check it as its runner is about to close it.

    The check is a finalizer added to the runner's fixture after the runner itself was made: it
    runs after every async fixture on that loop has finished (pytest-asyncio finishes those
    first) and before the runner cancels what is left and closes the loop."""
    if _get_running_loop() is None:
        result = yield
    else:
        # Only a plain (sync) fixture can be set up while a loop runs: one an async fixture asks
        # for with request.getfixturevalue() (the Docker test image, the registry's image). A
        # fixture function is not coroutine code: what it does, it does before the test goes on,
        # as it would had the test asked for it by name (and pytest set it up before the loop).
        allowed, STATE.allowed = STATE.allowed, STATE.allowed or f"the plain fixture {fixturedef.argname}"
        try:
            result = yield
        finally:
            STATE.allowed = allowed
    if _RUNNER.fullmatch(fixturedef.argname) and isinstance(result, asyncio.Runner):
        scope = fixturedef.scope
        owner = "the test" if scope == "function" else f"the {scope} {request.node.nodeid or 'session'}"
        loop = result.get_loop()
        watch_loop(loop, f"{owner} ({request.node.nodeid})" if scope == "function" else owner)

        def check() -> None:
            STATE.problems.extend(check_loop(loop, owner))

        fixturedef.addfinalizer(check)
    return result


@pytest.fixture(autouse=True)
def _guard_threads(request: pytest.FixtureRequest) -> None:
    """The threads alive once the test's higher-scoped fixtures are up (those fixtures are made
    before any function-scoped one, so their threads are theirs, not the test's)."""
    request.node.stash[_THREADS] = set(threading.enumerate())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Any:
    mark = item.get_closest_marker("allow_blocking")
    STATE.allowed = None
    if mark is not None:
        reason = mark.kwargs.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            pytest.fail("@pytest.mark.allow_blocking needs reason='why this test blocks its loop'", pytrace=False)
        STATE.allowed = reason
    return (yield)


def pytest_collection_finish(session: pytest.Session) -> None:
    _collect_garbage()


@pytest.hookimpl(trylast=True, specname="pytest_runtest_teardown")
def _collect_after(item: pytest.Item) -> None:
    # After every fixture is gone, before pytest collects unraisable exceptions (a trylast hook
    # registered later runs earlier): a coroutine never awaited or a task whose exception nobody
    # read reports against this test, not a later one.
    _collect_garbage()


def _collect_garbage() -> None:
    """A full collection, then what survived it is frozen (left out of later collections): each
    test's collection looks at what that test made, milliseconds instead of 0.1-0.2 s for the
    whole heap of dmd, SQLAlchemy, aiohttp and Playwright."""
    gc.collect()
    gc.freeze()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    try:
        return (yield)
    finally:
        before = item.stash.get(_THREADS, None)
        problems = list(STATE.problems)
        if before is not None:
            problems += [f"the test left a {describe_thread(t)} running" for t in new_threads(before)]
        STATE.problems.clear()
        STATE.allowed = None
        if problems:
            pytest.fail("\n".join(["the guards of tests/guards.py found:", *(f"  - {p}" for p in problems)]),
                        pytrace=False)
