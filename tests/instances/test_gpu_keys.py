"""GPUs asked for by id on a node whose GPUs repeat a uuid or report none (issue 10, hole 3):
each id selects exactly one device, the quota counts the devices held, and the container is
given that one device. A scripted agent over the real protocol, the real dmd, all three databases."""

from __future__ import annotations

from typing import Any

from tests.instances.conftest import wait_status
from tests.instances.test_gpus_and_reconcile import a5000_gpus, gpu_node


def twins() -> list[dict[str, Any]]:
    """Two devices that report the same uuid (masked ids)."""
    base = a5000_gpus()
    return [{**g, "uuid": base[0]["uuid"]} for g in base]


async def create(client: Any, headers: dict[str, str], **body: Any) -> tuple[int, dict[str, Any]]:
    r = await client.post("/api/v1/instances", headers=headers, json={"image": "cuda:12", **body})
    return r.status, await r.json()


async def test_a_repeated_uuid_selects_no_device_and_keys_select_one_each(client, admin):
    gpus = twins()
    uuid = gpus[0]["uuid"]
    node = await gpu_node(client, admin, "twins", gpus)
    try:
        me = await (await client.get("/api/v1/me", headers=admin)).json()
        r = await client.patch(f"/api/v1/users/{me['id']}", json={"gpu_limit": 1}, headers=admin)
        assert r.status == 200, await r.text()
        cap = await (await client.get("/api/v1/capacity", headers=admin)).json()
        keys = [g["key"] for c in cap if c["node_id"] == node.node_id for g in c["gpus_free"]]
        assert keys == ["index:0", "index:1"]

        # The shared uuid would be both devices: refused, naming the keys to use instead.
        for where in ({}, {"node_id": node.node_id}):
            status, body = await create(client, admin, name="wide", gpus=[uuid], **where)
            assert status == 422, body
            assert body["error"] == {
                "code": "invalid", "field": "gpus",
                "message": f"gpus: {uuid} is reported by 2 GPUs of node twins; ask for one of them by key: "
                           "index:0, index:1"}
        status, body = await create(client, admin, name="twice", gpus=["index:0", "index:0"], node_id=node.node_id)
        assert (status, body["error"]["code"], body["error"]["field"]) == (422, "invalid", "gpus")
        assert body["error"]["message"] == "gpus: index:0 is asked for more than once; list each GPU once"
        status, body = await create(client, admin, name="unknown", gpus=["index:2"], node_id=node.node_id)
        assert (status, body["error"]["field"]) == (422, "gpus")
        assert body["error"]["message"] == "gpus: index:2 is not a GPU of node twins; its GPUs are: index:0, index:1"
        status, body = await create(client, admin, name="empty", gpus=[""], node_id=node.node_id)
        assert body["error"] == {"code": "invalid", "field": "gpus",
                                 "message": "gpus: a GPU id is empty; use the keys GET /capacity lists"}

        # One key, one device: the ledger, the reply and the container all say so.
        status, body = await create(client, admin, name="one", gpus=["index:1"])
        assert status == 201, body
        assert body["gpus"] == ["index:1"]
        await wait_status(client, admin, body["id"], "running")
        sent = [s for s in node.ensures if s["instance_id"] == body["id"]][-1]["gpus"]
        # By index: the repeated uuid would name both devices to the runtime.
        assert [(g["uuid"], g["index"]) for g in sent] == [(None, 1)]

        # The quota counted that one device: another is refused, the other key included.
        status, body = await create(client, admin, name="two", gpus=["index:0"])
        assert (status, body["error"]["code"]) == (403, "quota_exceeded")
        assert body["error"]["message"] == "you may hold at most 1 GPU(s); you hold 1 and asked for 1"
    finally:
        await node.close()


async def test_gpus_without_uuids_get_keys_of_their_own(client, admin):
    gpus = [{k: v for k, v in g.items() if k != "uuid"} for g in a5000_gpus()]
    node = await gpu_node(client, admin, "no-uuids", gpus)
    try:
        status, body = await create(client, admin, name="none", gpus=["None"], node_id=node.node_id)
        assert (status, body["error"]["field"]) == (422, "gpus")
        assert body["error"]["message"] == "gpus: None is not a GPU of node no-uuids; its GPUs are: index:0, index:1"
        status, body = await create(client, admin, name="both", gpus=["index:0", "index:1"])
        assert status == 201, body
        assert body["gpus"] == ["index:0", "index:1"]
        await wait_status(client, admin, body["id"], "running")
        sent = [s for s in node.ensures if s["instance_id"] == body["id"]][-1]["gpus"]
        assert sorted(g["index"] for g in sent) == [0, 1]
    finally:
        await node.close()


async def test_the_create_form_offers_each_device_by_its_key(client, admin):
    from tests.pages.conftest import page_login, post_form

    node = await gpu_node(client, admin, "form-twins", twins())
    try:
        await page_login(client, "admin@example.org")
        page = await (await client.get("/instances/new")).text()
        for key in ("index:0", "index:1"):
            assert f'name="gpu" value="{key}"' in page
        r = await post_form(client, "/instances", {"name": "ticked", "image": "cuda:12", "node": "auto", "gpus": "0",
                                                   "gpu": "index:1"}, csrf_from="/instances/new")
        assert r.status == 303, await r.text()
        listed = await (await client.get("/api/v1/instances", headers=admin)).json()
        assert [(i["name"], i["gpus"]) for i in listed["items"]] == [("ticked", ["index:1"])]
    finally:
        await node.close()
