"""A plain user never re-points a reference on a node that is not theirs (issue 10, hole 1).

Import, commit, pull and copy onto another user's private image, an admin's public image, or an
image found on the node (owned by nobody) are refused with 409 `image_ref_taken`; the catalogue row
and the Engine's tag stay as they were. Administrators may; a user may replace their own private
image. On the real Engine through the local node (and a scripted second node for copies), on the
three databases."""

from __future__ import annotations

import secrets
from typing import Any

import aiodocker

from agent import protocol as p
from dmd.core import DM
from tests.conftest import add_user, make_token, share_node
from tests.images.conftest import T, catalogue, me, remove_image, remove_instance, rootfs
from tests.nodes.helpers import FakeAgent


async def imported(client, headers, node_id: int, ref: str, marker: str) -> Any:
    repository, _, tag = ref.partition(":")
    return await client.post(f"/api/v1/nodes/{node_id}/images/import", params={"repository": repository, "tag": tag},
                             headers=headers, data=await rootfs(marker))


async def plain_user(client, admin, node_id: int, email: str) -> dict[str, str]:
    await add_user(client, email)
    await share_node(client, node_id, email.split("@")[0], admin)
    return await make_token(client, email)


async def assert_taken(r: Any, ref: str) -> None:
    body = await r.json()
    assert r.status == 409, body
    assert body["error"]["code"] == "image_ref_taken", body
    assert ref in body["error"]["message"], body


async def test_plain_users_cannot_repoint_what_is_not_theirs(client, admin, node, docker, made):
    public_ref, bobs_ref, alices_ref = f"{T}/public:1", f"{T}/bobs:1", f"{T}/alices:1"
    made.extend([public_ref, bobs_ref, alices_ref])
    alice = await plain_user(client, admin, node["id"], "alice@example.org")
    bob = await plain_user(client, admin, node["id"], "bob@example.org")
    admin_id, bob_id = await me(client, admin), await me(client, bob)

    r = await imported(client, admin, node["id"], public_ref, "the admin's")
    assert r.status == 201, await r.text()
    public = await r.json()
    r = await client.patch(f"/api/v1/images/{public['id']}", headers=admin, json={"public": True})
    assert r.status == 200, await r.text()
    r = await imported(client, bob, node["id"], bobs_ref, "bob's")
    assert r.status == 201, await r.text()
    bobs = await r.json()
    before = await catalogue(client, admin, node["id"])
    engine_before = {ref: (await docker.images.inspect(ref))["Id"] for ref in (public_ref, bobs_ref)}

    # Import onto the admin's public image and onto bob's private one.
    for ref in (public_ref, bobs_ref):
        await assert_taken(await imported(client, alice, node["id"], ref, f"alice's {secrets.token_hex(3)}"), ref)
    # Spelled the way Docker Hub references may be: the same check.
    r = await client.post(f"/api/v1/nodes/{node['id']}/images/pull", headers=alice,
                          json={"ref": f"docker.io/{public_ref}"})
    await assert_taken(r, public_ref)

    # Commit onto them: alice's own instance of the public image.
    r = await client.post("/api/v1/instances", headers=alice, json={
        "name": "alices", "image": public_ref, "node_id": node["id"], "command": ["sh", "-c", "exec sleep 3600"]})
    assert r.status == 201, await r.text()
    iid = int((await r.json())["id"])
    for ref in (public_ref, bobs_ref):
        repository, _, tag = ref.partition(":")
        r = await client.post(f"/api/v1/instances/{iid}/commit", headers=alice,
                              json={"repository": repository, "tag": tag})
        await assert_taken(r, ref)
    # And onto an image found on the node, owned by nobody.
    r = await client.post(f"/api/v1/instances/{iid}/commit", headers=alice,
                          json={"repository": "dm-test/busybox", "tag": "latest"})
    await assert_taken(r, "dm-test/busybox:latest")

    after = await catalogue(client, admin, node["id"])
    for ref in (public_ref, bobs_ref):
        assert after[ref] == before[ref], ref
        assert (await docker.images.inspect(ref))["Id"] == engine_before[ref], ref
    assert after[public_ref]["owner_id"] == admin_id and after[public_ref]["public"] is True
    assert after[bobs_ref]["owner_id"] == bob_id and after[bobs_ref]["public"] is False

    # Her own private image she may replace; once public, not until she makes it private again.
    r = await imported(client, alice, node["id"], alices_ref, "alice's first")
    assert r.status == 201, await r.text()
    mine = await r.json()
    r = await imported(client, alice, node["id"], alices_ref, "alice's second")
    assert r.status == 201, await r.text()
    assert (await r.json())["image_id"] != mine["image_id"]
    assert (await client.patch(f"/api/v1/images/{mine['id']}", headers=alice, json={"public": True})).status == 200
    r = await imported(client, alice, node["id"], alices_ref, "alice's third")
    await assert_taken(r, alices_ref)
    assert "make it private first" in (await r.json())["error"]["message"]

    # An administrator may re-point (the catalogue keeps the row's owner).
    r = await imported(client, admin, node["id"], bobs_ref, "the admin's replacement")
    assert r.status == 201, await r.text()
    replaced = await r.json()
    assert replaced["id"] == bobs["id"] and replaced["owner_id"] == bob_id
    assert replaced["image_id"] == (await docker.images.inspect(bobs_ref))["Id"] != engine_before[bobs_ref]
    await remove_instance(client, alice, iid)


class Catalogued(FakeAgent):
    """A second node whose runtime lists some images and records what it is asked to import."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.images: list[dict[str, Any]] = []
        self.imports: list[dict[str, Any]] = []
        self.answers[p.IMAGES_LIST] = lambda d: {"images": self.images}
        self.answers[p.IMAGE_IMPORT] = lambda d: self.imports.append(d) or {"image": self.images[0]}


async def test_copy_onto_a_reference_that_is_not_yours(client, admin, node, docker, made):
    ref = f"{T}/copied:1"
    made.append(ref)
    alice = await plain_user(client, admin, node["id"], "alice@example.org")
    created = await (await client.post("/api/v1/nodes", json={"name": "second"}, headers=admin)).json()
    joined = await (await client.post("/api/v1/nodes/join", json={"token": created["join_token"]})).json()
    await share_node(client, joined["node_id"], "alice", admin)
    second = Catalogued(str(client.make_url("")), joined["credential"], joined["node_id"])
    # The second node already has an image of that name (found there: nobody's).
    second.images.append({"id": f"sha256:{secrets.token_hex(32)}", "repo_tags": [ref], "size": 10})
    await second.connect({"hostname": "second", "cpu_count": 2, "memory_total_mb": 4000, "gpus": []})
    try:
        await client.app[DM].reconciler.refresh_images(second.node_id)
        r = await imported(client, alice, node["id"], ref, "alice's")
        assert r.status == 201, await r.text()
        image = await r.json()
        before = await catalogue(client, admin, second.node_id)
        assert before[ref]["owner_id"] is None

        r = await client.post(f"/api/v1/images/{image['id']}/copy", headers=alice, json={"node_id": second.node_id})
        await assert_taken(r, ref)
        assert second.imports == []  # refused before either agent was asked
        assert not any(e.type == p.IMAGE_EXPORT for e in second.received)
        assert await catalogue(client, admin, second.node_id) == before
        assert not list(client.app[DM].blobs.dir.iterdir())
        # The admin may.
        r = await client.post(f"/api/v1/images/{image['id']}/copy", headers=admin, json={"node_id": second.node_id})
        assert r.status == 201, await r.text()
        assert len(second.imports) == 1
    finally:
        await second.close()
        await remove_image(docker, ref)


async def test_pull_onto_another_users_image(client, admin, node, docker, registry_image, made):
    made.append(registry_image)
    await remove_image(docker, registry_image)
    alice = await plain_user(client, admin, node["id"], "alice@example.org")
    r = await client.post(f"/api/v1/nodes/{node['id']}/images/pull", headers=admin, json={"ref": registry_image})
    assert r.status == 201, await r.text()
    before = (await catalogue(client, admin, node["id"]))[registry_image]
    engine_id = (await docker.images.inspect(registry_image))["Id"]
    for accept in ("application/json", "application/x-ndjson"):  # the stream is refused before it starts
        r = await client.post(f"/api/v1/nodes/{node['id']}/images/pull", headers={**alice, "Accept": accept},
                              json={"ref": registry_image})
        await assert_taken(r, registry_image)
    assert (await catalogue(client, admin, node["id"]))[registry_image] == before
    try:
        assert (await docker.images.inspect(registry_image))["Id"] == engine_id
    except aiodocker.DockerError as e:
        raise AssertionError(f"{registry_image} is gone: {e}") from None
