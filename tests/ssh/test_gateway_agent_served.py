"""Through the gateway into an instance whose image has no SSH server: the node's agent serves
SSH for it (kind "ssh" streams, agent/access/agentssh.py of the i11-ssh-agent branch), with the
host key the node reports in its facts (`ssh_host_key`), which the config from the API lists.

Needs the agent's SSH server: this passes once that branch is merged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from tests.access.conftest import KeyPair
from tests.instances.conftest import instance, wait_for
from tests.ssh.test_gateway_e2e import client, config_for, ssh  # noqa: F401 (fixture: the gateway on)


async def test_ssh_into_an_image_without_sshd(client: TestClient, admin: dict[str, str],  # type: ignore[type-arg]  # noqa: F811
                                              test_images: tuple[str, str], keys: dict[str, KeyPair],
                                              local: dict[str, Any], tmp_path: Path) -> None:
    _, busybox = test_images
    r = await client.post("/api/v1/ssh-keys", json={"name": "a", "public_key": keys["A"].public}, headers=admin)
    assert r.status == 201, await r.text()
    r = await client.post("/api/v1/instances", json={"name": "plain", "image": busybox, "node_id": local["id"],
                                                     "command": ["sleep", "600"]}, headers=admin)
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
