"""The catalogue of a node, delete (refused while in use), public/private with who may do what, and
commit of an instance to a new image."""

from __future__ import annotations

import secrets

import aiodocker

from dmd.core import DM
from tests.conftest import add_user, make_token, share_node
from tests.images.conftest import BUSYBOX_REF, T, catalogue, logs_contain, me, remove_instance, rootfs


async def import_rootfs(client, headers, node_id: int, ref: str, marker: str) -> dict:
    repository, _, tag = ref.partition(":")
    r = await client.post(f"/api/v1/nodes/{node_id}/images/import", params={"repository": repository, "tag": tag},
                          headers=headers, data=await rootfs(marker))
    assert r.status == 201, await r.text()
    return await r.json()


async def start(client, headers, node_id: int, name: str, image: str, command: str) -> int:
    r = await client.post("/api/v1/instances", headers=headers, json={
        "name": name, "image": image, "node_id": node_id, "command": ["sh", "-c", command]})
    assert r.status == 201, await r.text()
    return int((await r.json())["id"])


async def test_inventory_names_images_by_their_tags(client, admin, node, docker, made):
    made.extend([f"{T}/inventory:a", f"{T}/inventory:b"])
    for tag in ("a", "b"):
        await docker.images.tag(BUSYBOX_REF, repo=f"{T}/inventory", tag=tag)
    await client.app[DM].reconciler.refresh_images(node["id"])
    listed = await catalogue(client, admin, node["id"])
    busybox_id = (await docker.images.inspect(BUSYBOX_REF))["Id"]
    for ref in (BUSYBOX_REF, f"{T}/inventory:a", f"{T}/inventory:b"):
        assert listed[ref]["image_id"] == busybox_id and listed[ref]["node_id"] == node["id"]
        assert listed[ref]["owner_id"] is None and listed[ref]["public"] is False  # found, not brought by anyone
    assert not [ref for ref in listed if "<none>" in ref]
    await docker.images.delete(f"{T}/inventory:a")
    await client.app[DM].reconciler.refresh_images(node["id"])
    listed = await catalogue(client, admin, node["id"])
    assert f"{T}/inventory:a" not in listed and f"{T}/inventory:b" in listed

    # Only for those who may see the node.
    await add_user(client, "stranger@example.org")
    stranger = await make_token(client, "stranger@example.org")
    assert (await client.get(f"/api/v1/nodes/{node['id']}/images", headers=stranger)).status == 404
    assert (await client.get("/api/v1/nodes/999/images", headers=admin)).status == 404


async def test_delete_refused_while_in_use(client, admin, node, docker, made):
    made.extend([f"{T}/in-use:1", f"{T}/in-use:2"])
    one = await import_rootfs(client, admin, node["id"], f"{T}/in-use:1", "one")
    two = await import_rootfs(client, admin, node["id"], f"{T}/in-use:2", "two")
    a = await start(client, admin, node["id"], "uses-one", f"{T}/in-use:1", "echo up; exec sleep 3600")
    b = await start(client, admin, node["id"], "uses-two", f"{T}/in-use:2", "echo up; exec sleep 3600")
    await logs_contain(client, admin, a, "up")

    for image in (one, two):
        r = await client.delete(f"/api/v1/images/{image['id']}", headers=admin)
        assert r.status == 409, await r.text()
        error = (await r.json())["error"]
        assert error["code"] == "image_in_use" and "uses-" in error["message"] and "force" in error["message"]
        await docker.images.inspect(image["ref"])  # still there
    assert {f"{T}/in-use:1", f"{T}/in-use:2"} <= set(await catalogue(client, admin, node["id"]))

    # Forced: the tag goes although an instance still runs from it.
    r = await client.delete(f"/api/v1/images/{one['id']}?force=true", headers=admin)
    assert r.status == 204, await r.text()
    assert f"{T}/in-use:1" not in await catalogue(client, admin, node["id"])
    try:
        await docker.images.inspect(f"{T}/in-use:1")
        raise AssertionError(f"{T}/in-use:1 is still on the engine")
    except aiodocker.DockerError as e:
        assert e.status == 404
    assert (await (await client.get(f"/api/v1/instances/{a}", headers=admin)).json())["status"] == "running"

    # Not forced, once its instance is gone.
    await remove_instance(client, admin, b)
    r = await client.delete(f"/api/v1/images/{two['id']}", headers=admin)
    assert r.status == 204, await r.text()
    assert f"{T}/in-use:2" not in await catalogue(client, admin, node["id"])
    assert (await client.delete(f"/api/v1/images/{two['id']}", headers=admin)).status == 404
    # The untagged image stays on the engine while instance a runs from it; then it goes too.
    await remove_instance(client, admin, a)
    await docker.images.delete(one["image_id"])


async def test_public_and_private(client, admin, node, docker, made):
    made.extend([f"{T}/admins:1", f"{T}/users:1"])
    uid = await add_user(client, "u@example.org")
    await add_user(client, "v@example.org")
    u = await make_token(client, "u@example.org")
    v = await make_token(client, "v@example.org")
    for name in ("u", "v"):
        await share_node(client, node["id"], name, admin)
    marker = f"admins-{secrets.token_hex(3)}"
    image = await import_rootfs(client, admin, node["id"], f"{T}/admins:1", marker)
    ref = image["ref"]
    body = {"name": "borrowed", "image": ref, "node_id": node["id"],
            "command": ["sh", "-c", "cat /etc/marker; exec sleep 3600"]}

    # Private: invisible and unusable for u, whatever u tries.
    assert ref not in await catalogue(client, u, node["id"])
    assert BUSYBOX_REF not in await catalogue(client, u, node["id"])  # found on the node, owned by nobody
    r = await client.post("/api/v1/instances", headers=u, json=body)
    assert r.status == 409 and f"no image {ref}" in (await r.json())["error"]["message"], await r.text()
    assert (await client.patch(f"/api/v1/images/{image['id']}", headers=u, json={"public": True})).status == 404
    assert (await client.delete(f"/api/v1/images/{image['id']}", headers=u)).status == 404
    r = await client.post(f"/api/v1/images/{image['id']}/copy", headers=u, json={"node_id": node["id"]})
    assert r.status == 404

    # Public: every user may see and use it; still only its owner or an admin may change or delete it.
    r = await client.patch(f"/api/v1/images/{image['id']}", headers=admin, json={"public": True})
    assert r.status == 200 and (await r.json())["public"] is True
    assert (await catalogue(client, u, node["id"]))[ref]["public"] is True
    assert (await client.patch(f"/api/v1/images/{image['id']}", headers=u, json={"public": False})).status == 403
    assert (await client.delete(f"/api/v1/images/{image['id']}", headers=u)).status == 403
    r = await client.post("/api/v1/instances", headers=u, json=body)
    assert r.status == 201, await r.text()
    iid = (await r.json())["id"]
    await logs_contain(client, u, iid, marker)
    await remove_instance(client, u, iid)
    r = await client.patch(f"/api/v1/images/{image['id']}", headers=admin, json={"public": False})
    assert r.status == 200 and (await r.json())["public"] is False
    assert ref not in await catalogue(client, u, node["id"])
    assert (await client.patch(f"/api/v1/images/{image['id']}", headers=admin, json={"public": "yes"})).status == 422

    # A user's own image: theirs to manage; an admin sees it; another user only once it is public.
    own = await import_rootfs(client, u, node["id"], f"{T}/users:1", "users")
    assert own["owner_id"] == uid and own["public"] is False
    assert f"{T}/users:1" in await catalogue(client, admin, node["id"])
    assert f"{T}/users:1" not in await catalogue(client, v, node["id"])
    assert (await client.delete(f"/api/v1/images/{own['id']}", headers=v)).status == 404
    r = await client.patch(f"/api/v1/images/{own['id']}", headers=u, json={"public": True})
    assert r.status == 200, await r.text()
    assert f"{T}/users:1" in await catalogue(client, v, node["id"])
    assert (await client.delete(f"/api/v1/images/{own['id']}", headers=v)).status == 403
    assert (await client.delete(f"/api/v1/images/{own['id']}", headers=u)).status == 204
    assert f"{T}/users:1" not in await catalogue(client, admin, node["id"])


async def test_commit_an_instance_then_run_the_image(client, admin, node, docker, made):
    made.append(f"{T}/committed:1")
    admin_id = await me(client, admin)
    state = f"committed-{secrets.token_hex(4)}"
    first = await start(client, admin, node["id"], "source", BUSYBOX_REF,
                        f"echo {state} > /state; echo ready; exec sleep 3600")
    await logs_contain(client, admin, first, "ready")

    r = await client.post(f"/api/v1/instances/{first}/commit", headers=admin,
                          json={"repository": f"{T}/committed", "tag": "1"})
    assert r.status == 201, await r.text()
    image = await r.json()
    assert image["ref"] == f"{T}/committed:1" and image["owner_id"] == admin_id
    info = await docker.images.inspect(f"{T}/committed:1")
    assert image["image_id"] == info["Id"]
    labels = info["Config"]["Labels"] or {}
    assert not any(labels.get(k) for k in ("dm.managed", "dm.instance", "dm.node")), labels  # no instance's ids
    assert f"{T}/committed:1" in await catalogue(client, admin, node["id"])
    assert (await (await client.get(f"/api/v1/instances/{first}", headers=admin)).json())["status"] == "running"

    second = await start(client, admin, node["id"], "from-commit", f"{T}/committed:1",
                         "cat /state; exec sleep 3600")
    await logs_contain(client, admin, second, state)

    # Bad names, unknown or foreign instances.
    for body in ({"repository": "UPPER"}, {"repository": "a b"}, {"repository": "x", "tag": "bad tag"},
                 {"repository": "a..b"}, {"repository": "a//b"}):
        r = await client.post(f"/api/v1/instances/{first}/commit", headers=admin, json=body)
        assert r.status == 422, (body, await r.text())
    assert (await client.post("/api/v1/instances/999/commit", headers=admin, json={"repository": "x"})).status == 404
    await add_user(client, "w@example.org")
    w = await make_token(client, "w@example.org")
    r = await client.post(f"/api/v1/instances/{first}/commit", headers=w, json={"repository": f"{T}/stolen"})
    assert r.status == 404
