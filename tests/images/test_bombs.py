"""A gzip bomb uploaded through dmd is refused by the node's agent before it is expanded
(issue 10, hole 10): as a root file system tar (the Docker driver measures it) and as a
`docker save` archive (the agent measures it before unpacking it to strip its names). 422,
nothing left on the Engine, in the catalogue or in dmd's spool folder; on the three databases."""

from __future__ import annotations

from pathlib import Path

import pytest

from dmd.core import DM
from tests.images.conftest import T, assert_nothing_left, catalogue, engine_state
from tests.runtime.bombs import write_gzip_bomb
from tests.runtime.test_image_bombs import bomb  # noqa: F401 (fixture: the rootfs bomb)


@pytest.fixture(scope="session")
def save_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bombs") / "save-bomb.tar.gz"
    write_gzip_bomb(path, save=True)
    return path


async def test_bombs_are_refused_by_the_node(client, admin, node, docker, bomb, save_bomb):  # noqa: F811
    before = await engine_state(docker)
    refs_before = set(await catalogue(client, admin, node["id"]))
    for name, path in (("rootfs-bomb", bomb), ("save-bomb", save_bomb)):
        r = await client.post(f"/api/v1/nodes/{node['id']}/images/import", params={"repository": f"{T}/{name}",
                              "tag": "1"}, headers=admin, data=path.read_bytes())
        body = await r.json()
        assert r.status == 422, (name, body)
        assert body["error"]["code"] == "invalid_image" and "decompression bomb" in body["error"]["message"], body
    await assert_nothing_left(docker, before)
    assert set(await catalogue(client, admin, node["id"])) == refs_before
    assert not list(client.app[DM].blobs.dir.iterdir())
