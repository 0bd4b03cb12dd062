"""Through the gateway into an instance whose image has no SSH server: the node's agent serves
SSH for it (kind "ssh" streams, agent/access/agentssh.py of the i11-ssh-agent branch), with the
host key the node reports in its facts (`ssh_host_key`), which the config from the API lists.

Needs the agent's SSH server: passes once that branch is merged (checked on a scratch merge with
i11-ssh-agent at 6de236b)."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from tests.access.conftest import KeyPair
from tests.instances.conftest import instance, wait_for
from tests.ssh.conftest import interactive, run, through_tunnel
from tests.ssh.test_gateway_e2e import client, config_for, ssh  # noqa: F401 (fixture: the gateway on)

# busybox's httpd on the instance's loopback only, for -L.
WEB = ["/bin/busybox", "sh", "-c", "mkdir -p /www && echo dm-agent-tunnel > /www/index.html && "
       "exec /bin/busybox httpd -f -p 127.0.0.1:8080 -h /www"]


async def test_ssh_into_an_image_without_sshd(client: TestClient, admin: dict[str, str],  # type: ignore[type-arg]  # noqa: F811
                                              test_images: tuple[str, str], keys: dict[str, KeyPair],
                                              local: dict[str, Any], tmp_path: Path) -> None:
    _, busybox = test_images
    r = await client.post("/api/v1/ssh-keys", json={"name": "a", "public_key": keys["A"].public}, headers=admin)
    assert r.status == 201, await r.text()
    r = await client.post("/api/v1/instances", json={"name": "plain", "image": busybox, "node_id": local["id"],
                                                     "command": WEB}, headers=admin)
    assert r.status == 201, await r.text()
    iid = (await r.json())["id"]

    async def no_server() -> bool:
        return bool((await instance(client, admin, iid))["ssh"]["state"] == "no_server")

    await wait_for(no_server, "the agent found no sshd", 60)
    cfg = await config_for(client, admin, keys["A"], tmp_path / "admin")
    # The node's host key is what the client is told to trust for it.
    assert len((tmp_path / "admin" / "known_hosts").read_text().splitlines()) >= 3, cfg.read_text()
    got = await ssh(cfg, "plain", "echo dm-$((6*7)); exit 3")
    assert got.returncode == 3 and got.stdout.strip() == "dm-42", got

    # An interactive shell on a terminal (-tt), typed into once it shows its prompt.
    assert await interactive(cfg, "plain") == 4

    # scp both ways (SFTP, served from the container's files) and an sftp listing.
    payload = secrets.token_bytes(256 << 10)
    await asyncio.to_thread((tmp_path / "up.bin").write_bytes, payload)
    got = await run(["scp", "-F", str(cfg), str(tmp_path / "up.bin"), "plain:/tmp/up.bin"])
    assert got.returncode == 0, got.stderr
    got = await run(["scp", "-F", str(cfg), "plain:/tmp/up.bin", str(tmp_path / "down.bin")])
    assert got.returncode == 0, got.stderr
    assert await asyncio.to_thread((tmp_path / "down.bin").read_bytes) == payload
    got = await run(["sftp", "-F", str(cfg), "-b", "-", "plain"], stdin=b"ls /tmp\n")
    assert got.returncode == 0 and "up.bin" in got.stdout, got

    # -L to the instance's own loopback port, through the agent's server.
    assert await through_tunnel(cfg, "plain", 8080) == "dm-agent-tunnel\n"

