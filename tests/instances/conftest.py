"""Instances on the real Docker Engine through the in-process local node."""

from __future__ import annotations

from typing import Any

import aiodocker
import pytest

from agent.ports.manager import PortForwarding
from dmd.core import DM
from tests.databases import every_database  # noqa: F401 (fixture: each test on all three databases)
from tests.runtime.conftest import docker_test_image  # noqa: F401 (fixture: builds the busybox image)
from tests.runtime.images import BUSYBOX_REF
from tests.waiting import wait_for

IMAGE = BUSYBOX_REF


@pytest.fixture
async def docker():
    d = aiodocker.Docker()
    yield d
    await d.close()


@pytest.fixture
async def local(client, admin, docker_test_image):  # noqa: F811
    """The local node, online, with the busybox test image in its catalogue."""
    base = str(client.make_url("")).rstrip("/")
    await client.app[DM].local_node.start(base)
    nid = client.app[DM].local_node.node_id

    async def ready():
        r = await client.get(f"/api/v1/nodes/{nid}/images", headers=admin)
        body = await r.json() if r.status == 200 else []
        online = (await (await client.get(f"/api/v1/nodes/{nid}", headers=admin)).json())["status"] == "online"
        return online and [i for i in body if i["ref"] == IMAGE]

    images = await wait_for(ready, "the local node online with its images")
    yield {"id": nid, "image_id": images[0]["id"]}
    # Leave no instance (and so no container) behind.
    r = await client.get("/api/v1/instances?limit=200", headers=admin)
    for inst in (await r.json())["items"]:
        await client.delete(f"/api/v1/instances/{inst['id']}", headers=admin)
    await client.app[DM].reconciler.idle()
    # Nor this installation's forwarding rules (a real dmd keeps them across restarts).
    workloads = client.app[DM].local_node.workloads
    if workloads is not None:
        await workloads.feature(PortForwarding).teardown()


async def instance(client, headers, iid) -> dict[str, Any]:
    r = await client.get(f"/api/v1/instances/{iid}", headers=headers)
    assert r.status == 200, await r.text()
    return await r.json()


async def wait_status(client, headers, iid, status, timeout=30) -> dict[str, Any]:
    last: dict[str, Any] = {}

    async def check():
        last.update(await instance(client, headers, iid))
        return dict(last) if last["status"] == status else None

    try:
        return await wait_for(check, f"instance {iid} {status}", timeout)
    except AssertionError as e:
        raise AssertionError(f"{e}; it is {last}") from None


async def containers_of(docker: aiodocker.Docker, iid: int, client: Any = None) -> list[dict[str, Any]]:
    """The instance's containers; with `client`, only this dmd installation's (other test runs may
    share the Docker Engine and number their instances the same)."""
    labels = [f"dm.instance={iid}"]
    if client is not None:
        labels.append(f"dm.installation={client.app[DM].hub.installation_id}")
    return await docker.containers.list(all=True, filters={"label": labels})  # type: ignore[no-any-return]
