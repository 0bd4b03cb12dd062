"""Logging in to the SSH gateway with the real OpenSSH client: DM keys as the DM username, public
key only, checked at every login; revocation ends open connections; failures throttled with the
rest of DM's authentications; the host key made once and shown by the API and the account page."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

from aiohttp.test_utils import TestClient

from dmd.core import DM
from dmd.ssh.hostkey import FILE_NAME
from tests.access.conftest import KeyPair
from tests.conftest import PASSWORD, AppFactory, login
from tests.databases import every_database  # noqa: F401 (fixture: logins and audit on all three databases)
from tests.ssh.conftest import Gateway, make_gateway, run
from tests.waiting import wait_for


async def audit(gw: Gateway, action: str) -> list[dict]:
    body = await gw.api("GET", f"/audit?action={action}", "boss")
    return list(body["items"])


async def test_a_dm_user_logs_in_with_their_key_and_gets_the_help(gateway: Gateway) -> None:
    got = await gateway.ssh("alice", "alice")
    assert got.returncode == 0, got.stderr
    assert "Hello alice" in got.stdout
    assert f"-J alice@127.0.0.1:{gateway.port}" in got.stdout
    # A command is no way to a shell on the gateway: the same help, exit 0.
    got = await gateway.ssh("alice", "alice", command=["cat", "/etc/passwd"])
    assert got.returncode == 0 and "Hello alice" in got.stdout and "root:" not in got.stdout
    entries = await wait_for(lambda: _entries(gateway, "ssh.login", 2), "two ssh.login entries")
    assert {e["actor"] for e in entries} == {"alice"} and all(e["ip"] == "127.0.0.1" for e in entries)
    assert entries[0]["detail"]["key_id"] == gateway.key_ids["alice"]


async def _entries(gw: Gateway, action: str, n: int) -> list[dict] | None:
    found = await audit(gw, action)
    return found if len(found) >= n else None


async def test_wrong_keys_unknown_users_and_passwords_are_refused(gateway: Gateway) -> None:
    assert (await gateway.ssh("alice", "bob")).refused  # bob's key is not alice's
    assert (await gateway.ssh("nobody", "alice")).refused  # no such DM user
    assert (await gateway.ssh("alice", "spare")).refused  # a key nobody registered
    # No password or keyboard-interactive: the server offers public keys only.
    got = await gateway.ssh("alice", "alice", "-o", "PubkeyAuthentication=no", "-o", "PasswordAuthentication=yes",
                            "-o", "KbdInteractiveAuthentication=yes")
    assert got.refused and "(publickey)" in got.stderr, got.stderr
    failed = await wait_for(lambda: _entries(gateway, "ssh.login_failed", 4), "four failed logins audited")
    assert {e["detail"]["username"] for e in failed} == {"alice", "nobody"}
    assert {e["detail"]["reason"] for e in failed} >= {"no such user", "no accepted key"}
    # Nothing else disturbed: alice still gets in.
    assert (await gateway.ssh("alice", "alice")).returncode == 0


async def held(gw: Gateway, user: str, key: str) -> asyncio.subprocess.Process:
    """An open gateway connection (no session: -N), once it has logged in."""
    proc = await asyncio.create_subprocess_exec(*gw.argv(user, key, "-N"), stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    uid = gw.user_ids[user]

    async def logged_in() -> bool:
        if proc.returncode is not None:
            raise AssertionError(f"ssh -N exited: {(await proc.stderr.read()).decode()}")  # type: ignore[union-attr]
        return gw.client.app[DM].gateway.count(uid) > 0

    await wait_for(logged_in, f"{user} logged in to the gateway")
    return proc


async def ended(proc: asyncio.subprocess.Process, timeout: float = 10) -> str:
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError("the connection stayed open") from None
    assert proc.returncode == 255
    return err.decode(errors="replace")


async def test_deleting_a_key_ends_the_connections_and_refuses_it_next_time(gateway: Gateway) -> None:
    proc = await held(gateway, "alice", "alice")
    bobs = await held(gateway, "bob", "bob")
    await gateway.api("DELETE", f"/ssh-keys/{gateway.key_ids['alice']}", "alice", status=204)
    err = await ended(proc)
    assert "was deleted" in err, err
    assert (await gateway.ssh("alice", "alice")).refused
    # Another user's connection is not touched.
    assert bobs.returncode is None and gateway.client.app[DM].gateway.count(gateway.user_ids["bob"]) == 1
    bobs.terminate()
    await bobs.wait()


async def test_disabling_a_user_ends_their_connections_and_refuses_them(gateway: Gateway) -> None:
    proc = await held(gateway, "alice", "alice")
    await gateway.api("PATCH", f"/users/{gateway.user_ids['alice']}", "boss", {"disabled": True})
    err = await ended(proc)
    assert "disabled" in err, err
    assert (await gateway.ssh("alice", "alice")).refused
    await gateway.api("PATCH", f"/users/{gateway.user_ids['alice']}", "boss", {"disabled": False})
    assert (await gateway.ssh("alice", "alice")).returncode == 0  # it was the disabling


async def test_a_burst_of_failed_logins_is_throttled_with_the_web_login(gateway: Gateway) -> None:
    free = gateway.client.app[DM].throttle.free * gateway.client.app[DM].throttle.address_factor
    for _ in range(free):  # the free attempts of an address
        assert (await gateway.ssh("alice", "spare")).refused
    got = await gateway.ssh("alice", "alice")  # the right key, from the throttled address
    assert got.returncode == 255 and "too many failed authentications" in got.stderr, got.stderr
    # One budget per address: the web login from the same address waits too.
    r = await gateway.client.post("/api/v1/auth/login", json={"email": "bob@example.org", "password": PASSWORD})
    assert r.status == 429, await r.text()


async def test_the_host_key_is_made_once_private_and_shown(make_client: AppFactory, tmp_path: Path,
                                                             gw_keys: dict[str, KeyPair]) -> None:
    gw = await make_gateway(make_client, tmp_path, gw_keys)
    data_dir = Path(gw.client.app[DM].config.data_dir)
    mode = stat.S_IMODE(os.stat(data_dir / FILE_NAME).st_mode)
    assert mode == 0o600, oct(mode)
    shown = await gw.api("GET", "/ssh/gateway", "bob")
    assert shown["port"] == gw.port and shown["host"] == "127.0.0.1" and shown["username"] == "bob"
    # What the server offers is what the API shows.
    scan = await run(["ssh-keyscan", "-p", str(gw.port), "127.0.0.1"])
    listed = await run(["ssh-keygen", "-lf", "-"], stdin=scan.stdout.encode())
    assert shown["fingerprint"] in listed.stdout and shown["host_key"] in scan.stdout
    # The account page shows the fingerprint.
    await login(gw.client, "bob@example.org")
    page = await (await gw.client.get("/account")).text()
    assert shown["fingerprint"] in page and f"bob@127.0.0.1:{gw.port}" in page
    # A second start on the same data dir keeps the key.
    again: TestClient = await make_client(ssh_listen="127.0.0.1:0")  # type: ignore[type-arg]
    addr = again.app[DM].gateway.address
    assert addr is not None and addr.fingerprint == shown["fingerprint"] and addr.port != gw.port


async def test_a_dmd_with_the_gateway_off_says_so(client: TestClient, admin: dict[str, str]) -> None:  # type: ignore[type-arg]
    assert client.app[DM].gateway.address is None
    for path in ("/api/v1/ssh/gateway", "/api/v1/ssh/config"):
        r = await client.get(path, headers=admin)
        assert r.status == 404 and (await r.json())["error"]["code"] == "ssh_gateway_off"
    assert not (Path(client.app[DM].config.data_dir) / FILE_NAME).exists()


async def test_a_taken_ssh_port_stops_dmd_with_a_clear_reason(tmp_path: Path) -> None:
    import socket
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            http_port = s.getsockname()[1]
        got = await run([sys.executable, "-m", "dmd", "serve", "--data-dir", str(tmp_path / "data"),
                          "--listen", f"127.0.0.1:{http_port}", "--ssh-listen", f"127.0.0.1:{port}"], timeout=60)
    assert got.returncode == 1, got
    assert f"cannot start: SSH gateway on 127.0.0.1:{port}:" in got.stderr and "ssh_listen" in got.stderr, got.stderr
