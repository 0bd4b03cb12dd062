"""Through the gateway into a real instance: the OpenSSH client with the ~/.ssh/config that
GET /api/v1/ssh/config gives (ProxyJump through dmd's gateway, StrictHostKeyChecking=yes with
the host keys it lists), to an instance of the test openssh image on the real local node. The
bytes travel on the node's agent link; the encryption stays between the client and the
instance's own sshd."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from dmd.core import DM
from tests.access.conftest import KeyPair
from tests.conftest import AppFactory, add_user, make_token
from tests.instances.conftest import instance, wait_for
from tests.ssh.conftest import Run, interactive, run, through_tunnel

# A tiny HTTP server inside the instance, on its loopback only (the image has perl-base, no python).
HTTP_SERVER = ("perl -MIO::Socket::INET -e '$s=IO::Socket::INET->new(LocalAddr=>\"127.0.0.1\",LocalPort=>8080,"
               "Listen=>5,ReuseAddr=>1) or die; while($c=$s->accept){<$c>; print $c \"HTTP/1.0 200 OK\\r\\n"
               "Content-Type: text/plain\\r\\n\\r\\ndm-tunnel-ok\\n\"; close $c}'")


@pytest.fixture
async def client(make_client: AppFactory) -> TestClient:  # type: ignore[type-arg]
    """This module's dmd has its SSH gateway on."""
    return await make_client(ssh_listen="127.0.0.1:0")


async def config_for(client: TestClient, headers: dict[str, str], key: KeyPair, where: Path) -> Path:  # type: ignore[type-arg]
    """The user's ~/.ssh/config from the API, saved with its known_hosts file; the client's own
    settings (its key, never ask) first, as a user's file would have them."""
    where.mkdir(parents=True, exist_ok=True)
    known = where / "known_hosts"
    r = await client.get(f"/api/v1/ssh/config?known_hosts_path={known}", headers=headers)
    assert r.status == 200, await r.text()
    body = await r.json()
    known.write_text(body["known_hosts"])
    cfg = where / "config"
    cfg.write_text(f"IdentityFile {key.path}\nIdentitiesOnly yes\nBatchMode yes\nStrictHostKeyChecking yes\n"
                   f"ConnectTimeout 10\nServerAliveInterval 5\n\n{body['config']}")
    return cfg


async def ssh(cfg: Path, *args: str, timeout: float = 60) -> Run:
    return await run(["ssh", "-F", str(cfg), *args], timeout=timeout)


async def ready(client: TestClient, headers: dict[str, str], iid: int) -> dict[str, Any]:  # type: ignore[type-arg]
    async def check() -> dict[str, Any] | None:
        got = await instance(client, headers, iid)
        return got if got["ssh"]["state"] == "ready" else None

    return await wait_for(check, "the instance's sshd ready", 90)


async def test_ssh_scp_and_a_tunnel_through_the_gateway(client: TestClient, admin: dict[str, str],  # type: ignore[type-arg]
                                                       test_images: tuple[str, str], keys: dict[str, KeyPair],
                                                       local: dict[str, Any], tmp_path: Path) -> None:
    openssh, _ = test_images
    r = await client.post("/api/v1/ssh-keys", json={"name": "a", "public_key": keys["A"].public}, headers=admin)
    assert r.status == 201, await r.text()
    r = await client.post("/api/v1/instances", json={"name": "box", "image": openssh, "node_id": local["id"],
                                                     "command": ["/bin/sleep", "infinity"]}, headers=admin)
    assert r.status == 201, await r.text()
    iid = (await r.json())["id"]
    await ready(client, admin, iid)
    cfg = await config_for(client, admin, keys["A"], tmp_path / "admin")
    assert "Host box\n" in cfg.read_text()

    # The exit status comes back through the gateway; the host keys were known beforehand.
    got = await ssh(cfg, "box", "echo dm-$((6*7)); exit 3")
    assert got.returncode == 3 and got.stdout.strip() == "dm-42", got
    assert "Warning: Permanently added" not in got.stderr
    # An interactive shell on a terminal.
    assert await interactive(cfg, "box") == 4

    # scp both ways (SFTP under OpenSSH 9), a megabyte of random bytes.
    payload = secrets.token_bytes(1 << 20)
    await asyncio.to_thread((tmp_path / "up.bin").write_bytes, payload)
    got = await run(["scp", "-F", str(cfg), str(tmp_path / "up.bin"), "box:/tmp/up.bin"])
    assert got.returncode == 0, got.stderr
    got = await run(["scp", "-F", str(cfg), "box:/tmp/up.bin", str(tmp_path / "down.bin")])
    assert got.returncode == 0, got.stderr
    assert await asyncio.to_thread((tmp_path / "down.bin").read_bytes) == payload

    # -L inside the instance's session: its own loopback port 8080, from here.
    got = await ssh(cfg, "box", f"setsid {HTTP_SERVER} </dev/null >/dev/null 2>&1 &")
    assert got.returncode == 0, got.stderr
    assert await through_tunnel(cfg, "box", 8080) == "dm-tunnel-ok\n"

    # The forwards were sessions: in the audit, with bytes each way.
    entries = (await (await client.get("/api/v1/audit?action=session.close", headers=admin)).json())["items"]
    ssh_closed = [e for e in entries if e["detail"].get("via") == "ssh"]
    assert ssh_closed and all(e["target_id"] == str(iid) for e in ssh_closed)
    assert max(e["detail"]["bytes_in"] for e in ssh_closed) > len(payload)


async def test_others_are_refused_and_a_disabled_users_session_ends(client: TestClient, admin: dict[str, str],  # type: ignore[type-arg]
                                                                    test_images: tuple[str, str],
                                                                    keys: dict[str, KeyPair], local: dict[str, Any],
                                                                    tmp_path: Path) -> None:
    openssh, _ = test_images
    assert (await client.post("/api/v1/ssh-keys", json={"name": "a", "public_key": keys["A"].public},
                              headers=admin)).status == 201
    r = await client.post("/api/v1/instances", json={"name": "box", "image": openssh, "node_id": local["id"],
                                                     "command": ["/bin/sleep", "infinity"]}, headers=admin)
    iid = (await r.json())["id"]
    await ready(client, admin, iid)
    # bob, a plain user, reaches none of it, even with the owner's key in hand.
    await add_user(client, "bob@example.org", username="bob")
    bob = await make_token(client, "bob@example.org")
    assert (await client.post("/api/v1/ssh-keys", json={"name": "b", "public_key": keys["A"].public},
                              headers=bob)).status == 201
    gw = client.app[DM].gateway.address
    assert gw is not None
    known = tmp_path / "kh"
    known.write_text(gw.known_host + "\n")
    for dest in ("box", str(iid)):
        got = await run(["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={known}",
                         "-o", "StrictHostKeyChecking=yes", "-i", str(keys["A"].path), "-p", str(gw.port),
                         "-W", f"{dest}:22", "bob@127.0.0.1"])
        assert got.returncode == 255 and f"no instance '{dest}' among yours" in got.stderr, got.stderr

    # ops, a second administrator, may use the instance; their open session ends when disabled.
    ops_id = await add_user(client, "ops@example.org", role="admin", username="ops")
    ops = await make_token(client, "ops@example.org")
    assert (await client.post("/api/v1/ssh-keys", json={"name": "a", "public_key": keys["A"].public},
                              headers=ops)).status == 201
    cfg = await config_for(client, ops, keys["A"], tmp_path / "ops")
    held = await asyncio.create_subprocess_exec("ssh", "-F", str(cfg), "box", "echo in; sleep 120",
                                                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    assert held.stdout is not None
    assert (await asyncio.wait_for(held.stdout.readline(), 60)) == b"in\n"
    r = await client.patch(f"/api/v1/users/{ops_id}", json={"disabled": True}, headers=admin)
    assert r.status == 200, await r.text()
    try:
        await asyncio.wait_for(held.wait(), 15)
    except TimeoutError:
        held.kill()
        await held.wait()
        raise AssertionError("the disabled user's session stayed open") from None
    assert held.returncode == 255
    # The instance and its owner are not disturbed.
    assert (await ssh(await config_for(client, admin, keys["A"], tmp_path / "admin"), "box", "exit 0")).returncode == 0
