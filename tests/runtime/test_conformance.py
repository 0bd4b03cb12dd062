"""The runtime driver contract: the same tests for the fake driver and for Docker (a real dockerd).

A command given to a container is a real busybox command line; for the fake, the harness
registers a program that behaves the same (``harness.program``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import io
import tarfile
import time
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.runtime import (
    LABEL_INSTANCE,
    LABEL_MANAGED,
    LABEL_NODE,
    Capabilities,
    ConflictError,
    ContainerInfo,
    DriverError,
    DriverTimeoutError,
    GpuRequest,
    ImageNotFoundError,
    InvalidError,
    NotFoundError,
    PullFailedError,
    RuntimeEvent,
    UnsupportedError,
)
from agent.runtime.driver import ARCHIVE_CHUNK, ExecSession
from agent.runtime.fake import FakeProcess
from tests.runtime.conftest import TEST_LABEL, Harness

SLEEPER = ["sleep", "600"]
FIVE_LINES = ["sh", "-c", "for i in 1 2 3 4 5; do echo line $i; done"]
OUT_THEN_ERR = ["sh", "-c", "echo out; sleep 0.2; echo err >&2"]
TICKER = ["sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.1; done"]
OUT_ERR_EXIT = ["sh", "-c", "echo out; echo err >&2; exit 3"]


async def _five_lines(proc: FakeProcess) -> int:
    for i in range(1, 6):
        proc.print(f"line {i}")
    return 0


async def _out_then_err(proc: FakeProcess) -> int:
    proc.print("out")
    await asyncio.sleep(0.2)
    proc.print("err", stream=2)
    return 0


async def _ticker(proc: FakeProcess) -> int:
    i = 0
    while True:
        i += 1
        proc.print(f"tick {i}")
        await asyncio.sleep(0.1)


async def _out_err_exit(proc: FakeProcess) -> int:
    proc.print("out")
    proc.print("err", stream=2)
    return 3


async def wait_for_state(h: Harness, container: str, *states: str, timeout: float = 10) -> ContainerInfo:
    deadline = time.monotonic() + timeout
    while True:
        info = await h.driver.inspect(container)
        assert info is not None
        if info.state in states:
            return info
        if time.monotonic() > deadline:
            raise AssertionError(f"{container} is {info.state}, not {states}")
        await asyncio.sleep(0.05)


async def collect(iterator: AsyncIterator[str]) -> list[str]:
    return [line async for line in iterator]


async def chunks_of(data: bytes, size: int = 7000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]
        await asyncio.sleep(0)


def rootfs_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in ("./", "./etc/", "./bin/"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        payload = b"hello from a root file system\n"
        info = tarfile.TarInfo("./etc/hello")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


# --------------------------------------------------------------------------- containers


async def test_lifecycle(harness: Harness) -> None:
    d = harness.driver
    spec = harness.spec("life", command=SLEEPER)
    created = await d.create(spec)
    assert created.state == "created"
    assert created.name == spec.name
    assert (created.managed, created.instance_id, created.node_id) == (True, spec.instance_id, 7)
    assert created.labels[LABEL_MANAGED] == "1"
    assert created.labels[LABEL_INSTANCE] == str(spec.instance_id)
    assert created.labels[LABEL_NODE] == "7"
    assert created.labels[TEST_LABEL] == harness.prefix
    assert created.image == harness.image
    assert created.exit_code is None and created.started_at is None

    by_name = await d.inspect(spec.name)
    assert by_name is not None and by_name.id == created.id
    by_prefix = await d.inspect(created.id[:12])
    assert by_prefix is not None and by_prefix.id == created.id

    before_start = datetime.now(UTC) - timedelta(seconds=1)  # the engine's clock is the host's
    await d.start(created.id)
    running = await d.inspect(created.id)
    assert running is not None and running.state == "running"
    assert running.started_at is not None and before_start <= running.started_at <= datetime.now(UTC)
    assert running.ip_address  # DM's port forwarding targets this address
    await d.start(created.id)  # idempotent

    with pytest.raises(ConflictError) as excinfo:
        await d.remove(created.id)  # running, no force
    assert excinfo.value.code == "conflict"

    await d.stop(created.id, timeout=5)
    stopped = await d.inspect(created.id)
    assert stopped is not None and stopped.state == "exited"
    assert stopped.exit_code == 143  # SIGTERM through the init process
    assert stopped.finished_at is not None and running.started_at <= stopped.finished_at <= datetime.now(UTC)
    assert stopped.ip_address is None
    await d.stop(created.id)  # idempotent

    await d.start(created.id)
    assert (await wait_for_state(harness, created.id, "running")).state == "running"
    await d.restart(created.id, timeout=2)
    assert (await wait_for_state(harness, created.id, "running")).state == "running"
    await d.stop(created.id, timeout=2)
    await d.remove(created.id)
    assert await d.inspect(created.id) is None
    assert await d.find_instance(spec.instance_id) is None
    await d.remove(created.id)  # missing: fine


async def test_create_is_idempotent_by_instance_id(harness: Harness) -> None:
    d = harness.driver
    spec = harness.spec("idem", command=SLEEPER)
    first = await d.create(spec)
    again = await d.create(spec)
    assert again.id == first.id
    renamed = await d.create(dataclasses.replace(spec, name=harness.name("idem-other")))
    assert renamed.id == first.id and renamed.name == spec.name
    found = await d.find_instance(spec.instance_id)
    assert found is not None and found.id == first.id
    mine = [c for c in await d.list(managed_only=True) if c.instance_id == spec.instance_id]
    assert [c.id for c in mine] == [first.id]

    racing = harness.spec("race", command=SLEEPER)
    a, b = await asyncio.gather(d.create(racing), d.create(racing))
    assert a.id == b.id
    assert len([c for c in await d.list() if c.instance_id == racing.instance_id]) == 1


async def test_name_taken_by_another_instance_is_a_conflict(harness: Harness) -> None:
    d = harness.driver
    await d.create(harness.spec("taken", command=SLEEPER))
    with pytest.raises(ConflictError, match="already in use"):
        await d.create(harness.spec("taken", command=SLEEPER))
    with pytest.raises(ConflictError, match="already in use"):  # told it is fresh: still not another's
        await d.create(harness.spec("taken", command=SLEEPER), fresh=True)


async def test_a_fresh_create_looks_for_nothing_but_adopts_what_its_name_holds(harness: Harness) -> None:
    d = harness.driver
    spec = harness.spec("fresh", command=SLEEPER)
    made = await d.create(spec, fresh=True)
    assert made.state == "created" and made.name == spec.name
    lost = await d.create(spec, fresh=True)  # the first create's reply was lost: the name holds it
    assert lost.id == made.id
    assert [c.id for c in await d.list(managed_only=True) if c.instance_id == spec.instance_id] == [made.id]


async def test_missing_containers(harness: Harness) -> None:
    d = harness.driver
    missing = harness.name("nothing-here")
    assert await d.inspect(missing) is None
    assert await d.inspect("../../version") is None
    await d.remove(missing)
    await d.remove(missing, force=True)
    for call in (d.start(missing), d.stop(missing), d.restart(missing), d.exec(missing, ["true"])):
        with pytest.raises(NotFoundError) as excinfo:
            await call
        assert excinfo.value.code == "not_found"
    with pytest.raises(NotFoundError):
        await collect(d.logs(missing))


async def test_unknown_image(harness: Harness) -> None:
    spec = harness.spec("noimage", image=f"dm-test/{harness.prefix}-missing:1")
    with pytest.raises(ImageNotFoundError) as excinfo:
        await harness.driver.create(spec)
    assert excinfo.value.code == "image_not_found"
    assert harness.prefix in excinfo.value.message
    assert await harness.driver.find_instance(spec.instance_id) is None


@pytest.mark.parametrize(
    "change",
    [
        {"name": "bad name!"},
        {"labels": {LABEL_INSTANCE: "1"}},
        {"cpus": 0},
        {"memory_mb": 1},
        {"image": "../etc"},
        {"env": {"A=B": "c"}},
    ],
)
async def test_invalid_spec(harness: Harness, change: dict[str, object]) -> None:
    spec = dataclasses.replace(harness.spec("invalid"), **change)  # type: ignore[arg-type]
    with pytest.raises(InvalidError) as excinfo:
        await harness.driver.create(spec)
    assert excinfo.value.code == "invalid"


async def test_list_separates_managed_from_unmanaged(harness: Harness) -> None:
    d = harness.driver
    managed = await d.create(harness.spec("managed", command=SLEEPER))
    running = await d.create(harness.spec("running", command=SLEEPER))
    await d.start(running.id)
    foreign = await harness.make_unmanaged("foreign", SLEEPER)

    everything = {c.id: c for c in await d.list(all=True)}
    assert everything[foreign].managed is False
    assert everything[foreign].instance_id is None and everything[foreign].node_id is None
    assert everything[managed.id].managed is True

    managed_only = {c.id for c in await d.list(managed_only=True)}
    assert {managed.id, running.id} <= managed_only
    assert foreign not in managed_only
    assert all(c.managed for c in await d.list(managed_only=True))

    only_running = {c.id for c in await d.list(all=False)}
    assert running.id in only_running
    assert managed.id not in only_running and foreign not in only_running


async def test_limits_and_host_config(harness: Harness) -> None:
    d = harness.driver
    info = await d.create(harness.spec("limits", command=SLEEPER, cpus=0.5, memory_mb=64))
    assert info.cpus == 0.5
    assert info.memory_mb == 64
    host = await harness.host_config(info.id)
    assert host["NanoCpus"] == 500_000_000
    assert host["Memory"] == 64 * 1024 * 1024
    assert host["MemorySwap"] == 64 * 1024 * 1024
    assert host["Init"] is True
    assert host["Privileged"] is False
    assert host["NetworkMode"] == "bridge"
    assert host["RestartPolicy"]["Name"] == "no"
    assert not host.get("PortBindings")
    assert host["PublishAllPorts"] is False
    unlimited = await d.create(harness.spec("nolimits", command=SLEEPER))
    assert (unlimited.cpus, unlimited.memory_mb) == (None, None)


# --------------------------------------------------------------------------- logs, exec, events


async def test_logs_tail_timestamps_and_streams(harness: Harness) -> None:
    d = harness.driver
    harness.program(FIVE_LINES, _five_lines)
    harness.program(OUT_THEN_ERR, _out_then_err)
    five = await d.create(harness.spec("five", command=FIVE_LINES))
    both = await d.create(harness.spec("both", command=OUT_THEN_ERR))
    await d.start(five.id)
    await d.start(both.id)
    done = await wait_for_state(harness, five.id, "exited")
    assert done.exit_code == 0
    await wait_for_state(harness, both.id, "exited")

    assert await collect(d.logs(five.id)) == [f"line {i}" for i in range(1, 6)]
    assert await collect(d.logs(five.id, tail=2)) == ["line 4", "line 5"]
    assert await collect(d.logs(five.id, tail=0)) == []
    stamped = await collect(d.logs(five.id, tail=1, timestamps=True))
    assert len(stamped) == 1
    stamp, _, text = stamped[0].partition(" ")
    assert text == "line 5"
    assert stamp.startswith("20") and stamp.endswith("Z")
    # A follow on a stopped container returns what there is and ends.
    assert await asyncio.wait_for(collect(d.logs(five.id, follow=True)), 10) == [f"line {i}" for i in range(1, 6)]

    assert await collect(d.logs(both.id)) == ["out", "err"]


async def test_logs_follow(harness: Harness) -> None:
    d = harness.driver
    harness.program(TICKER, _ticker)
    info = await d.create(harness.spec("ticker", command=TICKER))
    await d.start(info.id)
    seen: list[str] = []

    async def follow() -> None:
        async for line in d.logs(info.id, follow=True, tail=0):
            seen.append(line)
            if len(seen) == 3:
                await d.stop(info.id, timeout=1)

    await asyncio.wait_for(follow(), 15)  # ends by itself once the container stops
    assert len(seen) >= 3
    assert all(line.startswith("tick ") for line in seen)
    numbers = [int(line.split()[1]) for line in seen]
    assert numbers == sorted(numbers)


async def test_exec(harness: Harness) -> None:
    d = harness.driver
    harness.program(OUT_ERR_EXIT, _out_err_exit)
    info = await d.create(harness.spec("exec", command=SLEEPER, env={"FROM_SPEC": "yes"}))
    with pytest.raises(ConflictError):
        await d.exec(info.id, ["true"])  # not running
    await d.start(info.id)

    hello = await d.exec(info.id, ["echo", "hello", "world"])
    assert (hello.exit_code, hello.stdout, hello.stderr) == (0, b"hello world\n", b"")
    failed = await d.exec(info.id, OUT_ERR_EXIT)
    assert (failed.exit_code, failed.stdout, failed.stderr) == (3, b"out\n", b"err\n")
    assert (await d.exec(info.id, ["false"])).exit_code == 1
    echoed = await d.exec(info.id, ["cat"], stdin=b"line one\nline two\n")
    assert echoed.stdout == b"line one\nline two\n" and echoed.exit_code == 0
    env = await d.exec(info.id, ["env"], env={"DM_EXEC": "1"})
    assert "DM_EXEC=1" in env.stdout_text.splitlines()
    assert "FROM_SPEC=yes" in env.stdout_text.splitlines()
    assert "NVIDIA_VISIBLE_DEVICES=void" in env.stdout_text.splitlines()
    missing = await d.exec(info.id, ["/no/such/program"])
    assert missing.exit_code != 0
    with pytest.raises(DriverTimeoutError) as excinfo:
        await d.exec(info.id, ["sleep", "5"], timeout=0.5)
    assert excinfo.value.code == "timeout"
    with pytest.raises(InvalidError):
        await d.exec(info.id, [])


def _tar_of(entries: dict[str, bytes | None]) -> bytes:
    """A tar of files (bytes) and directories (None), in the order given."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                archive.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _members(body: bytes) -> dict[str, bytes | None]:
    with tarfile.open(fileobj=io.BytesIO(body)) as archive:
        return {m.name.rstrip("/"): archive.extractfile(m).read() if m.isfile() else None  # type: ignore[union-attr]
                for m in archive.getmembers() if m.isfile() or m.isdir()}


async def test_archive_in_and_out(harness: Harness) -> None:
    d = harness.driver
    info = await d.create(harness.spec("files", command=SLEEPER))
    await d.start(info.id)
    big = bytes(range(256)) * 12_288  # 3 MiB: many chunks each way
    await d.put_archive(info.id, "/tmp", chunks_of(_tar_of({"dm-up": None, "dm-up/hello.txt": b"hello\n",
                                                            "dm-up/sub": None, "dm-up/sub/big.bin": big})))
    one = await collect_bytes(d.get_archive(info.id, "/tmp/dm-up/hello.txt"))
    assert _members(one) == {"hello.txt": b"hello\n"}
    folder = _members(await collect_bytes(d.get_archive(info.id, "/tmp/dm-up")))
    assert folder == {"dm-up": None, "dm-up/hello.txt": b"hello\n", "dm-up/sub": None, "dm-up/sub/big.bin": big}
    chunks = [c async for c in d.get_archive(info.id, "/tmp/dm-up/sub")]
    assert len(chunks) > 1 and max(len(c) for c in chunks) <= ARCHIVE_CHUNK  # streamed, never one piece
    if harness.kind == "docker":  # what the container itself sees
        assert (await d.exec(info.id, ["cat", "/tmp/dm-up/hello.txt"])).stdout == b"hello\n"

    with pytest.raises(NotFoundError):
        await collect_bytes(d.get_archive(info.id, "/tmp/no-such-file"))
    with pytest.raises(NotFoundError):
        await d.put_archive(info.id, "/no/such/dir", chunks_of(_tar_of({"x": b"x"})))
    for bad in ("relative/path", "/tmp/nul\0byte"):
        with pytest.raises(InvalidError):
            await collect_bytes(d.get_archive(info.id, bad))
        with pytest.raises(InvalidError):
            await d.put_archive(info.id, bad, chunks_of(_tar_of({"x": b"x"})))
    with pytest.raises(NotFoundError):
        await collect_bytes(d.get_archive(harness.name("no-such-container"), "/tmp"))
    with pytest.raises(NotFoundError):
        await d.put_archive(harness.name("no-such-container"), "/tmp", chunks_of(_tar_of({"x": b"x"})))


# Sizes are read after a first line: engines before API 1.42 size the terminal just after the start.
SIZE_TWICE = ["sh", "-c", "read a; stty size; read line; echo got $line; stty size; read line; exit 4"]
LONG_SLEEP = ["sleep", "601"]


async def _size_twice(proc: FakeProcess) -> int:
    await proc.read_input()
    proc.print(f"{proc.size[1]} {proc.size[0]}")
    line = (await proc.read_input()).decode().strip()
    proc.print(f"got {line}")
    proc.print(f"{proc.size[1]} {proc.size[0]}")
    await proc.read_input()
    return 4


async def read_all(session: ExecSession, timeout: float = 20) -> list[tuple[int, bytes]]:
    """Every output of a session until its end, merged per stream."""
    out: list[tuple[int, bytes]] = []
    async with asyncio.timeout(timeout):
        while (chunk := await session.read())[0] != 0:
            out.append(chunk)
    assert await session.read() == (0, b"")  # the end stays the end
    return out


async def read_until(session: ExecSession, marker: bytes, timeout: float = 20) -> bytes:
    seen = b""
    async with asyncio.timeout(timeout):
        while marker not in seen:
            stream, data = await session.read()
            assert stream != 0, f"the output ended before {marker!r}: {seen!r}"
            seen += data
    return seen


async def test_exec_interactive(harness: Harness) -> None:
    d = harness.driver
    harness.program(OUT_ERR_EXIT, _out_err_exit)
    harness.program(SIZE_TWICE, _size_twice)
    info = await d.create(harness.spec("interactive", command=SLEEPER))
    with pytest.raises(ConflictError):
        await d.exec_interactive(info.id, ["cat"], tty=False)  # not running
    await d.start(info.id)
    with pytest.raises(InvalidError):
        await d.exec_interactive(info.id, [], tty=False)
    for cols, rows in ((0, 24), (80, 5000), (-1, -1)):
        with pytest.raises(InvalidError):
            await d.exec_interactive(info.id, ["cat"], tty=True, cols=cols, rows=rows)
    with pytest.raises(NotFoundError):
        await d.exec_interactive("no-such-container-dm", ["cat"], tty=False)

    # Without a terminal: stdin as it comes, its end, stdout and stderr apart, the exit status.
    cat = await d.exec_interactive(info.id, ["cat"], tty=False)
    try:
        await cat.write(b"first\n")
        assert await read_until(cat, b"first\n") == b"first\n"  # echoed before stdin ended
        await cat.write(b"\x00\x10\x11binary")  # no detach sequence, no terminal: bytes as they are
        await cat.write_eof()
        assert b"".join(data for _, data in await read_all(cat)) == b"\x00\x10\x11binary"
        assert await cat.wait() == 0
    finally:
        await cat.close()
    both = await d.exec_interactive(info.id, OUT_ERR_EXIT, tty=False, env={"DM_I": "1"})
    try:
        chunks = await read_all(both)
        assert b"".join(data for stream, data in chunks if stream == 1) == b"out\n"
        assert b"".join(data for stream, data in chunks if stream == 2) == b"err\n"
        assert await both.wait() == 3
    finally:
        await both.close()

    # On a terminal: its size from the start, a resize, everything on stdout.
    term = await d.exec_interactive(info.id, SIZE_TWICE, tty=True, cols=101, rows=33)
    try:
        await term.write(b"\r")
        assert b"33 101" in await read_until(term, b"33 101")
        await term.resize(120, 40)
        with pytest.raises(InvalidError):
            await term.resize(0, 40)
        await term.write(b"hello\r")
        assert b"40 120" in await read_until(term, b"40 120")
        await term.write(b"\r")
        assert all(stream == 1 for stream, _ in await read_all(term))
        assert await term.wait() == 4
    finally:
        await term.close()

    # On a terminal an EOF changes nothing: output on its way is not lost, input still arrives.
    late = await d.exec_interactive(info.id, SIZE_TWICE, tty=True, cols=70, rows=21)
    try:
        await late.write_eof()
        await late.write(b"\r")
        assert b"21 70" in await read_until(late, b"21 70")
        await late.write(b"x\r")
        await late.write(b"\r")
        await read_all(late)
        assert await late.wait() == 4
    finally:
        await late.close()

    # Closing a session whose process still runs ends the process, also right after its start.
    sleeper = await d.exec_interactive(info.id, LONG_SLEEP, tty=True)
    await asyncio.sleep(0.3)
    await asyncio.wait_for(sleeper.close(), 10)
    await read_all(sleeper)  # the output ends
    at_once = [await d.exec_interactive(info.id, LONG_SLEEP, tty=False) for _ in range(4)]
    await asyncio.wait_for(asyncio.gather(*(session.close() for session in at_once)), 20)
    if harness.fake is not None:
        assert harness.fake.sessions[-1].resizes == []  # a session never resized
    else:
        listing = await d.exec(info.id, ["ps", "-o", "args"])
        assert "sleep 601" not in listing.stdout_text, listing.stdout_text


async def test_host_pid(harness: Harness) -> None:
    """The host pid of a container's main process (its root and network for the agent's SSH), where
    the runtime's processes are the agent's host's; the fake has none."""
    d = harness.driver
    info = await d.create(harness.spec("pid", command=SLEEPER))
    if harness.fake is not None:
        await d.start(info.id)
        with pytest.raises(UnsupportedError):
            await d.host_pid(info.id)
        return
    with pytest.raises(ConflictError):
        await d.host_pid(info.id)  # not running
    with pytest.raises(NotFoundError):
        await d.host_pid("no-such-container-dm")
    await d.start(info.id)
    pid = await d.host_pid(info.id)
    with open(f"/proc/{pid}/cgroup", encoding="utf-8") as fh:
        assert info.id in fh.read()


async def test_events_start_and_die(harness: Harness) -> None:
    d = harness.driver
    since = time.time() - 1
    spec = harness.spec("events", command=["false"])
    info = await d.create(spec)
    await d.start(info.id)
    await wait_for_state(harness, info.id, "exited")
    foreign = await harness.make_unmanaged("events-foreign", ["true"])
    await d.start(foreign)

    seen: list[RuntimeEvent] = []

    async def watch() -> None:
        async for event in d.events(since=since):
            assert event.container_id != foreign  # unmanaged containers are not reported
            if event.container_id == info.id:
                seen.append(event)
                if event.action == "die":
                    return

    await asyncio.wait_for(watch(), 15)
    actions = [e.action for e in seen]
    assert actions.index("create") < actions.index("start") < actions.index("die")
    die = seen[-1]
    assert (die.exit_code, die.instance_id, die.node_id, die.name) == (1, spec.instance_id, 7, spec.name)
    assert die.time is not None and since <= die.time.timestamp() <= time.time() + 1


# --------------------------------------------------------------------------- images


async def test_image_not_found_and_pull_failure(harness: Harness) -> None:
    d = harness.driver
    assert await d.inspect_image(f"dm-test/{harness.prefix}-none:1") is None
    await d.remove_image(f"dm-test/{harness.prefix}-none:1")  # missing: fine
    with pytest.raises(ImageNotFoundError):
        await collect_bytes(d.export_image(f"dm-test/{harness.prefix}-none:1"))
    with pytest.raises(InvalidError):
        await d.inspect_image("../../containers/json")
    messages: list[dict[str, object]] = []
    with pytest.raises(PullFailedError) as excinfo:
        await d.pull(f"127.0.0.1:1/{harness.prefix}/nothing:1", progress=messages.append)
    assert excinfo.value.code == "pull_failed"
    assert excinfo.value.message


async def collect_bytes(iterator: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in iterator])


async def test_import_rootfs_from_stream_and_gzip_file(harness: Harness, tmp_path: Path) -> None:
    d = harness.driver
    data = rootfs_tar()
    repo = harness.repository("rootfs")
    image = await d.import_image(
        chunks_of(data), repository=repo, tag="v1", changes=['CMD ["/bin/true"]', harness.label_change]
    )
    assert f"{repo}:v1" in image.repo_tags
    assert image.id.startswith("sha256:")
    assert image.labels[TEST_LABEL] == harness.prefix
    listed = {i.id: i for i in await d.list_images()}
    assert f"{repo}:v1" in listed[image.id].repo_tags
    inspected = await d.inspect_image(f"{repo}:v1")
    assert inspected is not None and inspected.id == image.id

    packed = tmp_path / "rootfs.tar.gz"
    packed.write_bytes(gzip.compress(data))
    from_file = await d.import_image(packed, repository=repo, tag="v2", changes=[harness.label_change])
    assert f"{repo}:v2" in from_file.repo_tags


async def test_import_save_archive_roundtrip(harness: Harness, tmp_path: Path) -> None:
    d = harness.driver
    original = await d.inspect_image(harness.image)
    assert original is not None
    repo = harness.repository("saved")
    # Streamed straight from export into import: nothing is held in memory.
    loaded = await d.import_image(d.export_image(harness.image), repository=repo, tag="copy")
    assert loaded.id == original.id
    assert f"{repo}:copy" in loaded.repo_tags
    again = await d.inspect_image(harness.image)
    assert again is not None and again.id == original.id

    archive = tmp_path / "saved.tar"
    archive.write_bytes(await collect_bytes(d.export_image(f"{repo}:copy")))
    from_file = await d.import_image(archive, repository=repo, tag="file")
    assert from_file.id == original.id


async def test_import_rejects_what_is_not_an_image(harness: Harness, tmp_path: Path) -> None:
    d = harness.driver
    with pytest.raises(InvalidError, match="not a tar"):
        await d.import_image(chunks_of(b"this is not a tar archive" * 100), repository=harness.repository("junk"))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("a" * 64 + "/layer.tar")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(InvalidError, match="neither"):
        await d.import_image(chunks_of(buffer.getvalue()), repository=harness.repository("half"))
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    with pytest.raises(InvalidError, match="empty"):
        await d.import_image(empty)
    with pytest.raises(InvalidError):
        await d.import_image(chunks_of(rootfs_tar()), repository="Not/Valid Name")


async def test_commit(harness: Harness) -> None:
    d = harness.driver
    info = await d.create(harness.spec("commit", command=SLEEPER))
    await d.start(info.id)
    repo = harness.repository("committed")
    image = await d.commit(info.id, repository=repo, tag="snap", message="a snapshot")
    assert f"{repo}:snap" in image.repo_tags
    # DM's labels are blanked in the image: its containers are not taken for the original.
    assert image.labels.get(LABEL_MANAGED) != "1"
    assert image.labels.get(LABEL_INSTANCE, "") == ""
    reuse = await d.create(harness.spec("from-commit", image=f"{repo}:snap", command=SLEEPER))
    assert reuse.managed and reuse.instance_id != info.instance_id
    foreign = await d.inspect(await harness.make_unmanaged("from-commit-foreign", SLEEPER))
    assert foreign is not None
    with pytest.raises(NotFoundError):
        await d.commit(harness.name("nothing"), repository=repo)


async def test_remove_image_in_use_needs_force(harness: Harness) -> None:
    d = harness.driver
    repo = harness.repository("inuse")
    image = await d.import_image(chunks_of(rootfs_tar()), repository=repo, tag="1", changes=[harness.label_change])
    user = await d.create(harness.spec("user", image=f"{repo}:1", command=["/bin/true"]))
    with pytest.raises(ConflictError) as excinfo:
        await d.remove_image(f"{repo}:1")
    assert excinfo.value.code == "conflict"
    kept = await d.inspect_image(f"{repo}:1")
    assert kept is not None and kept.id == image.id
    await d.remove_image(f"{repo}:1", force=True)
    assert await d.inspect_image(f"{repo}:1") is None
    await d.remove(user.id)
    await d.remove_image(image.id)  # now unused and untagged
    assert await d.inspect_image(image.id) is None

    unused = await d.import_image(chunks_of(rootfs_tar()), repository=repo, tag="2", changes=[harness.label_change])
    await d.remove_image(f"{repo}:2")
    assert await d.inspect_image(unused.id) is None


async def test_version(harness: Harness) -> None:
    version = await harness.driver.version()
    assert version["name"] == harness.kind
    assert version["version"]


async def test_close_ends_follows_and_event_streams(harness: Harness) -> None:
    d = harness.driver
    harness.program(TICKER, _ticker)
    info = await d.create(harness.spec("closing", command=TICKER))
    await d.start(info.id)
    lines: list[str] = []
    events: list[RuntimeEvent] = []
    got_line = asyncio.Event()

    async def follow() -> None:
        async for line in d.logs(info.id, follow=True):
            lines.append(line)
            got_line.set()

    async def watch() -> None:
        async for event in d.events(since=time.time() - 1):
            events.append(event)

    tasks = [asyncio.create_task(follow()), asyncio.create_task(watch())]
    await asyncio.wait_for(got_line.wait(), 10)
    await asyncio.sleep(0.2)
    await d.close()
    await asyncio.wait_for(asyncio.gather(*tasks), 10)  # both end, neither raises
    assert lines and lines[0] == "tick 1"
    assert any(e.container_id == info.id and e.action == "start" for e in events)


# --------------------------------------------------------------------------- capabilities

# One GPU of each vendor (nothing on the test host has them: what counts is what the driver asks).
GPUS = {
    "nvidia": (GpuRequest(vendor="nvidia", uuid="GPU-7a5d1e55-0000-4000-8000-000000000000"), "DeviceRequests"),
    "amd": (GpuRequest(vendor="amd", dri_card="/dev/dri/card1", dri_render="/dev/dri/renderD128"), "Devices"),
    "jetson": (GpuRequest(vendor="jetson"), "Runtime"),
}


async def refused(call: Awaitable[object]) -> None:
    with pytest.raises(UnsupportedError) as excinfo:
        await call
    assert excinfo.value.code == "unsupported" and "capability" in excinfo.value.message


async def check_claims(h: Harness, tag: str) -> None:
    """Each capability the driver claims, it has; each it does not claim, it refuses
    (``unsupported``) without doing any of it."""
    d = h.driver
    caps = d.capabilities()

    for name, key, value in (("privileged", "Privileged", True), ("host_network", "NetworkMode", "host")):
        spec = h.spec(f"{tag}-{name}", command=SLEEPER, **{name: True})
        if caps.can(name):
            info = await d.create(spec)
            assert (await h.host_config(info.id))[key] == value
        else:
            await refused(d.create(spec))
            assert await d.find_instance(spec.instance_id) is None

    for vendor, (gpu, key) in GPUS.items():
        spec = h.spec(f"{tag}-{vendor}", command=SLEEPER, gpus=[gpu])
        if not caps.can_pass(vendor):
            await refused(d.create(spec))
            assert await d.find_instance(spec.instance_id) is None
            continue
        try:
            info = await d.create(spec)
        except DriverError as exc:  # the engine may lack the vendor's runtime (Jetson's nvidia runtime)
            assert exc.code == "invalid" and vendor == "jetson", exc
        else:
            assert (await h.host_config(info.id)).get(key)

    h.program(FIVE_LINES, _five_lines)
    done = await d.create(h.spec(f"{tag}-done", command=FIVE_LINES))
    await d.start(done.id)
    await wait_for_state(h, done.id, "exited")
    if caps.logs_follow:
        assert await asyncio.wait_for(collect(d.logs(done.id, follow=True)), 10) == [f"line {i}" for i in range(1, 6)]
    else:
        await refused(collect(d.logs(done.id, follow=True)))
        assert await collect(d.logs(done.id)) == [f"line {i}" for i in range(1, 6)]  # without follow: as ever

    running = await d.create(h.spec(f"{tag}-running", command=SLEEPER))
    await d.start(running.id)
    if caps.exec:
        assert (await d.exec(running.id, ["echo", "can"])).stdout == b"can\n"
    else:
        await refused(d.exec(running.id, ["echo", "cannot"]))
    if caps.exec_tty:
        session = await d.exec_interactive(running.id, ["echo", "can"], tty=True)
        try:
            assert b"can" in b"".join(data for _, data in await read_all(session))
        finally:
            await session.close()
    else:
        await refused(d.exec_interactive(running.id, ["echo", "cannot"], tty=True))

    repo = h.repository(f"{tag}-caps")
    if caps.commit:
        assert f"{repo}:commit" in (await d.commit(running.id, repository=repo, tag="commit")).repo_tags
    else:
        await refused(d.commit(running.id, repository=repo, tag="commit"))
        assert await d.inspect_image(f"{repo}:commit") is None

    imported = d.import_image(chunks_of(rootfs_tar()), repository=repo, tag="import", changes=[h.label_change])
    if caps.image_import:
        assert f"{repo}:import" in (await imported).repo_tags
    else:
        await refused(imported)
        assert await d.inspect_image(f"{repo}:import") is None

    if caps.image_export:
        with tarfile.open(fileobj=io.BytesIO(await collect_bytes(d.export_image(h.image)))) as archive:
            assert "manifest.json" in archive.getnames()
    else:
        await refused(collect_bytes(d.export_image(h.image)))

    if caps.pull:  # it tries: the failure is the (unreachable) registry's
        with pytest.raises(PullFailedError):
            await d.pull(f"127.0.0.1:1/{h.prefix}/nothing:1")
    else:
        await refused(d.pull(f"127.0.0.1:1/{h.prefix}/nothing:1"))

    if caps.file_copy:
        await d.put_archive(running.id, "/tmp", chunks_of(_tar_of({f"{tag}.txt": b"in"})))
        assert _members(await collect_bytes(d.get_archive(running.id, f"/tmp/{tag}.txt"))) == {f"{tag}.txt": b"in"}
    else:
        await refused(d.put_archive(running.id, "/tmp", chunks_of(_tar_of({f"{tag}.txt": b"in"}))))
        await refused(collect_bytes(d.get_archive(running.id, "/tmp")))


async def test_capabilities_are_what_the_driver_does(harness: Harness) -> None:
    caps = harness.driver.capabilities()
    assert Capabilities.from_dict(caps.to_dict()) == caps  # as the facts carry them
    await check_claims(harness, "claimed")
    if harness.fake is not None:  # a runtime that can do none of it refuses each
        harness.fake.set_capabilities(**{n: () if n == "gpu_vendors" else False for n in caps.to_dict()})
        await check_claims(harness, "none")
