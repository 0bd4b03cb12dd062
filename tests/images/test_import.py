"""Import of an uploaded tarball through dmd: a root file system tar, `docker save` output, and input
that is neither (a clear 4xx, nothing left on the engine, in the catalogue or in dmd's blob folder)."""

from __future__ import annotations

import gzip
import io
import json
import os
import secrets
import tarfile

import aiodocker

from dmd.core import DM
from tests.images.conftest import (
    T,
    assert_nothing_left,
    catalogue,
    engine_state,
    image_ids,
    logs_contain,
    me,
    remove_image,
    rootfs,
    tar_of,
)


def url(node_id: int, repository: str, tag: str = "1") -> str:
    return f"/api/v1/nodes/{node_id}/images/import?repository={repository}&tag={tag}"


async def run_and_read_marker(client, headers, node_id: int, name: str, image: str, marker: str) -> int:
    r = await client.post("/api/v1/instances", headers=headers, json={
        "name": name, "image": image, "node_id": node_id, "command": ["sh", "-c", "cat /etc/marker; exec sleep 3600"]})
    assert r.status == 201, await r.text()
    iid = int((await r.json())["id"])
    await logs_contain(client, headers, iid, marker)
    return iid


async def test_import_root_filesystem_tars(client, admin, node, docker, made):
    admin_id = await me(client, admin)
    marker = f"rootfs-{secrets.token_hex(4)}"
    ref = f"{T}/imported-rootfs:1"
    made.extend([ref, f"{T}/imported-rootfs:gz"])
    r = await client.post(url(node["id"], f"{T}/imported-rootfs"), headers=admin, data=await rootfs(marker))
    assert r.status == 201, await r.text()
    image = await r.json()
    assert image["ref"] == ref and image["owner_id"] == admin_id and image["public"] is False
    assert image["image_id"] == (await docker.images.inspect(ref))["Id"]
    assert (await catalogue(client, admin, node["id"]))[ref]["owner_id"] == admin_id
    await run_and_read_marker(client, admin, node["id"], "from-rootfs", ref, marker)

    # Compressed the same way `tar czf` would.
    r = await client.post(url(node["id"], f"{T}/imported-rootfs", "gz"), headers=admin,
                          data=gzip.compress(await rootfs(marker + "-gz")))
    assert r.status == 201, await r.text()
    assert not list(client.app[DM].blobs.dir.iterdir())  # the upload was not kept


async def test_import_docker_save_output(client, admin, node, docker, made):
    # An image made here, saved, and removed from the engine: the import really brings it back.
    marker = f"saved-{secrets.token_hex(4)}"
    source = f"{T}/save-source:{secrets.token_hex(3)}"
    ref = f"{T}/imported-save:1"
    made.extend([source, ref])
    repo, _, tag = source.partition(":")
    async with docker._query("images/create", "POST", params={"fromSrc": "-", "repo": repo, "tag": tag},
                             data=await rootfs(marker), headers={"Content-Type": "application/x-tar"}) as resp:
        assert '"error' not in await resp.text()
    source_id = (await docker.images.inspect(source))["Id"]
    async with docker.images.export_image(source) as stream:
        archive = await stream.read()
    await docker.images.delete(source, force=True)
    assert source_id not in await image_ids(docker)

    r = await client.post(url(node["id"], f"{T}/imported-save"), headers=admin, data=archive)
    assert r.status == 201, await r.text()
    image = await r.json()
    assert image["ref"] == ref and image["image_id"] == source_id
    # Only the name asked for: the one written inside the archive is not applied.
    assert [t for t in (await docker.images.inspect(ref))["RepoTags"]] == [ref]
    assert source not in await catalogue(client, admin, node["id"])
    await run_and_read_marker(client, admin, node["id"], "from-save", ref, marker)


async def test_import_of_what_is_not_an_image(client, admin, node, docker):
    before = await engine_state(docker)
    refs_before = set(await catalogue(client, admin, node["id"]))
    # A save-shaped archive without its manifest, one whose manifest is garbage, one naming a missing layer.
    layer_dir = "a" * 64
    no_manifest = tar_of({f"{layer_dir}/layer.tar": b"x" * 100, f"{layer_dir}/json": b"{}"})
    bad_manifest = tar_of({"manifest.json": b"this is not json", f"{layer_dir}/layer.tar": b"x"})
    missing_layer = tar_of({"manifest.json": json.dumps([{"Config": "c.json", "RepoTags": [f"{T}/evil:1"],
                                                           "Layers": ["nope/layer.tar"]}]).encode()})
    cases = [
        (os.urandom(5000), "not a tar archive"),
        (b"\0" * 10240, "not a tar archive"),
        (no_manifest, "neither"),
        (bad_manifest, "load image archive"),
        (missing_layer, "load image archive"),
        (b"\x28\xb5\x2f\xfd" + os.urandom(100), "zstd"),
        (gzip.compress(os.urandom(3000)), "not a tar archive"),
        (b"\x1f\x8b" + os.urandom(3000), "corrupt"),
    ]
    for body, words in cases:
        r = await client.post(url(node["id"], f"{T}/not-an-image"), headers=admin, data=body)
        text = await r.text()
        assert r.status == 422, (words, r.status, text)
        assert words in (await r.json())["error"]["message"], (words, text)
    r = await client.post(url(node["id"], f"{T}/not-an-image"), headers=admin, data=b"")
    assert r.status == 400 and "empty" in await r.text()

    await assert_nothing_left(docker, before, "dm-test/evil", "127.0.0.1:1/")
    assert set(await catalogue(client, admin, node["id"])) == refs_before
    assert not list(client.app[DM].blobs.dir.iterdir())


async def test_import_names_checked_first(client, admin, node, docker):
    before = await engine_state(docker)
    body = await rootfs("never imported")
    for repository, tag in (("", "1"), ("UPPER", "1"), ("a b", "1"), ("-x", "1"), ("../x", "1"), ("a..b", "1"),
                            ("a//b", "1"), ("a/", "1"), ("x", "bad tag"), ("x", ".dot"), ("x", "t" * 129),
                            ("x" * 300, "1")):
        r = await client.post(f"/api/v1/nodes/{node['id']}/images/import", params={"repository": repository,
                              "tag": tag}, headers=admin, data=body)
        assert r.status == 422, (repository, tag, await r.text())
    r = await client.post(url(node["id"], f"{T}/x"), headers={"Authorization": "Bearer nope"}, data=body)
    assert r.status == 401
    r = await client.post(url(999, f"{T}/x"), headers=admin, data=body)
    assert r.status == 404
    await assert_nothing_left(docker, before, "dm-test/evil", "127.0.0.1:1/")


async def test_a_save_archive_cannot_take_over_another_tag(client, admin, node, docker, made):
    """The names written inside a `docker save` archive must not re-point the node's existing tags."""
    victim = f"{T}/victim:1"
    made.extend([victim, f"{T}/intruder:1"])
    await docker.images.tag("dm-test/busybox:latest", repo=f"{T}/victim", tag="1")
    victim_id = (await docker.images.inspect(victim))["Id"]
    # An archive of another image that claims the victim's name.
    marker = f"intruder-{secrets.token_hex(4)}"
    async with docker._query("images/create", "POST", params={"fromSrc": "-", "repo": f"{T}/intruder-src",
                                                              "tag": "1"},
                             data=await rootfs(marker), headers={"Content-Type": "application/x-tar"}) as resp:
        assert '"error' not in await resp.text()
    made.append(f"{T}/intruder-src:1")
    async with docker.images.export_image(f"{T}/intruder-src:1") as stream:
        archive = await stream.read()
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(archive)) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None  # type: ignore[union-attr]
            if member.name == "manifest.json":
                manifest = json.loads(data or b"[]")
                manifest[0]["RepoTags"] = [victim]
                data = json.dumps(manifest).encode()
                member.size = len(data)
            elif member.name == "repositories":
                data = json.dumps({f"{T}/victim": {"1": "0" * 64}}).encode()
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    r = await client.post(url(node["id"], f"{T}/intruder"), headers=admin, data=out.getvalue())
    assert r.status == 201, await r.text()
    try:
        assert (await docker.images.inspect(victim))["Id"] == victim_id
    except aiodocker.DockerError as e:
        raise AssertionError(f"{victim} is gone: {e}") from None
    assert (await catalogue(client, admin, node["id"]))[victim]["image_id"] == victim_id
    await remove_image(docker, f"{T}/intruder-src:1")
