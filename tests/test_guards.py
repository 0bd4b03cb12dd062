"""The test guards (tests/guards.py) catch what they claim, and let through what is fine.

The blocking-call guards are exercised here, in this process: each call that must be refused
raises BlockingCallError at once, and its record is taken back (else this test would fail
at teardown, which is the point). What fails a test at teardown (tasks, timers and threads left
behind, a coroutine never awaited, an exception nobody retrieved) is shown by running a small
suite with the plugin in a separate pytest (pytester).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiosqlite
import pytest

from tests import guards
from tests.guards import BlockingCallError

REPO = Path(__file__).resolve().parents[1]
HERE = "tests/test_guards.py"


@contextlib.contextmanager
def refused(what: str) -> Iterator[None]:
    """The block raises BlockingCallError naming `what` and this file; the record is taken back."""
    before = len(guards.STATE.problems)
    with pytest.raises(BlockingCallError, match=re.escape(what)) as caught:
        yield
    assert HERE in str(caught.value), caught.value  # the call site is named
    assert len(guards.STATE.problems) == before + 1
    recorded = guards.STATE.problems.pop()
    assert recorded.startswith(f"blocking call on the event loop: {what}"), recorded


# --------------------------------------------------------------------------- blocking calls


async def test_sleep_on_the_loop_is_refused_and_fine_in_a_thread() -> None:
    with refused("time.sleep"):
        time.sleep(0.01)
    await asyncio.to_thread(time.sleep, 0.01)
    time.sleep(0)  # yields the GIL, blocks nothing


async def test_a_refused_call_fails_the_test_even_when_caught() -> None:
    with contextlib.suppress(RuntimeError):
        time.sleep(0.01)
    assert guards.STATE.problems[-1].startswith("blocking call on the event loop: time.sleep, at tests/test_guards.py:")
    guards.STATE.problems.pop()


async def test_blocking_sockets_are_refused_and_asyncio_streams_are_fine() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with refused("socket.connect on a blocking socket"):
            socket.create_connection(("127.0.0.1", port), timeout=5)
        # connected in a thread, then read from the loop
        sock = await asyncio.to_thread(socket.create_connection, ("127.0.0.1", port), 5)
        with sock:
            with refused("socket.sendall on a blocking socket"):
                sock.sendall(b"ping\n")
            await asyncio.to_thread(sock.sendall, b"ping\n")
            with refused("socket.recv on a blocking socket"):
                sock.recv(10)
            assert await asyncio.to_thread(sock.recv, 10) == b"ping\n"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"pong\n")
        assert await reader.readline() == b"pong\n"
        writer.close()
        await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()


async def test_a_datagram_sockets_connect_is_fine() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # picks the source address; sends nothing, waits for nothing
        assert s.getsockname()[0] != "0.0.0.0"


async def test_name_lookups_are_refused_and_addresses_are_fine() -> None:
    with refused("socket.getaddrinfo('localhost')"):
        socket.getaddrinfo("localhost", 80)
    with refused("socket.gethostbyname('localhost')"):
        socket.gethostbyname("localhost")
    assert socket.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)[0][4] == ("127.0.0.1", 80)
    assert await asyncio.get_running_loop().getaddrinfo("localhost", 80)  # the loop resolves in a thread


async def test_sqlite3_on_the_loop_is_refused_and_aiosqlite_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite3"
    with refused("sqlite3.connect"):
        sqlite3.connect(path)
    # made in a thread (as aiosqlite does), then used from the coroutine
    conn = await asyncio.to_thread(sqlite3.connect, path, check_same_thread=False)
    try:
        with refused("sqlite3.Connection.execute"):
            conn.execute("CREATE TABLE t (x INTEGER)")
        cursor = await asyncio.to_thread(conn.cursor)
        with refused("sqlite3.Cursor.execute"):
            cursor.execute("SELECT 1")
    finally:
        await asyncio.to_thread(conn.close)
    async with aiosqlite.connect(path) as db:
        await db.execute("CREATE TABLE t (x INTEGER)")
        await db.execute("INSERT INTO t VALUES (42)")
        await db.commit()
        async with db.execute("SELECT x FROM t") as rows:
            assert [tuple(row) for row in await rows.fetchall()] == [(42,)]


async def test_waiting_for_a_process_is_refused_and_asyncio_subprocesses_are_fine() -> None:
    with refused("subprocess.run"):
        subprocess.run(["true"], capture_output=True)
    with refused("subprocess.run"):
        subprocess.check_output(["true"])
    with refused("subprocess.call"):
        subprocess.check_call(["true"])
    proc = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # starting one is quick
    with refused("subprocess.Popen.communicate"):
        proc.communicate(b"x")
    with refused("subprocess.Popen.wait"):
        proc.wait()
    out, err = await asyncio.to_thread(proc.communicate, b"x")
    assert out == b"x" and err is None  # stderr is not piped
    assert await asyncio.to_thread(proc.wait) == 0
    assert proc.wait() == 0  # it has exited: wait() returns at once
    with refused("os.system"):
        os.system("true")  # noqa: S605
    child = await asyncio.create_subprocess_exec("echo", "hi", stdout=asyncio.subprocess.PIPE)
    out, _ = await child.communicate()
    assert (out, child.returncode) == (b"hi\n", 0)


async def test_opening_a_large_file_is_refused_and_small_ones_are_fine(tmp_path: Path) -> None:
    big, small = tmp_path / "big", tmp_path / "small"
    await asyncio.to_thread(big.write_bytes, b"x" * guards.LARGE_FILE)
    await asyncio.to_thread(small.write_bytes, b"x" * (guards.LARGE_FILE - 1))
    with refused(f"open() of {big} ({guards.LARGE_FILE} bytes)"):
        open(big, "rb")  # noqa: SIM115
    with refused(f"open() of {big}"):
        big.read_bytes()
    with refused(f"open() of {big}"):
        os.open(big, os.O_RDONLY)
    assert len(small.read_bytes()) == guards.LARGE_FILE - 1
    assert len(await asyncio.to_thread(big.read_bytes)) == guards.LARGE_FILE
    with open(big, "wb") as fh:  # emptied first: nothing large is read
        fh.write(b"y")


@pytest.mark.allow_blocking(reason="shows that the mark lets a test block its loop")
async def test_the_mark_lets_a_test_block() -> None:
    time.sleep(0.001)
    sqlite3.connect(":memory:").close()
    assert not guards.STATE.problems


def test_sync_tests_have_no_loop_to_block(tmp_path: Path) -> None:
    time.sleep(0.001)
    subprocess.run(["true"], check=True)
    with sqlite3.connect(tmp_path / "x.sqlite3") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


# --------------------------------------------------------------------------- what is left behind


def test_a_loop_lists_its_pending_tasks_and_timers_with_their_origin() -> None:
    loop = asyncio.new_event_loop()
    loop.set_debug(True)

    async def forever() -> None:
        await asyncio.sleep(3600)

    try:
        task = loop.create_task(forever(), name="sleeper")
        timer = loop.call_later(3600, print, "late")
        loop.run_until_complete(asyncio.sleep(0))
        found = guards.check_loop(loop, "the test")
        assert len(found) == 2, found  # the task (its sleep's timer is part of it) and the timer
        assert re.match(r"the test left a task 'sleeper' running .*forever\(\), waiting at "
                        rf"{HERE}:\d+ in forever: await asyncio.sleep\(3600\), created at {HERE}:\d+ ", found[0]), found
        assert re.match(rf"the test left a timer calling print \(due in 3\d\d\d\.\d s\), scheduled at {HERE}:\d+",
                        found[1]), found
        task.cancel()
        timer.cancel()
        loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
        assert guards.check_loop(loop, "the test") == []
    finally:
        loop.close()


async def test_a_closed_websockets_rearmed_heartbeat_passes_and_an_open_ones_does_not() -> None:
    from aiohttp import ClientSession, web

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for _ in ws:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    loop = asyncio.get_running_loop()
    heartbeat = "left a timer calling ClientWebSocketResponse._send_heartbeat"
    try:
        async with ClientSession() as session:
            ws = await session.ws_connect(f"http://127.0.0.1:{port}/ws", heartbeat=30)
            assert any(heartbeat in f for f in guards.check_loop(loop, "the test"))  # open: counted
            await ws.close()
            await asyncio.sleep(0.1)  # the server's close frame arrives (aiohttp then re-arms the timer)
            assert ws.closed and ws._heartbeat_cb is not None  # aiohttp's re-armed timer is there
            assert not any(heartbeat in f for f in guards.check_loop(loop, "the test"))
    finally:
        await runner.cleanup()
    for handle in list(getattr(loop, "_scheduled", ())):  # not left for the guard to pass over
        if guards._closed_websocket_heartbeat(handle):
            handle.cancel()


def test_threads_still_running_are_found_and_finishing_ones_are_waited_for() -> None:
    before = set(threading.enumerate())
    stop = threading.Event()
    stays = threading.Thread(target=stop.wait, name="stays", daemon=True)
    ends = threading.Thread(target=time.sleep, args=(0.2,), name="ends")
    stays.start()
    ends.start()
    try:
        assert guards.new_threads(before, grace=1.0) == [stays]
        assert not ends.is_alive()
        assert "thread 'stays' (Event.wait, daemon=True)" in guards.describe_thread(stays)
    finally:
        stop.set()
        stays.join()


INNER = '''
import asyncio
import contextlib
import threading
import time

import pytest

STOP = threading.Event()


async def forever():
    await asyncio.sleep(3600)


async def test_leaves_a_task():
    asyncio.get_running_loop().create_task(forever())


async def test_leaves_a_timer():
    asyncio.get_running_loop().call_later(3600, print, "late")


def test_leaves_a_thread():
    threading.Thread(target=STOP.wait, name="left-behind", daemon=True).start()


async def test_sleeps_on_the_loop():
    time.sleep(0.01)


async def test_swallows_the_error():
    with contextlib.suppress(RuntimeError):
        time.sleep(0.01)


async def test_never_awaits():
    forever()


async def test_never_retrieves_an_exception():
    async def boom():
        raise ValueError("nobody reads this")

    task = asyncio.get_running_loop().create_task(boom())
    await asyncio.sleep(0.01)
    del task


@pytest.fixture
async def server():
    asyncio.get_running_loop().create_task(forever(), name="served")
    yield


async def test_fixture_leaves_a_task(server):
    pass


@pytest.mark.allow_blocking
async def test_mark_without_reason():
    pass


@pytest.mark.allow_blocking(reason="on purpose")
async def test_mark_with_reason():
    time.sleep(0.01)


async def test_cleans_up():
    task = asyncio.get_running_loop().create_task(forever())
    await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    asyncio.get_running_loop().call_later(3600, print).cancel()
    thread = threading.Thread(target=time.sleep, args=(0.01,))
    thread.start()
    await asyncio.to_thread(thread.join)
    await asyncio.to_thread(time.sleep, 0.01)


def test_sync_sleeps():
    time.sleep(0.01)


@pytest.fixture(scope="session")
def built():
    time.sleep(0.01)  # a plain fixture may block, also when an async one asks for it on the loop
    return "image"


@pytest.fixture
async def uses_built(request):
    return request.getfixturevalue("built")


async def test_plain_fixture_asked_for_on_the_loop(uses_built):
    assert uses_built == "image"
'''

INNER_MODULE_LOOP = '''
import asyncio

import pytest

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def forever():
    await asyncio.sleep(3600)


async def test_first():
    asyncio.get_running_loop().create_task(forever(), name="module-leak")


async def test_second():
    pass
'''


def test_the_plugin_fails_tests_that_leave_things_behind_or_block(pytester: pytest.Pytester,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    pytester.makeini("""
        [pytest]
        asyncio_mode = auto
        asyncio_default_fixture_loop_scope = function
        asyncio_debug = true
        markers = allow_blocking(reason): blocks its loop on purpose
        filterwarnings =
            error::pytest.PytestUnraisableExceptionWarning
            error:coroutine .* was never awaited:RuntimeWarning
    """)
    pytester.makepyfile(test_inner=INNER, test_module_loop=INNER_MODULE_LOOP)
    result = pytester.runpytest_subprocess("-p", "tests.guards", "-p", "no:cacheprovider", "-rA", timeout=120)
    out = result.stdout.str()
    passed = set(re.findall(r"^PASSED \S+::(\w+)", out, re.M))
    failed = set(re.findall(r"^(?:ERROR|FAILED) \S+::(\w+)", out, re.M))
    # A test that passes and then fails its teardown is listed as both.
    assert passed - failed == {"test_cleans_up", "test_sync_sleeps", "test_mark_with_reason", "test_first",
                               "test_plain_fixture_asked_for_on_the_loop"}, out
    assert failed == {"test_leaves_a_task", "test_leaves_a_timer", "test_leaves_a_thread", "test_sleeps_on_the_loop",
                      "test_swallows_the_error", "test_never_awaits", "test_never_retrieves_an_exception",
                      "test_fixture_leaves_a_task", "test_mark_without_reason", "test_second"}, out

    def section(name: str) -> str:
        m = re.search(rf"_ (?:ERROR at (?:teardown|setup) of )?{name} _+\n(.*?)(?=\n_{{3,}} |\n=+ )", out, re.S)
        assert m, f"no error section for {name}:\n{out}"
        return m.group(1)

    assert re.search(r"the test left a task 'Task-\d+' running forever\(\), "
                     r"waiting at .*test_inner.py:\d+ in forever: await asyncio.sleep\(3600\), created at "
                     r".*test_inner.py:\d+ in test_leaves_a_task", section("test_leaves_a_task"))
    assert re.search(r"left a timer calling print \(due in 3\d{3}\.\d s\), scheduled at .*test_inner.py:\d+ in "
                     r"test_leaves_a_timer", section("test_leaves_a_timer"))
    assert "the test left a thread 'left-behind' (Event.wait, daemon=True) running" in section("test_leaves_a_thread")
    for name in ("test_sleeps_on_the_loop", "test_swallows_the_error"):
        assert re.search(r"blocking call on the event loop: time.sleep, at .*test_inner.py:\d+ in " + name,
                         section(name))
    assert re.search(r"coroutine 'forever' was never awaited", section("test_never_awaits"))
    assert re.search(r"reported: Task exception was never retrieved; ValueError: nobody reads this",
                     section("test_never_retrieves_an_exception"))
    assert "left a task 'served' running forever()" in section("test_fixture_leaves_a_task")
    assert "allow_blocking needs reason=" in section("test_mark_without_reason")
    assert re.search(r"the module test_module_loop.py left a task 'module-leak' running forever\(\)",
                     section("test_second"))
