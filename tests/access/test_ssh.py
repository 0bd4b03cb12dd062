"""SSH access into a real Debian container with OpenSSH, logged into with the real ssh client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from agent import protocol as p
from tests.access.conftest import Box, KeyPair, host_key_fingerprints, host_keys_offered, running_box, ssh
from tests.waiting import wait_for
from tests.wire import call

pytestmark = [pytest.mark.docker, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def box(test_images: tuple[str, str]) -> AsyncIterator[Box]:
    async with running_box(test_images[0]) as made:
        yield made


async def test_given_key_logs_in_and_another_is_refused(box: Box, keys: dict[str, KeyPair]) -> None:
    status = await box.access_ssh([keys["A"].public])
    assert status["state"] == "ready", status
    assert status["user"] == "root" and status["message"] is None
    assert {k["type"] for k in status["host_keys"]} >= {"ED25519", "RSA"}
    ip = await box.ip()
    login = await ssh(ip, keys["A"], command="id -un")
    assert login.ok, login
    assert login.stdout.strip() == "root"
    assert (await ssh(ip, keys["B"])).refused
    # DM's keys are in DM's own file, root's, readable by sshd's checks (StrictModes).
    listing = await box.sh("stat -c '%U %a %n' /etc/dm /etc/dm/ssh /etc/dm/ssh/*")
    assert listing.stdout_text.split("\n")[:3] == [
        "root 755 /etc/dm", "root 755 /etc/dm/ssh", "root 644 /etc/dm/ssh/root.keys",
    ], listing


async def test_new_key_list_replaces_the_old_at_once(box: Box, keys: dict[str, KeyPair]) -> None:
    assert (await box.access_ssh([keys["A"].public]))["state"] == "ready"
    ip = await box.ip()
    assert (await ssh(ip, keys["A"])).ok
    assert (await box.access_ssh([keys["B"].public]))["state"] == "ready"
    assert (await ssh(ip, keys["A"])).refused
    assert (await ssh(ip, keys["B"])).ok
    both = await box.access_ssh([keys["A"].public, keys["B"].public])
    assert both["state"] == "ready"
    assert (await ssh(ip, keys["A"])).ok and (await ssh(ip, keys["B"])).ok


async def test_empty_key_list_revokes_every_dm_key(box: Box, keys: dict[str, KeyPair]) -> None:
    assert (await box.access_ssh([keys["A"].public, keys["B"].public]))["state"] == "ready"
    ip = await box.ip()
    assert (await ssh(ip, keys["A"])).ok
    status = await box.access_ssh([])
    assert status["state"] == "ready", status  # sshd keeps running, with no DM key
    assert (await ssh(ip, keys["A"])).refused
    assert (await ssh(ip, keys["B"])).refused
    assert (await box.sh("cat /etc/dm/ssh/root.keys")).stdout == b""


async def test_users_own_authorized_keys_are_kept(box: Box, keys: dict[str, KeyPair]) -> None:
    own = keys["C"].public
    setup = await box.sh(f"mkdir -p -m 700 /root/.ssh && printf '%s\\n' '{own}' > /root/.ssh/authorized_keys")
    assert setup.exit_code == 0, setup
    try:
        assert (await box.access_ssh([keys["A"].public]))["state"] == "ready"
        ip = await box.ip()
        assert (await ssh(ip, keys["A"])).ok
        assert (await ssh(ip, keys["C"])).ok  # the user's own key still works
        assert (await box.access_ssh([]))["state"] == "ready"
        assert (await ssh(ip, keys["C"])).ok  # revoking DM's keys leaves it alone
        assert (await box.sh("cat /root/.ssh/authorized_keys")).stdout_text == f"{own}\n"
    finally:
        await box.sh("rm -rf /root/.ssh")


async def test_host_key_fingerprints_match_what_the_server_offers(box: Box, keys: dict[str, KeyPair]) -> None:
    status = await box.access_ssh([keys["A"].public])
    reported = {(k["type"], k["fingerprint"]) for k in status["host_keys"]}
    assert all(fp.startswith("SHA256:") for _, fp in reported), reported
    assert reported == await host_key_fingerprints(await box.ip())
    # The public keys themselves come too (known_hosts lines for `dmd ssh-config`): each one is
    # the key of its fingerprint.
    scanned = await host_keys_offered(await box.ip())
    assert {k["key"] for k in status["host_keys"]} == scanned


async def test_key_lines_with_options_and_odd_characters_travel_intact(box: Box, keys: dict[str, KeyPair]) -> None:
    marker = f"/tmp/pwn-{box.prefix}"
    nasty = (
        f"$(touch {marker}-1) `touch {marker}-2` '; touch {marker}-3; ' \"; touch {marker}-4\" "
        f"\\ %u %h ${{HOME}} && touch {marker}-5 | tee {marker}-6 ; é 鍵"
    )
    forced = keys["A"].line(options='no-agent-forwarding,command="echo forced by dm"', comment=nasty)
    plain_b = keys["B"].line(comment=nasty)
    status = await box.access_ssh([forced, plain_b])
    assert status["state"] == "ready", status
    written = await box.sh("cat /etc/dm/ssh/root.keys")
    assert written.stdout == f"{forced}\n{plain_b}\n".encode(), written
    ip = await box.ip()
    login = await ssh(ip, keys["A"], command="id")
    assert login.ok, login
    assert login.stdout.strip() == "forced by dm"  # the option arrived and sshd honours it
    assert (await ssh(ip, keys["B"])).ok
    leftovers = await box.sh(f"ls {marker}-* 2>/dev/null; ls /etc/dm/ssh")
    assert leftovers.stdout_text.split() == ["root.keys"], leftovers


async def test_sshd_killed_is_restarted_by_supervise_once(box: Box, keys: dict[str, KeyPair]) -> None:
    assert (await box.access_ssh([keys["A"].public]))["state"] == "ready"
    assert await box.access.supervise_once() == {}  # alive: nothing to do
    ip = await box.ip()
    old = await box.sshd_pid()
    assert old is not None
    await box.sh(f"kill -9 {old}")

    async def gone() -> bool:
        return not (await ssh(ip, keys["A"])).ok

    await wait_for(gone, "sshd gone", 10)
    restarted = await box.access.supervise_once()
    assert set(restarted) == {box.instance_id}
    assert restarted[box.instance_id]["state"] == "ready"
    assert (await box.sshd_pid()) not in (None, old)
    assert (await ssh(ip, keys["A"])).ok
    assert await box.access.supervise_once() == {}


async def test_run_supervisor_brings_sshd_back_and_stops_when_cancelled(box: Box, keys: dict[str, KeyPair]) -> None:
    assert (await box.access_ssh([keys["A"].public]))["state"] == "ready"
    ip = await box.ip()
    task = asyncio.create_task(box.access.run_supervisor(0.2))
    try:
        old = await box.sshd_pid()
        await box.sh(f"kill {old}")

        async def back() -> bool:
            pid = await box.sshd_pid()
            return pid is not None and pid != old and (await ssh(ip, keys["A"])).ok

        await wait_for(back, "sshd back under the supervisor", 15)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()


async def test_forgotten_instance_is_not_supervised(box: Box, keys: dict[str, KeyPair]) -> None:
    assert (await box.access_ssh([keys["A"].public]))["state"] == "ready"
    box.access.forget(box.instance_id)
    assert box.access.status(box.instance_id) is None and box.access.spec(box.instance_id) is None
    pid = await box.sshd_pid()
    assert pid is not None
    await box.sh(f"kill {pid}")
    await wait_for(lambda: box.exited(pid), "sshd gone", 10)
    assert await box.access.supervise_once() == {}
    assert await box.access.on_container_event(box.instance_id, "start") is None
    ip = await box.ip()
    assert not (await ssh(ip, keys["A"])).ok
    assert (await box.access_ssh([keys["A"].public]))["state"] == "ready"  # told again: back
    assert (await ssh(ip, keys["A"])).ok


async def test_disabled_revokes_keys_and_stops_dm_sshd(box: Box, keys: dict[str, KeyPair]) -> None:
    assert (await box.access_ssh([keys["A"].public]))["state"] == "ready"
    ip = await box.ip()
    status = await box.access_ssh([keys["A"].public], enabled=False)
    assert status == {"state": "disabled", "user": None, "message": None, "host_keys": []}
    assert (await box.sh("ls -A /etc/dm/ssh")).stdout == b""
    assert await box.sshd_pid() is None
    login = await ssh(ip, keys["A"])
    assert not login.ok and not login.refused  # nothing listens any more
    assert await box.access.supervise_once() == {}  # disabled: not brought back
    assert (await call(box.access.handle_access, p.InstanceAccess,
                       {"instance_id": box.instance_id, "ssh": {"enabled": False}}))["ssh"][
        "state"] == "disabled"
    assert (await box.access_ssh([keys["A"].public]))["state"] == "ready"
    assert (await ssh(ip, keys["A"])).ok


async def test_stopped_container_is_not_running_and_gets_its_keys_on_start(box: Box, keys: dict[str, KeyPair]) -> None:
    assert (await box.access_ssh([keys["A"].public]))["state"] == "ready"
    await box.driver.stop(box.container_id, timeout=5)
    status = await box.access_ssh([keys["B"].public])
    assert status["state"] == "not_running", status
    assert await box.access.supervise_once() == {}  # a stopped container is left alone
    await box.driver.start(box.container_id)
    ip = await box.ip()
    assert not (await ssh(ip, keys["B"])).ok  # sshd does not survive a stop
    started = await box.access.on_container_event(box.instance_id, "start")
    assert started is not None and started["state"] == "ready", started
    assert box.access.status(box.instance_id) == started
    assert (await ssh(ip, keys["B"])).ok
    assert (await ssh(ip, keys["A"])).refused  # the keys given while it was stopped


async def test_restart_brings_sshd_back(box: Box, keys: dict[str, KeyPair]) -> None:
    first = await box.access_ssh([keys["A"].public])
    assert first["state"] == "ready"
    await box.driver.restart(box.container_id, timeout=5)
    ip = await box.ip()
    # The old pidfile survives the restart; its pid is dead or someone else's now.
    assert not (await ssh(ip, keys["A"])).ok
    again = await box.access.on_container_event(box.instance_id, "restart")
    assert again is not None and again["state"] == "ready"
    assert again["host_keys"] == first["host_keys"]  # generated once, kept in the container
    assert (await ssh(ip, keys["A"])).ok
    assert await box.access.on_container_event(box.instance_id, "die") is None  # only start/restart act


async def test_sshd_configuration_error_is_reported_with_sshds_message(box: Box, keys: dict[str, KeyPair]) -> None:
    assert (await box.access_ssh([keys["A"].public]))["state"] == "ready"
    pid = await box.sshd_pid()
    broken = await box.sh(f"echo 'NoSuchOption yes' > /etc/ssh/sshd_config.d/broken.conf && kill {pid}")
    assert broken.exit_code == 0, broken
    try:
        assert pid is not None
        await wait_for(lambda: box.exited(pid), "sshd gone", 10)
        status = await box.access_ssh([keys["A"].public])
        assert status["state"] == "error", status
        assert "sshd refuses its configuration" in status["message"] and "NoSuchOption" in status["message"]
        assert status["user"] == "root"
        assert (await box.access.supervise_once())[box.instance_id]["state"] == "error"  # retried, still broken
    finally:
        await box.sh("rm -f /etc/ssh/sshd_config.d/broken.conf")
    restarted = await box.access.supervise_once()  # fixed by the user: the next round brings it up
    assert restarted[box.instance_id]["state"] == "ready"
    assert (await ssh(await box.ip(), keys["A"])).ok


async def test_port_taken_by_another_sshd_is_an_error(box: Box, keys: dict[str, KeyPair]) -> None:
    assert (await box.access_ssh([keys["A"].public]))["state"] == "ready"
    # The user's own sshd (not DM's pidfile) holds port 22 once DM's is gone.
    other = await box.sh(f"kill {await box.sshd_pid()}; sleep 0.2; /usr/sbin/sshd -o PidFile=/run/user-sshd.pid")
    assert other.exit_code == 0, other
    try:
        status = await box.access_ssh([keys["A"].public])
        assert status["state"] == "error", status
        assert "port 22" in status["message"]
    finally:
        users = int((await box.sh("cat /run/user-sshd.pid")).stdout_text.strip())
        await box.sh(f"kill {users}; rm -f /run/user-sshd.pid")
        await wait_for(lambda: box.exited(users), "the user's sshd gone", 10)
    assert (await box.access_ssh([keys["A"].public]))["state"] == "ready"
    assert (await ssh(await box.ip(), keys["A"])).ok
