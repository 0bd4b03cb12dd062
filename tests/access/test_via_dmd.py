"""SSH into instances through DM end to end: keys from the API, sshd set up by the node's agent,
port 22 mapped from the node's pool, the real ssh client on 127.0.0.1:<host port>."""

from __future__ import annotations

import asyncio

from dmd.core import DM
from tests.access.conftest import SSH_OPTIONS, KeyPair, Login, host_key_fingerprints
from tests.conftest import add_user, make_token
from tests.instances.conftest import instance, wait_for


async def ssh(port: int, key: KeyPair, user: str = "root") -> Login:
    proc = await asyncio.create_subprocess_exec(
        "ssh", *SSH_OPTIONS, "-p", str(port), "-i", str(key.path), f"{user}@127.0.0.1", "true",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return Login(proc.returncode if proc.returncode is not None else -1, out.decode(), err.decode())


async def add_key(client, headers, key: KeyPair, name: str) -> int:
    r = await client.post("/api/v1/ssh-keys", json={"name": name, "public_key": key.public}, headers=headers)
    assert r.status == 201, await r.text()
    return int((await r.json())["id"])


async def ssh_state(client, headers, iid: int, state: str) -> dict:
    async def check():
        got = await instance(client, headers, iid)
        return got if got["ssh"]["state"] == state else None

    return await wait_for(check, f"ssh state {state}", 60)


async def test_ssh_into_an_instance_with_the_owners_keys(client, admin, test_images, keys, local):
    openssh, _ = test_images
    heartbeat = client.app[DM].config.agent_heartbeat_s
    key_a = await add_key(client, admin, keys["A"], "a")
    # Another user's key never goes into the admin's instance.
    await add_user(client, "bob@example.org")
    bob = await make_token(client, "bob@example.org")
    await add_key(client, bob, keys["B"], "b")

    r = await client.post("/api/v1/instances", json={
        "name": "box", "image": openssh, "node_id": local["id"], "command": ["/bin/sleep", "infinity"]},
        headers=admin)
    assert r.status == 201, await r.text()
    created = await r.json()
    assert created["ssh"]["keys_all"] and created["ssh"]["key_ids"] == [key_a]
    (m,) = created["port_maps"]
    assert (m["instance_port"], m["protocol"]) == (22, "tcp")
    got = await ssh_state(client, admin, created["id"], "ready")
    port = got["ssh"]["port"]
    assert port == m["host_port"]
    assert got["ssh"]["command"] == f"ssh -p {port} root@127.0.0.1"
    assert f"Port {port}" in got["ssh"]["config"] and "User root" in got["ssh"]["config"]
    # The host keys DM shows are the ones the server offers through the map.
    shown = {(k["type"], k["fingerprint"]) for k in got["ssh"]["host_keys"]}
    assert shown and shown <= await host_key_fingerprints("127.0.0.1", port)

    assert (await ssh(port, keys["A"])).ok
    assert (await ssh(port, keys["B"])).refused

    # A key added later goes in (the instance follows all of its owner's keys) ...
    await add_key(client, admin, keys["C"], "c")
    await wait_for(lambda: _ok(port, keys["C"]), "key C accepted", heartbeat)
    # ... and a deleted key comes out within one heartbeat.
    assert (await client.delete(f"/api/v1/ssh-keys/{key_a}", headers=admin)).status == 204
    await wait_for(lambda: _refused(port, keys["A"]), "key A refused", heartbeat)
    assert (await ssh(port, keys["C"])).ok

    # Choosing no keys revokes them all; SSH off turns sshd's door shut too.
    r = await client.patch(f"/api/v1/instances/{created['id']}/ssh", json={"ssh_key_ids": []}, headers=admin)
    assert r.status == 200, await r.text()
    assert (await r.json())["ssh"]["keys_all"] is False
    await wait_for(lambda: _refused(port, keys["C"]), "key C refused", heartbeat)

    # Stop and start: sshd comes back with the chosen keys.
    key_c = [k["id"] for k in (await (await client.get("/api/v1/ssh-keys", headers=admin)).json())["items"]]
    r = await client.patch(f"/api/v1/instances/{created['id']}/ssh", json={"ssh_key_ids": key_c}, headers=admin)
    assert r.status == 200
    assert (await client.post(f"/api/v1/instances/{created['id']}/stop", headers=admin)).status == 202
    await wait_for(lambda: _stopped(client, admin, created["id"]), "instance stopped", 30)
    assert (await client.post(f"/api/v1/instances/{created['id']}/start", headers=admin)).status == 202
    await wait_for(lambda: _ok(port, keys["C"]), "key C accepted after stop/start", 30)
    assert (await ssh(port, keys["A"])).refused


async def test_bad_ssh_requests_change_nothing(client, admin, test_images, keys, local):
    openssh, _ = test_images
    await add_user(client, "eve@example.org")
    eve = await make_token(client, "eve@example.org")
    eves_key = await add_key(client, eve, keys["B"], "eve")
    for bad, status in (({"ssh_key_ids": [eves_key]}, 422), ({"ssh_key_ids": ["1"]}, 422),
                        ({"ssh_key_ids": [0]}, 422), ({"ssh": "yes"}, 422)):
        r = await client.post("/api/v1/instances", json={"name": "x", "image": openssh, "node_id": local["id"],
                                                         **bad}, headers=admin)
        assert r.status == status, (bad, await r.text())
    assert (await (await client.get("/api/v1/instances", headers=admin)).json())["items"] == []
    assert (await (await client.get("/api/v1/port-maps", headers=admin)).json())["items"] == []


async def test_an_image_without_sshd_runs_and_says_so(client, admin, local):
    from tests.runtime.images import BUSYBOX_REF

    r = await client.post("/api/v1/instances", json={
        "name": "plain", "image": BUSYBOX_REF, "node_id": local["id"], "command": ["sleep", "600"]}, headers=admin)
    assert r.status == 201
    got = await ssh_state(client, admin, (await r.json())["id"], "no_server")
    assert got["status"] == "running"


async def _ok(port: int, key: KeyPair) -> bool:
    return (await ssh(port, key)).ok


async def _refused(port: int, key: KeyPair) -> bool:
    return (await ssh(port, key)).refused


async def _stopped(client, headers, iid: int) -> bool:
    return (await instance(client, headers, iid))["status"] == "stopped"



async def test_turning_ssh_on_maps_port_22_once(client, admin, local):
    from tests.runtime.images import BUSYBOX_REF

    r = await client.post("/api/v1/instances", json={
        "name": "late", "image": BUSYBOX_REF, "node_id": local["id"], "command": ["sleep", "600"], "ssh": False},
        headers=admin)
    assert r.status == 201
    iid = (await r.json())["id"]
    assert (await instance(client, admin, iid))["port_maps"] == []
    r = await client.patch(f"/api/v1/instances/{iid}/ssh", json={"enabled": True}, headers=admin)
    assert r.status == 200, await r.text()
    body = await r.json()
    assert body["ssh"]["enabled"] and [m["instance_port"] for m in body["port_maps"]] == [22]
    assert body["ssh"]["port"] == body["port_maps"][0]["host_port"]
    # Off and on again: the same map, not a second one.
    for enabled in (False, True):
        r = await client.patch(f"/api/v1/instances/{iid}/ssh", json={"enabled": enabled}, headers=admin)
        assert r.status == 200
    assert [m["host_port"] for m in (await r.json())["port_maps"]] == [body["ssh"]["port"]]
