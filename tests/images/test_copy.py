"""Copy an image from one node to another through dmd: the source node's agent uploads `docker save`
output to a one-time URL, the target's agent downloads it from another. The target is a second
dockerd in its own network namespace, so the image really arrives on another engine."""

from __future__ import annotations

import secrets

import aiodocker

from dmd.core import DM
from tests.conftest import add_user, make_token, share_node
from tests.images.conftest import T, catalogue, logs_contain, me, rootfs


async def test_copy_to_another_node(client, admin, node, second_node, docker, made):
    ref = f"{T}/copied:1"
    made.append(ref)
    marker = f"copied-{secrets.token_hex(4)}"
    r = await client.post(f"/api/v1/nodes/{node['id']}/images/import", params={"repository": f"{T}/copied",
                          "tag": "1"}, headers=admin, data=await rootfs(marker))
    assert r.status == 201, await r.text()
    source = await r.json()
    r = await client.patch(f"/api/v1/images/{source['id']}", headers=admin, json={"public": True})
    assert r.status == 200
    async with aiodocker.Docker(url=second_node["docker_host"]) as other:
        try:
            await other.images.inspect(ref)
            raise AssertionError(f"{ref} is on the second engine before the copy")
        except aiodocker.DockerError as e:
            assert e.status == 404

        r = await client.post(f"/api/v1/images/{source['id']}/copy", headers=admin,
                              json={"node_id": second_node["id"]})
        assert r.status == 201, await r.text()
        copied = await r.json()
        assert copied["node_id"] == second_node["id"] and copied["ref"] == ref and copied["id"] != source["id"]
        assert copied["owner_id"] == await me(client, admin) and copied["public"] is True
        assert copied["image_id"] == source["image_id"]  # the same image, byte for byte
        assert (await other.images.inspect(ref))["Id"] == source["image_id"]
        assert (await other.images.inspect(ref))["RepoTags"] == [ref]
        assert ref in await catalogue(client, admin, second_node["id"])
        assert ref in await catalogue(client, admin, node["id"])  # a copy, not a move
        blobs = client.app[DM].blobs
        assert not list(blobs.dir.iterdir()) and not blobs._blobs  # no file, no live one-time URL

        # It runs there, on the second engine.
        r = await client.post("/api/v1/instances", headers=admin, json={
            "name": "on-second", "image": ref, "node_id": second_node["id"],
            "command": ["sh", "-c", "cat /etc/marker; exec sleep 3600"]})
        assert r.status == 201, await r.text()
        iid = (await r.json())["id"]
        await logs_contain(client, admin, iid, marker)
        assert [c["Image"] for c in await other.containers.list(filters={"label": [f"dm.instance={iid}"]})] == [ref]

        # A copy onto the node it is on, to a node that is not there, of an image that is not there.
        r = await client.post(f"/api/v1/images/{source['id']}/copy", headers=admin, json={"node_id": node["id"]})
        assert r.status == 409 and (await r.json())["error"]["code"] == "same_node"
        assert (await client.post(f"/api/v1/images/{source['id']}/copy", headers=admin,
                                  json={"node_id": 999})).status == 404
        assert (await client.post("/api/v1/images/999/copy", headers=admin,
                                  json={"node_id": second_node["id"]})).status == 404

        # An image removed behind DM's back: a clean error, nothing on the target, no file left.
        ghost = f"{T}/ghost:1"
        made.append(ghost)
        await docker.images.tag(ref, repo=f"{T}/ghost", tag="1")
        await client.app[DM].reconciler.refresh_images(node["id"])
        ghost_row = (await catalogue(client, admin, node["id"]))[ghost]
        await docker.images.delete(ghost)
        r = await client.post(f"/api/v1/images/{ghost_row['id']}/copy", headers=admin,
                              json={"node_id": second_node["id"]})
        assert r.status == 502, await r.text()
        assert ghost in (await r.json())["error"]["message"]
        assert ghost not in await catalogue(client, admin, second_node["id"])
        assert not list(blobs.dir.iterdir()) and not blobs._blobs
        try:
            await other.images.inspect(ghost)
            raise AssertionError(f"{ghost} reached the second engine")
        except aiodocker.DockerError as e:
            assert e.status == 404

    # A user may copy a public image only to a node they may use.
    await add_user(client, "u@example.org")
    u = await make_token(client, "u@example.org")
    await share_node(client, node["id"], "u", admin)
    r = await client.post(f"/api/v1/images/{source['id']}/copy", headers=u, json={"node_id": second_node["id"]})
    assert r.status == 404, await r.text()


async def test_blob_urls_are_bound_to_a_node(client, node, second_node):
    base = "/agent/blobs/"
    assert (await client.get(base + "no-such-token")).status == 401
    r = await client.get(base + "no-such-token", headers={"Authorization": f"Bearer {second_node['credential']}"})
    assert r.status == 404
    blobs = client.app[DM].blobs
    path = blobs.new_path()
    path.write_bytes(b"tar")
    token = blobs.offer(node["id"], "get", path)
    try:
        # Offered to the local node: the second node's credential cannot fetch it.
        r = await client.get(base + token, headers={"Authorization": f"Bearer {second_node['credential']}"})
        assert r.status == 404
        r = await client.put(base + token, data=b"x", headers={"Authorization": f"Bearer {second_node['credential']}"})
        assert r.status == 404
    finally:
        blobs.close(token)
        path.unlink()
