"""What only the fake driver does: scripted failures and delays, crashes and OOM kills, pulls."""

from __future__ import annotations

import asyncio
import json

import pytest

from agent.runtime import (
    ConflictError,
    ContainerSpec,
    DriverError,
    ImageNotFoundError,
    InvalidError,
    NotFoundError,
    PullFailedError,
    RuntimeEvent,
    UnavailableError,
    container_create_payload,
    error_for,
    make_driver,
)
from agent.runtime.fake import FakeDriver, FakeProcess

IMAGE = "debian:12"


@pytest.fixture
async def fake():
    driver = FakeDriver()
    driver.add_image(IMAGE)
    yield driver
    await driver.close()


def spec(instance_id: int = 1, name: str | None = None, **kwargs) -> ContainerSpec:
    return ContainerSpec(instance_id=instance_id, node_id=2, name=name or f"dm-{instance_id}", image=IMAGE, **kwargs)


async def test_lost_create_reply_is_found_on_retry(fake: FakeDriver) -> None:
    fake.fail_next("create", after=True)  # the engine creates, the reply is lost
    with pytest.raises(UnavailableError):
        await fake.create(spec(5))
    created = await fake.find_instance(5)
    assert created is not None
    retried = await fake.create(spec(5))
    assert retried.id == created.id
    assert len(await fake.list()) == 1


async def test_fail_next_times_and_codes(fake: FakeDriver) -> None:
    info = await fake.create(spec())
    fake.fail_next("start", times=2, code="runtime_error", message="boom")
    for _ in range(2):
        with pytest.raises(DriverError) as excinfo:
            await fake.start(info.id)
        assert (excinfo.value.code, excinfo.value.message) == ("runtime_error", "boom")
    await fake.start(info.id)
    assert [c for c in fake.calls if c[0] == "start"] == [("start", (info.id,))] * 3
    assert (await fake.inspect(info.id)).state == "running"  # type: ignore[union-attr]


async def test_delay_then_timeout_leaves_nothing_behind(fake: FakeDriver) -> None:
    fake.delay_next("create", 0.5)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(fake.create(spec(9)), 0.05)
    assert await fake.find_instance(9) is None
    assert (await fake.create(spec(9))).instance_id == 9  # the delay applied once


async def test_unavailable_engine(fake: FakeDriver) -> None:
    fake.available = False
    with pytest.raises(UnavailableError):
        await fake.list()
    with pytest.raises(UnavailableError):
        await fake.version()
    fake.available = True
    assert await fake.list() == []


async def test_payload_recorded_is_the_engine_body(fake: FakeDriver) -> None:
    s = spec(cpus=2, memory_mb=512, env={"A": "1"})
    info = await fake.create(s)
    assert fake.payloads[info.id] == container_create_payload(s)


async def test_oom_kill_and_crash_events(fake: FakeDriver) -> None:
    events: list[RuntimeEvent] = []
    info = await fake.create(spec(3))
    await fake.start(info.id)
    fake.exit(info.id, 137, oom=True)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    dead = await fake.inspect(info.id)
    assert dead is not None
    assert (dead.state, dead.exit_code, dead.oom_killed) == ("exited", 137, True)
    async for event in fake.events(since=0):
        events.append(event)
        if event.action == "die":
            break
    assert [e.action for e in events] == ["create", "start", "oom", "die"]
    assert events[-1].exit_code == 137 and events[-1].instance_id == 3
    with pytest.raises(ConflictError):
        fake.exit(info.id)


async def test_failing_program_exits_1_with_its_error_in_the_logs(fake: FakeDriver) -> None:
    async def broken(proc: FakeProcess) -> int:
        proc.write("partial line")
        raise RuntimeError("segfault, more or less")

    fake.register_program(["run"], broken)
    info = await fake.create(spec(command=["run"]))
    await fake.start(info.id)
    for _ in range(10):
        await asyncio.sleep(0)
    dead = await fake.inspect(info.id)
    assert dead is not None and (dead.state, dead.exit_code) == ("exited", 1)
    assert [line async for line in fake.logs(info.id)] == ["partial line", "RuntimeError: segfault, more or less"]


async def test_register_program_by_predicate(fake: FakeDriver) -> None:
    async def shout(proc: FakeProcess) -> int:
        proc.print(" ".join(proc.argv[1:]).upper())
        return 0

    fake.register_program(lambda argv: argv[:1] == ["shout"], shout)
    info = await fake.create(spec(command=["sleep", "100"]))
    await fake.start(info.id)
    result = await fake.exec(info.id, ["shout", "hi", "there"])
    assert result.stdout == b"HI THERE\n"
    missing = await fake.exec(info.id, ["nope"])
    assert missing.exit_code == 127 and b"not found" in missing.stderr


async def test_pull_with_progress(fake: FakeDriver) -> None:
    fake.add_remote_image("registry.local:5000/team/app:1", labels={"org": "x"})
    progress: list[dict[str, object]] = []

    async def on_progress(message: dict[str, object]) -> None:
        progress.append(message)

    image = await fake.pull("registry.local:5000/team/app:1", progress=on_progress)
    assert "registry.local:5000/team/app:1" in image.repo_tags and image.labels == {"org": "x"}
    assert progress[0]["status"] == "Pulling from registry.local:5000/team/app"
    assert any(m.get("status") == "Downloading" for m in progress)
    assert str(progress[-1]["status"]).startswith("Status: Downloaded newer image")
    with pytest.raises(PullFailedError):
        await fake.pull("registry.local:5000/team/other")
    with pytest.raises(InvalidError):
        await fake.pull("app:1", auth={"username": "u", "password": "p"})


async def test_close_ends_event_streams_and_programs(fake: FakeDriver) -> None:
    info = await fake.create(spec())
    await fake.start(info.id)
    seen: list[str] = []

    async def watch() -> None:
        async for event in fake.events():
            seen.append(event.action)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0)
    await fake.stop(info.id)
    await fake.close()
    await asyncio.wait_for(watcher, 1)
    assert seen == ["kill", "die", "stop"]
    with pytest.raises(UnavailableError):
        await fake.list()


async def test_unmanaged_container_is_not_adopted(fake: FakeDriver) -> None:
    foreign = fake.add_container("someone", IMAGE, labels={"dm.managed": "0", "dm.instance": "4"}, running=True)
    assert foreign.managed is False and foreign.instance_id is None
    assert await fake.find_instance(4) is None
    created = await fake.create(spec(4))
    assert created.id != foreign.id
    with pytest.raises(ImageNotFoundError):
        fake.add_container("x", "missing:1")


async def test_remove_image_rules(fake: FakeDriver) -> None:
    image = fake.add_image("team/app:1")
    fake.add_image("team/app:1")  # the tag moves to a new image; the old one is dangling
    moved = await fake.inspect_image(image.id)
    assert moved is not None and moved.repo_tags == []
    two = fake.add_image("team/two:a")
    fake._tag(fake._images[two.id], "team/two:b")
    with pytest.raises(ConflictError, match="multiple repositories"):
        await fake.remove_image(two.id)
    await fake.remove_image("team/two:a")  # one of two tags: an untag
    assert (await fake.inspect_image(two.id)).repo_tags == ["team/two:b"]  # type: ignore[union-attr]


def test_error_codes_and_classes() -> None:
    for code in ("not_found", "image_not_found", "conflict", "invalid", "unavailable", "pull_failed", "timeout"):
        error = error_for(code, "why")
        assert (error.code, error.message, str(error)) == (code, "why", f"{code}: why")
        assert isinstance(error, DriverError) and isinstance(error, RuntimeError)
        assert type(error) is not DriverError
    assert isinstance(error_for("not_found", "x"), NotFoundError)
    assert not isinstance(error_for("image_not_found", "x"), NotFoundError)
    odd = error_for("something_new", "x")
    assert type(odd) is DriverError and odd.to_dict() == {"code": "something_new", "message": "x"}


async def test_infos_are_json_ready(fake: FakeDriver) -> None:
    info = await fake.create(spec())
    await fake.start(info.id)
    running = await fake.inspect(info.id)
    assert running is not None
    json.dumps(running.to_dict())
    json.dumps([i.to_dict() for i in await fake.list_images()])
    json.dumps((await fake.exec(info.id, ["echo", "x"])).to_dict())


async def test_make_driver() -> None:
    driver = make_driver("fake")
    assert isinstance(driver, FakeDriver)
    await driver.close()
    with pytest.raises(InvalidError):
        make_driver("lxc")
