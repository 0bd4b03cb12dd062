"""Pull from the local registry through dmd: plain JSON, the NDJSON progress stream, credentials that
are never kept, and a registry that does not answer."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

import sqlalchemy as sa

from dmd.core import DM
from dmd.db.schema import audit_log
from tests.images.conftest import (
    PULL_MARKER,
    assert_nothing_left,
    catalogue,
    engine_state,
    logs_contain,
    me,
    ndjson,
    remove_image,
    remove_instance,
)


async def test_pull_json_then_stream_with_credentials(client, admin, node, docker, registry_image, made, tmp_path,
                                                      caplog):
    caplog.set_level(logging.DEBUG)
    made.append(registry_image)
    await remove_image(docker, registry_image)
    admin_id = await me(client, admin)
    password = f"pw-{secrets.token_hex(12)}"

    # Plain JSON, with credentials (the registry needs none; they must still go nowhere).
    r = await client.post(f"/api/v1/nodes/{node['id']}/images/pull", headers=admin,
                          json={"ref": registry_image, "username": "puller", "password": password})
    assert r.status == 201, await r.text()
    pulled = await r.json()
    assert pulled["ref"] == registry_image and pulled["owner_id"] == admin_id and pulled["public"] is False
    inspected = await docker.images.inspect(registry_image)
    assert pulled["image_id"] == inspected["Id"]
    listed = await catalogue(client, admin, node["id"])
    assert listed[registry_image]["owner_id"] == admin_id
    assert listed[registry_image]["image_id"] == inspected["Id"]

    # It runs: the marker file of the pushed root file system is there.
    r = await client.post("/api/v1/instances", headers=admin, json={
        "name": "pulled", "image": registry_image, "node_id": node["id"],
        "command": ["sh", "-c", "cat /etc/marker; exec sleep 3600"]})
    assert r.status == 201, await r.text()
    iid = (await r.json())["id"]
    await logs_contain(client, admin, iid, PULL_MARKER.strip())
    await remove_instance(client, admin, iid)

    # Gone from the engine, pulled again with the progress streamed.
    r = await client.delete(f"/api/v1/images/{pulled['id']}", headers=admin)
    assert r.status == 204, await r.text()
    assert registry_image not in await catalogue(client, admin, node["id"])
    await remove_image(docker, registry_image)
    r = await client.post(f"/api/v1/nodes/{node['id']}/images/pull",
                          headers={**admin, "Accept": "application/x-ndjson"}, json={"ref": registry_image})
    assert r.status == 200 and r.headers["Content-Type"].startswith("application/x-ndjson")
    lines = ndjson(await r.text())
    *progress, last = lines
    assert progress and all(set(line) == {"progress"} for line in progress), lines
    statuses = [str(line["progress"].get("status", "")) for line in progress]
    assert any(s.startswith(("Downloading", "Pull complete", "Extracting")) for s in statuses), statuses
    assert any("Downloaded newer image" in s for s in statuses), statuses
    assert "image" in last, last
    assert last["image"]["ref"] == registry_image and last["image"]["owner_id"] == admin_id
    assert last["image"]["image_id"] == (await docker.images.inspect(registry_image))["Id"]

    # The password is in no table, no file of dmd's data directory, no audit entry, no log line.
    async with client.app[DM].db.read() as conn:
        details = [str(row.detail) for row in (await conn.execute(sa.select(audit_log))).all()]
    assert any(registry_image in d for d in details)
    assert not any(password in d for d in details)
    for f in Path(tmp_path / "data").rglob("*"):
        if f.is_file():
            assert password.encode() not in f.read_bytes(), f
    assert password not in caplog.text


async def test_pull_from_a_registry_that_does_not_answer(client, admin, node, docker):
    before = await engine_state(docker)
    ref = "127.0.0.1:1/dm-test/nothing:1"
    r = await client.post(f"/api/v1/nodes/{node['id']}/images/pull", headers=admin, json={"ref": ref})
    assert r.status == 502, await r.text()
    error = (await r.json())["error"]
    assert "127.0.0.1:1" in error["message"] and "connection refused" in error["message"], error
    assert ref not in await catalogue(client, admin, node["id"])

    # The stream ends with the same error as its last line.
    r = await client.post(f"/api/v1/nodes/{node['id']}/images/pull",
                          headers={**admin, "Accept": "application/x-ndjson"}, json={"ref": ref})
    lines = ndjson(await r.text())
    assert "error" in lines[-1] and "connection refused" in lines[-1]["error"]["message"], lines
    assert ref not in await catalogue(client, admin, node["id"])
    await assert_nothing_left(docker, before, "dm-test/evil", "127.0.0.1:1/")

    # A malformed reference never reaches the node.
    for bad in ("UPPER/Case:1", "a b", "../etc/passwd", "x:", "$(reboot)"):
        r = await client.post(f"/api/v1/nodes/{node['id']}/images/pull", headers=admin, json={"ref": bad})
        assert r.status == 422, (bad, await r.text())
    # Credentials for a reference without a registry host.
    r = await client.post(f"/api/v1/nodes/{node['id']}/images/pull", headers=admin,
                          json={"ref": "busybox:1", "username": "u", "password": "p"})
    assert r.status == 422, await r.text()
    assert "registry" in (await r.json())["error"]["message"]
