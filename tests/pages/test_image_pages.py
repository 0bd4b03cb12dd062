"""The image pages, without JavaScript, on the real Docker Engine through the in-process local
node: the catalogue per node, import of a tarball through the multipart form (streamed: the
tar is larger than dmd's request body limit), pull from the local registry, copy to another
node, public / private, and delete (refused while an instance uses the image, unless forced)."""

from __future__ import annotations

import asyncio
import contextlib
import html as htmllib
import re
import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiodocker
import aiohttp
import pytest

from agent import protocol as p
from dmd.config import Config
from dmd.core import DM
from dmd.queries import audit
from tests.conftest import add_user, make_token, share_node
from tests.images.conftest import (  # noqa: F401 (fixtures)
    ALLOWED_REGISTRIES,
    REGISTRY,
    _registry_answers,
    catalogue,
    logs_contain,
    made,
    node,
    rootfs,
)
from tests.instances.conftest import IMAGE, docker, docker_test_image, local, wait_for  # noqa: F401 (fixtures)
from tests.nodes.helpers import FakeAgent
from tests.pages.conftest import csrf_of, get_csrf, page_login, post_form


@pytest.fixture(name="client")
async def _registry_client(make_client):  # type: ignore[no-untyped-def]
    """dmd, allowed to pull from the local test registry (on loopback: registry_allow)."""
    return await make_client(registry_allow=ALLOWED_REGISTRIES)


def _main(html: str) -> str:
    return html.split('<main id="main"', 1)[1].split("</main>", 1)[0]


def _node_section(html: str, node_id: int) -> str:
    return html.split(f'id="node-{node_id}"', 1)[1].split("</section>", 1)[0]


def _row(html: str, image_id: int) -> str:
    m = re.search(rf'<tr id="image-{image_id}">(.*?)</tr>', html, re.S)
    assert m, f"no row for image {image_id}"
    return m.group(1)


async def _actions(client, prefix: str) -> list[str]:
    async with client.app[DM].db.read() as conn:
        return [e["action"] for e in await audit.list_entries(conn, limit=500, action=prefix)]


def _import_form(token: str, node_id: int | str, repository: str, tag: str, data: bytes,
                 filename: str = "rootfs.tar") -> aiohttp.FormData:
    """The import form as a browser sends it: the fields in page order, the file last."""
    form = aiohttp.FormData()
    form.add_field("csrf_token", token)
    form.add_field("node_id", str(node_id))
    form.add_field("repository", repository)
    form.add_field("tag", tag)
    form.add_field("file", data, filename=filename, content_type="application/x-tar")
    return form


async def _import(client, node_id: int, repository: str, tag: str, data: bytes, **kw: Any) -> Any:
    token = await get_csrf(client, "/images")
    return await client.post("/images/import", data=_import_form(token, node_id, repository, tag, data, **kw),
                             allow_redirects=False)


# --- the catalogue, and import through the form -----------------------------------------------

async def test_catalogue_and_import(client, admin, node, docker, made):  # noqa: F811
    await page_login(client, "admin@example.org")
    r = await client.get("/images")
    html = await r.text()
    main = _main(html)
    assert r.status == 200 and 'aria-current="page"' in html
    section = _node_section(main, node["id"])
    row = _row(section, node["image_id"])
    assert IMAGE in row and "found on the node" in row and "Private" in row
    assert re.search(r"\d+(\.\d+)? [KMG]B", row)
    assert f'href="/instances/new?image={IMAGE.replace("/", "%2F").replace(":", "%3A")}&amp;node={node["id"]}"' in row
    assert f'action="/images/{node["image_id"]}/public"' in row and f'href="/images/{node["image_id"]}/delete"' in row
    for text in ("Pull from a registry", "Import a tarball", 'enctype="multipart/form-data"',
                 "never stored by DM", 'name="file" type="file"'):
        assert text in section, text

    # A root file system tar larger than dmd's request body limit: the form is streamed.
    marker = f"page-import-{secrets.token_hex(4)}"
    tar = await rootfs(marker)
    assert len(tar) > client.app[DM].config.max_body_bytes == Config().max_body_bytes
    repo = f"dm-test/page-import-{secrets.token_hex(3)}"
    made.append(f"{repo}:v1")

    # Wrong CSRF token: refused before a byte is stored.
    r = await client.post("/images/import", data=_import_form("wrong", node["id"], repo, "v1", tar),
                          allow_redirects=False)
    assert r.status == 403 and "This form has expired" in await r.text()
    assert not list(client.app[DM].blobs.dir.iterdir())
    # A bad name: shown again under its node with the user's input.
    r = await _import(client, node["id"], "Not A Repo", "v1", tar)
    html = await r.text()
    assert r.status == 422 and "Repositories use lower-case letters" in html
    section = _node_section(_main(html), node["id"])
    assert 'value="Not A Repo"' in section and 'value="v1"' in section and "alert-error" in section
    # No file chosen (a browser sends an empty part), and a file that is no image.
    r = await _import(client, node["id"], repo, "v1", b"", filename="")
    assert r.status == 400 and "Choose a tarball to upload" in await r.text()
    r = await _import(client, node["id"], repo, "v1", b"this is not a tarball" * 10)
    assert r.status == 422 and "The node refused it" in await r.text()
    assert not list(client.app[DM].blobs.dir.iterdir())
    # Someone else's node: not found.
    r = await _import(client, 999, repo, "v1", tar)
    assert r.status == 404

    r = await _import(client, node["id"], repo, "v1", tar)
    assert r.status == 303, await r.text()
    image_id = int(r.headers["Location"].split("#image-")[1])
    html = await (await client.get("/images")).text()
    assert f"{repo}:v1 has been imported onto" in html
    row = _row(html, image_id)
    assert f"{repo}:v1" in row and ">you<" in row and "Private" in row
    assert not list(client.app[DM].blobs.dir.iterdir())
    assert (await catalogue(client, admin, node["id"]))[f"{repo}:v1"]["id"] == image_id
    await docker.images.inspect(f"{repo}:v1")
    assert "image.import" in await _actions(client, "image.")

    # It runs: an instance from it prints the marker.
    r = await client.post("/api/v1/instances", headers=admin, json={
        "name": "from-import", "image": f"{repo}:v1", "command": ["sh", "-c", "cat /etc/marker; exec sleep 3600"]})
    assert r.status == 201, await r.text()
    await logs_contain(client, admin, (await r.json())["id"], marker)


async def test_import_without_csrf_before_the_file(client, admin, node):  # noqa: F811
    await page_login(client, "admin@example.org")
    form = aiohttp.FormData()
    form.add_field("node_id", str(node["id"]))
    form.add_field("repository", "dm-test/x")
    form.add_field("file", b"x" * 1000, filename="x.tar", content_type="application/x-tar")
    r = await client.post("/images/import", data=form, allow_redirects=False)
    assert r.status == 403
    # Not a multipart form at all.
    token = await get_csrf(client, "/images")
    r = await client.post("/images/import", data={"csrf_token": token, "node_id": str(node["id"])},
                          allow_redirects=False)
    assert r.status == 400
    # Logged out: back to the log-in page, nothing read.
    await client.post("/logout", data={"csrf_token": token})
    r = await client.post("/images/import", data=_import_form("x", node["id"], "dm-test/x", "1", b"x"),
                          allow_redirects=False)
    assert r.status == 303 and r.headers["Location"].startswith("/login")


# --- public / private, and who sees what --------------------------------------------------------

async def test_public_toggle_and_access(client, admin, node):  # noqa: F811
    await add_user(client, "alice@example.org", username="alice")
    alice = await make_token(client, "alice@example.org")
    await share_node(client, node["id"], "alice", admin)
    image_id = node["image_id"]

    await page_login(client, "admin@example.org")
    r = await post_form(client, f"/images/{image_id}/public", {}, csrf_from="/images")
    assert r.status == 303 and r.headers["Location"] == f"/images#image-{image_id}"
    html = await (await client.get("/images")).text()
    assert f"{IMAGE} is now public" in html
    row = _row(html, image_id)
    assert "Public" in row and f'action="/images/{image_id}/private"' in row

    # Alice now sees it on /images and in the create form, but may not change it.
    token = await get_csrf(client, "/images")
    await client.post("/logout", data={"csrf_token": token})
    await page_login(client, "alice@example.org")
    html = await (await client.get("/images")).text()
    row = _row(html, image_id)
    assert IMAGE in row and "Public" in row
    assert "/private" not in row and "/delete" not in row  # not hers to change
    assert f'<option value="{IMAGE}">' in await (await client.get("/instances/new")).text()
    token = await get_csrf(client, "/images")
    for path in (f"/images/{image_id}/private", f"/images/{image_id}/delete"):
        r = await client.post(path, data={"csrf_token": token}, allow_redirects=False)
        assert r.status == 403, path
    assert (await client.get(f"/images/{image_id}/delete")).status == 403

    # Private again: gone from Alice's view (404 on it).
    await client.post("/logout", data={"csrf_token": token})
    await page_login(client, "admin@example.org")
    r = await post_form(client, f"/images/{image_id}/private", {}, csrf_from="/images")
    assert r.status == 303
    assert f"{IMAGE} is now private" in await (await client.get("/images")).text()
    r = await client.get(f"/api/v1/nodes/{node['id']}/images", headers=alice)
    assert image_id not in [i["id"] for i in await r.json()]
    assert await _actions(client, "image.") == ["image.private", "image.public"]


# --- delete, refused while in use ---------------------------------------------------------------

async def test_delete_refused_while_in_use(client, admin, node, docker, made):  # noqa: F811
    await page_login(client, "admin@example.org")
    repo = f"dm-test/page-delete-{secrets.token_hex(3)}"
    ref = f"{repo}:1"
    made.append(ref)
    r = await _import(client, node["id"], repo, "1", await rootfs(f"delete me {secrets.token_hex(4)}"))
    assert r.status == 303, await r.text()
    image_id = int(r.headers["Location"].split("#image-")[1])
    r = await client.post("/api/v1/instances", headers=admin, json={
        "name": "user-of-it", "image": ref, "command": ["sleep", "3600"]})
    iid = (await r.json())["id"]

    html = await (await client.get("/images")).text()
    assert "in use · 1" in _row(html, image_id)
    r = await client.get(f"/images/{image_id}/delete")
    main = _main(await r.text())
    assert r.status == 200 and f"Delete {ref}?" in main and "<code>user-of-it</code>" in main
    assert 'name="force"' in main

    r = await post_form(client, f"/images/{image_id}/delete", {}, csrf_from=f"/images/{image_id}/delete")
    main = _main(await r.text())
    assert r.status == 409 and "Instances use this image: delete them first" in main
    assert "<code>user-of-it</code>" in main and 'name="force"' in main
    await docker.images.inspect(ref)  # still there
    assert (await client.get(f"/images/{image_id}/delete")).status == 200

    # The instance goes: the image can go too, and the confirmation no longer offers force.
    await client.delete(f"/api/v1/instances/{iid}", headers=admin)

    async def unused() -> bool:
        return (await client.get(f"/api/v1/instances/{iid}", headers=admin)).status == 404

    await wait_for(unused, "the instance gone")
    main = _main(await (await client.get(f"/images/{image_id}/delete")).text())
    assert 'name="force"' not in main and "leaves DM&#39;s catalogue" in main
    r = await post_form(client, f"/images/{image_id}/delete", {}, csrf_from=f"/images/{image_id}/delete")
    assert r.status == 303 and r.headers["Location"] == "/images"
    html = await (await client.get("/images")).text()
    assert f"The image {ref} has been deleted." in html and f'id="image-{image_id}"' not in html
    with pytest.raises(aiodocker.DockerError):
        await docker.images.inspect(ref)


async def test_delete_forced(client, admin, node, docker, made):  # noqa: F811
    await page_login(client, "admin@example.org")
    repo = f"dm-test/page-force-{secrets.token_hex(3)}"
    ref = f"{repo}:1"
    made.append(ref)
    r = await _import(client, node["id"], repo, "1", await rootfs(f"force me {secrets.token_hex(4)}"))
    image_id = int(r.headers["Location"].split("#image-")[1])
    engine_id = (await docker.images.inspect(ref))["Id"]
    r = await client.post("/api/v1/instances", headers=admin, json={
        "name": "keeps-running", "image": ref, "command": ["sleep", "3600"]})
    assert r.status == 201
    iid = (await r.json())["id"]
    try:
        r = await post_form(client, f"/images/{image_id}/delete", {"force": "on"},
                            csrf_from=f"/images/{image_id}/delete")
        assert r.status == 303, await r.text()
        assert f'id="image-{image_id}"' not in await (await client.get("/images")).text()
        with pytest.raises(aiodocker.DockerError):
            await docker.images.inspect(ref)
    finally:
        # The instance kept the untagged image alive: remove both, leaving nothing behind.
        await client.delete(f"/api/v1/instances/{iid}", headers=admin)

        async def gone() -> bool:
            return (await client.get(f"/api/v1/instances/{iid}", headers=admin)).status == 404

        await wait_for(gone, "the instance gone")
        with contextlib.suppress(aiodocker.DockerError):
            await docker.images.delete(engine_id, force=True)


# --- pull from the local registry -----------------------------------------------------------------

@pytest.fixture
async def pushed(docker, docker_test_image) -> AsyncIterator[tuple[str, str]]:  # noqa: F811
    """(reference, marker) of an image of this test's own in the local registry, not on the engine.

    Its own name and layer: other tests (here or in a parallel run) pulling the shared test image
    neither see nor remove it. Removed by id afterwards, with every tag and digest reference."""
    if not await asyncio.to_thread(_registry_answers):
        pytest.fail(f"the local registry does not answer on http://{REGISTRY}/v2/; run scripts/ensure-services.sh",
                    pytrace=False)
    marker = f"page-pull-{secrets.token_hex(4)}"
    ref = f"{REGISTRY}/dm-test/page-pull-{secrets.token_hex(3)}:1"
    repo, _, tag = ref.rpartition(":")
    async with docker._query("images/create", "POST", params={"fromSrc": "-", "repo": repo, "tag": tag},
                             data=await rootfs(marker), headers={"Content-Type": "application/x-tar"}) as r:
        assert '"error' not in await r.text()
    image_id = (await docker.images.inspect(ref))["Id"]
    result = await docker.images.push(repo, tag=tag, auth={"serveraddress": REGISTRY})
    assert not [m for m in result if isinstance(m, dict) and m.get("error")], result
    await docker.images.delete(image_id, force=True)
    try:
        yield ref, marker
    finally:
        with contextlib.suppress(aiodocker.DockerError):
            image_id = (await docker.images.inspect(ref))["Id"]
            for c in await docker.containers.list(all=True, filters={"ancestor": [image_id]}):
                await c.delete(force=True)
            await docker.images.delete(image_id, force=True)


async def test_pull(client, admin, node, pushed):  # noqa: F811
    ref, marker = pushed
    await page_login(client, "admin@example.org")
    r = await post_form(client, "/images/pull", {"node_id": str(node["id"]), "ref": "Not a Reference!",
                                                  "username": "bob", "password": "hunter22"}, csrf_from="/images")
    html = await r.text()
    assert r.status == 422 and "Enter an image reference such as debian:12" in html
    section = _node_section(_main(html), node["id"])
    assert 'value="Not a Reference!"' in section and 'value="bob"' in section
    assert "hunter22" not in html  # a password is never sent back

    r = await post_form(client, "/images/pull", {"node_id": str(node["id"]), "ref": f"{REGISTRY}/dm-test/none:x"},
                        csrf_from="/images")
    assert r.status == 502, r.status
    assert "alert-error" in _node_section(_main(await r.text()), node["id"])

    # With credentials (the registry needs none): used for the pull, kept nowhere.
    r = await post_form(client, "/images/pull", {"node_id": str(node["id"]), "ref": ref, "username": "puller",
                                                  "password": "pw-never-stored"}, csrf_from="/images")
    assert r.status == 303, await r.text()
    image_id = int(r.headers["Location"].split("#image-")[1])
    html = await (await client.get("/images")).text()
    assert f"{ref} has been pulled onto" in html and ">you<" in _row(html, image_id)
    assert "pw-never-stored" not in html
    async with client.app[DM].db.read() as conn:
        entries = await audit.list_entries(conn, limit=50, action="image.")
    assert entries and "pw-never-stored" not in repr(entries)
    r = await client.post("/api/v1/instances", headers=admin, json={
        "name": "pulled", "image": ref, "command": ["sh", "-c", "cat /etc/marker; exec sleep 3600"]})
    await logs_contain(client, admin, (await r.json())["id"], marker)
    r = await post_form(client, "/images/pull", {"node_id": "999", "ref": "x:1"}, csrf_from="/images")
    assert r.status == 404


# --- copy to another node -------------------------------------------------------------------------

class ImportingNode(FakeAgent):
    """A second node whose 'runtime' records what it is asked to import."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.images: list[dict[str, Any]] = []
        self.imports: list[dict[str, Any]] = []
        self.answers[p.IMAGES_LIST] = lambda d: {"images": self.images}
        self.answers[p.IMAGE_IMPORT] = self._import

    def _import(self, data: dict[str, Any]) -> dict[str, Any]:
        self.imports.append(data)
        image = {"id": f"sha256:{secrets.token_hex(32)}", "repo_tags": [f"{data['repository']}:{data['tag']}"],
                 "size": 1234}
        self.images.append(image)
        return {"image": image}


async def test_copy_to_another_node(client, admin, node, made):  # noqa: F811
    created = await (await client.post("/api/v1/nodes", json={"name": "second"}, headers=admin)).json()
    joined = await (await client.post("/api/v1/nodes/join", json={"token": created["join_token"]})).json()
    second = ImportingNode(str(client.make_url("")), joined["credential"], joined["node_id"])
    await second.connect({"hostname": "second", "cpu_count": 4, "memory_total_mb": 8000, "gpus": []})
    try:
        await page_login(client, "admin@example.org")
        repo = f"dm-test/page-copy-{secrets.token_hex(3)}"
        made.append(f"{repo}:1")
        r = await _import(client, node["id"], repo, "1", await rootfs(f"copy me {secrets.token_hex(4)}"))
        image_id = int(r.headers["Location"].split("#image-")[1])
        r = await post_form(client, f"/images/{image_id}/public", {}, csrf_from="/images")

        html = await (await client.get("/images")).text()
        row = _row(html, image_id)
        assert f'action="/images/{image_id}/copy"' in row and f'<option value="{second.node_id}">second</option>' in row
        assert "Online" in _node_section(html, second.node_id)

        # To the node it is on: refused, shown under that node.
        r = await post_form(client, f"/images/{image_id}/copy", {"node_id": str(node["id"])}, csrf_from="/images")
        assert r.status == 409 and "already on that node" in _node_section(_main(await r.text()), node["id"])

        r = await post_form(client, f"/images/{image_id}/copy", {"node_id": str(second.node_id)},
                            csrf_from="/images")
        assert r.status == 303, await r.text()
        copy_id = int(r.headers["Location"].split("#image-")[1])
        assert second.imports and second.imports[0]["repository"] == repo and second.imports[0]["tag"] == "1"
        html = await (await client.get("/images")).text()
        assert f"{repo}:1 has been copied." in html
        row = _row(_node_section(html, second.node_id), copy_id)
        assert f"{repo}:1" in row and "Public" in row and ">you<" in row  # public stays public
        assert not list(client.app[DM].blobs.dir.iterdir())
    finally:
        await second.close()


async def test_japanese(client, admin, node):  # noqa: F811
    await page_login(client, "admin@example.org")
    main = _main(await (await client.get("/images", headers={"Accept-Language": "ja"})).text())
    for text in ("レジストリーから取得", "tar アーカイブをインポート", "DM には保存しません", "ノード上で検出",
                 "非公開"):
        assert text in main, text
    html = htmllib.unescape(main)
    assert "Pull from a registry" not in html
    assert csrf_of(main)
