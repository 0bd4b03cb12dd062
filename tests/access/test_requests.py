"""instance.access requests checked before anything runs; instances without a container."""

from __future__ import annotations

from typing import Any

import pytest

from agent import protocol as p
from agent.access.ssh import MAX_KEY_CHARS, MAX_KEYS, SshAccess, SshSpec
from agent.handlers import HandlerError, HandlerRegistry, dispatch
from agent.protocol.types import ContainerInfo
from agent.runtime.fake import FakeDriver
from tests.wire import call

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq0dyJgUWOR0a2lUyBG8bx1lBP6t4HThTwBEexXL+Ah me@here"


async def nothing(instance_id: int) -> ContainerInfo | None:
    return None


@pytest.mark.parametrize("data", [
    {},
    {"instance_id": "7", "ssh": {"enabled": True, "keys": []}},
    {"instance_id": True, "ssh": {"enabled": True, "keys": []}},
    {"instance_id": -1, "ssh": {"enabled": True, "keys": []}},
    {"instance_id": 7},
    {"instance_id": 7, "ssh": []},
    {"instance_id": 7, "ssh": {"enabled": "yes", "keys": []}},
    {"instance_id": 7, "ssh": {"enabled": True}},
    {"instance_id": 7, "ssh": {"enabled": True, "keys": KEY}},
    {"instance_id": 7, "ssh": {"enabled": True, "keys": [KEY, 5]}},
    {"instance_id": 7, "ssh": {"enabled": True, "keys": ["  "]}},
    {"instance_id": 7, "ssh": {"enabled": True, "keys": [KEY + "\nssh-rsa AAAA other"]}},
    {"instance_id": 7, "ssh": {"enabled": True, "keys": [KEY + "\r"]}},
    {"instance_id": 7, "ssh": {"enabled": True, "keys": [KEY + "\x00"]}},
    {"instance_id": 7, "ssh": {"enabled": True, "keys": [KEY + " " + "x" * MAX_KEY_CHARS]}},
    {"instance_id": 7, "ssh": {"enabled": True, "keys": [KEY] * (MAX_KEYS + 1)}},
])
async def test_bad_requests_are_invalid(data: dict[str, Any]) -> None:
    driver = FakeDriver()
    access = SshAccess(driver, nothing)
    with pytest.raises(HandlerError) as caught:
        await call(access.handle_access, p.InstanceAccess, data)
    assert caught.value.code == "invalid"
    assert access.spec(7) is None  # nothing remembered
    assert driver.calls == []


async def test_missing_container_is_not_running_and_remembered() -> None:
    access = SshAccess(FakeDriver(), nothing)
    reply = await call(access.handle_access, p.InstanceAccess,
                       {"instance_id": 7, "ssh": {"enabled": True, "keys": [KEY]}})
    assert reply == {"ssh": {"state": "not_running", "user": None, "message": "the instance has no container",
                             "host_keys": []}}
    assert access.spec(7) == SshSpec(enabled=True, keys=(KEY,))
    assert access.status(7) == reply["ssh"]
    assert await access.supervise_once() == {}
    assert (await access.on_container_event(7, "start") or {})["state"] == "not_running"
    assert await access.on_container_event(None, "start") is None
    assert await access.on_container_event(8, "start") is None  # never told about instance 8


async def test_dispatched_through_a_registry() -> None:
    registry = HandlerRegistry()
    SshAccess(FakeDriver(), nothing).register(registry)
    ok = await dispatch(registry, p.Envelope(type=p.INSTANCE_ACCESS, id="r1",
                                             data={"instance_id": 3, "ssh": {"enabled": False}}))
    assert ok.ok and ok.data["ssh"]["state"] == "disabled"  # revoked on start: nothing runs until then
    bad = await dispatch(registry, p.Envelope(type=p.INSTANCE_ACCESS, id="r2", data={"instance_id": 3}))
    assert not bad.ok and bad.error is not None and bad.error["code"] == "invalid"


def test_keys_file_is_one_line_per_key() -> None:
    assert SshSpec(True, (KEY, "# note")).keys_file() == f"{KEY}\n# note\n".encode()
    assert SshSpec(True, ()).keys_file() == b""
