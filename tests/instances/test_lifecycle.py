"""Create -> running -> stop -> start -> delete on a real Docker Engine, with the container really gone."""

import asyncio

from dmd.core import DM
from tests.conftest import add_user, make_token, share_node
from tests.instances.conftest import IMAGE, containers_of, instance, wait_for, wait_status


async def test_lifecycle(client, admin, local, docker):
    r = await client.post("/api/v1/instances", headers=admin, json={
        "name": "web", "image": IMAGE, "command": ["sh", "-c", "echo hello from dm; exec sleep 3600"],
        "cpus": 0.5, "memory_mb": 64, "env": {"GREETING": "hi"}})
    assert r.status == 201, await r.text()
    created = await r.json()
    assert created["status"] in ("pending", "creating") and created["node_id"] == local["id"]
    iid = created["id"]
    inst = await wait_status(client, admin, iid, "running")
    [c] = await containers_of(docker, iid, client)
    info = await docker.containers.get(c["Id"])
    host = info["HostConfig"]
    assert host["NanoCpus"] == 500_000_000 and host["Memory"] == 64 * 1024 * 1024
    assert not host["Privileged"] and host["NetworkMode"] != "host" and not host.get("PortBindings")
    assert "GREETING=hi" in info["Config"]["Env"]
    assert info["Config"]["Labels"]["dm.node"] == str(local["id"])
    assert inst["container_id"] == c["Id"]

    async def has_log():
        r = await client.get(f"/api/v1/instances/{iid}/logs?tail=10", headers=admin)
        return "hello from dm" in await r.text()

    await wait_for(has_log, "the log line")

    r = await client.post(f"/api/v1/instances/{iid}/stop", headers=admin)
    assert r.status == 202
    await wait_status(client, admin, iid, "stopped")
    info = await docker.containers.get(c["Id"])
    assert info["State"]["Running"] is False

    r = await client.post(f"/api/v1/instances/{iid}/start", headers=admin)
    await wait_status(client, admin, iid, "running")
    [again] = await containers_of(docker, iid, client)
    assert again["Id"] == c["Id"]  # the same container, started again

    r = await client.post(f"/api/v1/instances/{iid}/restart", headers=admin)
    assert r.status == 200 and (await r.json())["status"] == "running"

    r = await client.delete(f"/api/v1/instances/{iid}", headers=admin)
    assert r.status == 202 and (await r.json())["status"] == "deleting"
    await client.app[DM].reconciler.idle()

    async def gone():
        return (await client.get(f"/api/v1/instances/{iid}", headers=admin)).status == 404

    await wait_for(gone, "the instance gone")
    assert await containers_of(docker, iid, client) == []


async def test_error_carries_the_runtimes_message(client, admin, local, docker):
    # An image DM believes is there, removed behind its back: the create fails on the node.
    await docker.images.tag(IMAGE, repo="dm-test/vanishing", tag="1")
    await client.app[DM].reconciler.refresh_images(local["id"])
    await docker.images.delete("dm-test/vanishing:1")
    r = await client.post("/api/v1/instances", headers=admin, json={"name": "broken", "image": "dm-test/vanishing:1"})
    assert r.status == 201, await r.text()
    inst = await wait_status(client, admin, r and (await r.json())["id"], "error")
    assert "dm-test/vanishing:1" in inst["status_message"]
    assert await containers_of(docker, inst["id"], client) == []


async def test_program_that_cannot_start(client, admin, local):
    r = await client.post("/api/v1/instances", headers=admin, json={
        "name": "noprog", "image": IMAGE, "command": ["/no/such/program"]})
    inst = await wait_status(client, admin, (await r.json())["id"], "stopped")
    assert "code 127" in inst["status_message"]


async def test_container_exit_is_reported(client, admin, local):
    r = await client.post("/api/v1/instances", headers=admin, json={
        "name": "short", "image": IMAGE, "command": ["sh", "-c", "sleep 1; exit 3"]})
    iid = (await r.json())["id"]
    inst = await wait_status(client, admin, iid, "stopped", timeout=30)
    assert "code 3" in (inst["status_message"] or "")


async def test_bad_requests_leave_nothing_behind(client, admin, local, docker):
    cases = [
        ({"name": "x", "image": "no-such/image:1"}, 409, "no image"),
        ({"name": "x; rm -rf /", "image": IMAGE}, 422, "name"),
        ({"name": "../etc", "image": IMAGE}, 422, "name"),
        ({"name": "x", "image": "$(reboot)"}, 422, "image"),
        ({"name": "x", "image": IMAGE, "cpus": 100000}, 422, "cpus"),
        ({"name": "x", "image": IMAGE, "cpus": 512}, 409, "CPUs"),
        ({"name": "x", "image": IMAGE, "memory_mb": 16 * 1024 * 1024}, 409, "memory"),
        ({"name": "x", "image": IMAGE, "gpus": 1}, 409, "GPUs"),
        ({"name": "x", "image": IMAGE, "gpus": ["GPU-not-here"], "node_id": local["id"]}, 422, "not a GPU"),
        ({"name": "x", "image": IMAGE, "env": {"BAD KEY": "v"}}, 422, "env"),
        ({"name": "x", "image": IMAGE, "command": []}, 422, "command"),
        ({"name": "x", "image": IMAGE, "node_id": 999}, 422, "node_id"),
        ({"name": "x", "image": IMAGE, "privileged": "yes"}, 422, "privileged"),
    ]
    for body, status, words in cases:
        r = await client.post("/api/v1/instances", headers=admin, json=body)
        text = await r.text()
        assert r.status == status, (body, text)
        assert words in text, (body, text)
    assert (await (await client.get("/api/v1/instances", headers=admin)).json())["items"] == []
    await add_user(client, "u@example.org")
    user = await make_token(client, "u@example.org")
    r = await client.post("/api/v1/instances", headers=user, json={"name": "p", "image": IMAGE, "privileged": True})
    assert r.status == 403


async def test_names_unique_per_user(client, admin, local):
    body = {"name": "same", "image": IMAGE, "command": ["sleep", "600"]}
    assert (await client.post("/api/v1/instances", headers=admin, json=body)).status == 201
    r = await client.post("/api/v1/instances", headers=admin, json=body)
    assert r.status == 409 and (await r.json())["error"]["code"] == "name_taken"


async def test_quota_race(client, admin, local):
    await add_user(client, "alice@example.org")
    alice = await make_token(client, "alice@example.org")
    me = await (await client.get("/api/v1/me", headers=alice)).json()
    await client.patch(f"/api/v1/users/{me['id']}", json={"instance_limit": 5}, headers=admin)
    await client.patch(f"/api/v1/images/{local['image_id']}", json={"public": True}, headers=admin)
    await share_node(client, local["id"], "alice", admin)
    results = await asyncio.gather(*(
        client.post("/api/v1/instances", headers=alice,
                    # Sized: five of the default (1 CPU each) would not fit a small test machine.
                    json={"name": f"q{i}", "image": IMAGE, "command": ["sleep", "600"], "memory_mb": 16,
                          "cpus": 0.01})
        for i in range(20)))
    statuses = [r.status for r in results]
    assert statuses.count(201) == 5 and statuses.count(403) == 15, statuses
    listed = await (await client.get("/api/v1/instances", headers=alice)).json()
    assert len(listed["items"]) == 5
    # Other users cannot see or touch them.
    first = listed["items"][0]["id"]
    await add_user(client, "bob@example.org")
    bob = await make_token(client, "bob@example.org")
    assert (await client.get(f"/api/v1/instances/{first}", headers=bob)).status == 404
    assert (await client.delete(f"/api/v1/instances/{first}", headers=bob)).status == 404
    assert (await instance(client, alice, first))["owner_id"] == me["id"]


async def test_unmanaged_containers_are_listed_and_left_alone(client, admin, local, docker):
    c = await docker.containers.create({"Image": IMAGE, "Cmd": ["sleep", "600"]}, name="not-from-dm-test")
    try:
        await c.start()
        r = await client.post("/api/v1/instances", headers=admin,
                              json={"name": "managed", "image": IMAGE, "command": ["sleep", "600"]})
        iid = (await r.json())["id"]
        await wait_status(client, admin, iid, "running")
        listed = await (await client.get(f"/api/v1/nodes/{local['id']}/containers", headers=admin)).json()
        by_name = {x["name"].lstrip("/"): x for x in listed}
        assert by_name["not-from-dm-test"]["managed"] is False
        managed = [c for name, c in by_name.items() if name.endswith(f"-{iid}-managed")]
        assert len(managed) == 1 and managed[0]["managed"] is True and managed[0]["instance_id"] == iid
        # A full reconcile round (as after a reconnect) does not touch it.
        client.app[DM].reconciler.kick(local["id"])
        await client.app[DM].reconciler.idle()
        assert (await c.show())["State"]["Running"] is True
        # And it is never imported as an instance.
        names = [i["name"] for i in (await (await client.get("/api/v1/instances", headers=admin)).json())["items"]]
        assert names == ["managed"]
    finally:
        await c.delete(force=True)


async def test_logs_follow_streams_new_lines(client, admin, local):
    r = await client.post("/api/v1/instances", headers=admin, json={
        "name": "ticker", "image": IMAGE,
        "command": ["sh", "-c", "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.5; done"]})
    iid = (await r.json())["id"]
    await wait_status(client, admin, iid, "running")
    resp = await client.get(f"/api/v1/instances/{iid}/logs?tail=1&follow=true", headers=admin)
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    seen: list[str] = []
    async with asyncio.timeout(20):
        while len(seen) < 4:
            line = (await resp.content.readline()).decode().strip()
            if line:
                seen.append(line)
    resp.close()
    numbers = [int(x.removeprefix("tick-")) for x in seen]
    assert numbers == sorted(numbers) and len(set(numbers)) == 4  # new lines, in order, none twice
