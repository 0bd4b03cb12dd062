"""GPUs at a glance, without JavaScript: the node page says who holds each GPU and lists the
node's instances, the nodes list shows free/total GPUs, and administrators have a page of every
GPU with its usage, memory and idle time from a real agent link's metrics. A plain user sees
that another user's instance holds a GPU, never its name nor its owner."""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Any

import pytest
import sqlalchemy as sa

from agent import protocol as p
from dmd.core import DM
from dmd.db.schema import gpu_allocations, instances
from dmd.db.schema import nodes as nodes_table
from dmd.i18n import CATALOGUE
from dmd.pages.figures import idle_text
from dmd.usecases.gpus import idle_of
from tests.conftest import add_user
from tests.nodes.helpers import FakeAgent
from tests.pages.conftest import page_login, post_form
from tests.pages.test_node_pages import _add_node, _facts, _gpus, _join, _main, _metrics
from tests.waiting import wait_for


async def _hold(client, node_id: int, owner_id: int, name: str, gpu_key: str) -> int:
    """An instance of `owner_id` on the node holding one GPU in the ledger."""
    now = dt.datetime.now(dt.UTC)
    async with client.app[DM].db.begin() as conn:
        r = await conn.execute(instances.insert().values(
            name=name, owner_id=owner_id, node_id=node_id, image="cuda:12", env="{}", privileged=False,
            host_network=False, desired="stopped", status="stopped", created_at=now, updated_at=now))
        iid = int(r.inserted_primary_key[0])
        await conn.execute(gpu_allocations.insert().values(node_id=node_id, gpu_key=gpu_key, instance_id=iid,
                                                           created_at=now))
    return iid


@pytest.fixture
async def held(admin_client):
    """A node with two GPUs owned by alice, online through a FakeAgent with metrics; alice's
    instance holds the first GPU, bob's the second. Yields (client, node id, agent, ids)."""
    client = admin_client
    alice = await add_user(client, "alice@example.org", username="alice")
    bob = await add_user(client, "bob@example.org", username="bob")
    node_id, _, token = await _add_node(client, "gpu-box-7")
    credential = await _join(client, token)
    async with client.app[DM].db.begin() as conn:
        await conn.execute(nodes_table.update().where(nodes_table.c.id == node_id).values(owner_id=alice))
    agent = FakeAgent(str(client.make_url("")), credential, node_id)
    await agent.connect(_facts())
    hub = client.app[DM].hub
    await agent.send(p.METRICS, _metrics(12.5, 40.0))
    await agent.send(p.METRICS, _metrics(37.0, 80.0))
    await wait_for(lambda: len(hub.recent_metrics(node_id)) == 2, "two samples", 5)
    uuids = [g["uuid"] for g in _gpus()]
    ids = {"alice": alice, "bob": bob,
           "alice-train": await _hold(client, node_id, alice, "alice-train", uuids[0]),
           "bob-secret-job": await _hold(client, node_id, bob, "bob-secret-job", uuids[1])}
    try:
        yield client, node_id, agent, ids
    finally:
        await agent.close()


def _gpu_rows(main: str) -> dict[str, str]:
    """uuid -> the HTML of its row in the node page's GPU table."""
    table = main.split('id="gpus"', 1)[1].split("</section>", 1)[0]
    return {g["uuid"]: table.split(f'data-gpu="{g["uuid"]}"', 1)[1].split("</tr>", 1)[0] for g in _gpus()}


def _section(main: str, ident: str) -> str:
    return main.split(f'id="{ident}"', 1)[1].split("</section>", 1)[0]


async def test_admin_sees_who_holds_each_gpu_and_the_nodes_instances(held):
    client, node_id, _, ids = held
    main = _main(await (await client.get(f"/nodes/{node_id}")).text())
    first, second = _gpu_rows(main).values()
    assert f'href="/instances/{ids["alice-train"]}">alice-train</a>' in first and "alice" in first
    assert f'href="/instances/{ids["bob-secret-job"]}">bob-secret-job</a>' in second and "bob" in second
    listed = _section(main, "instances")
    assert "alice-train" in listed and "bob-secret-job" in listed and ">bob<" in listed
    # The list: no GPU free; one freed (its instance gone) shows at once.
    assert "0 / 2 free" in _main(await (await client.get("/nodes")).text())
    async with client.app[DM].db.begin() as conn:
        await conn.execute(sa.delete(gpu_allocations).where(gpu_allocations.c.instance_id == ids["bob-secret-job"]))
    assert "1 / 2 free" in _main(await (await client.get("/nodes")).text())
    assert "Free" in _gpu_rows(_main(await (await client.get(f"/nodes/{node_id}")).text()))[_gpus()[1]["uuid"]]


async def test_plain_user_sees_in_use_but_not_whose(held):
    client, node_id, _, ids = held
    await post_form(client, "/logout", {})
    await page_login(client, "alice@example.org")
    html = await (await client.get(f"/nodes/{node_id}")).text()
    assert (await client.get(f"/nodes/{node_id}")).status == 200
    first, second = _gpu_rows(_main(html)).values()
    assert f'href="/instances/{ids["alice-train"]}">alice-train</a>' in first
    assert "In use" in second and "/instances/" not in second
    # Nothing of bob's instance anywhere on the page: neither its name, its id's link, nor its owner.
    assert "bob-secret-job" not in html and f'/instances/{ids["bob-secret-job"]}"' not in html
    assert not re.search(r"\bbob\b", html)
    listed = _section(_main(html), "instances")
    assert "alice-train" in listed and "Owner" not in listed
    assert "0 / 2 free" in _main(await (await client.get("/nodes")).text())
    # In Japanese too.
    await client.get("/prefs", params={"lang": "ja", "next": f"/nodes/{node_id}"})
    html = await (await client.get(f"/nodes/{node_id}")).text()
    assert CATALOGUE["gpu.in_use"][1] in html and "bob-secret-job" not in html


async def test_gpu_overview_is_for_admins_only(held):
    client, _, _, _ = held
    await post_form(client, "/logout", {})
    r = await client.get("/gpus", allow_redirects=False)
    assert r.status in (302, 303) and "/login" in r.headers["Location"]
    await page_login(client, "alice@example.org")
    r = await client.get("/gpus")
    html = await r.text()
    assert r.status == 403 and "bob-secret-job" not in html and 'href="/gpus"' not in html
    nodes_page = await (await client.get("/nodes")).text()
    assert 'href="/gpus"' not in nodes_page


async def test_gpu_overview_shows_holders_usage_memory_and_idle_time(held):
    client, node_id, agent, ids = held
    r = await client.get("/gpus")
    html = await r.text()
    assert r.status == 200 and 'href="/gpus" aria-current="page"' in html
    main = _main(html)
    assert "0 of 2 GPUs free" in main
    rows = [main.split(f'data-gpu="{node_id}/{g["uuid"]}"', 1)[1].split("</tr>", 1)[0] for g in _gpus()]
    assert "gpu-box-7" in rows[0] and "NVIDIA RTX A5000" in rows[0]
    assert f'href="/instances/{ids["alice-train"]}">alice-train</a>' in rows[0] and "alice" in rows[0]
    assert f'href="/instances/{ids["bob-secret-job"]}">bob-secret-job</a>' in rows[1] and "bob" in rows[1]
    for row in rows:  # the newest sample: 80 %, 12282 of 24564 MiB, used now
        assert "80 %" in row and "12.0 GiB / 24.0 GiB" in row
        assert 'data-gpu-idle="busy"' in row and "in use now" in row
    # The GPUs fall idle: the page says since when, from the samples kept in memory.
    hub = client.app[DM].hub
    await agent.send(p.METRICS, _metrics(5.0, 0.0))
    await wait_for(lambda: len(hub.recent_metrics(node_id)) == 3, "a third sample", 5)
    main = _main(await (await client.get("/gpus")).text())
    row = main.split(f'data-gpu="{node_id}/{_gpus()[0]["uuid"]}"', 1)[1].split("</tr>", 1)[0]
    assert 'data-gpu-idle="idle"' in row and re.search(r"idle for \d+ s", row), row
    assert "0 %" in row


def _sample(t: float, util: float | None) -> dict[str, Any]:
    gpus = [] if util is None else [{"uuid": "GPU-a", "index": 0, "utilization_pct": util}]
    return {"received_at": t, "gpus": gpus}


def test_idle_time_is_honest_about_what_memory_holds():
    en = {k: v[0] for k, v in CATALOGUE.items()}

    def _(key: str, **kw: Any) -> str:
        return en[key].format(**kw)

    def idle(samples: list[dict[str, Any]]) -> tuple[str, str]:
        i = idle_of(samples, {"uuid": "GPU-a", "index": 0}, now)
        return i.state, idle_text(_, i.state, i.seconds)

    now = time.time()
    assert idle([]) == ("unknown", "unknown (no metrics yet)")
    assert idle([_sample(now - 5, None)])[0] == "unknown"
    # Never used in the kept samples: idle at least since the oldest one, and it says so.
    assert idle([_sample(now - 900, 0), _sample(now - 10, 0)]) == (
        "idle_at_least", "idle ≥ 15 min (since the oldest sample)")
    assert idle([_sample(now - 900, 0), _sample(now - 600, 30), _sample(now - 10, 0)]) == ("idle", "idle for 10 min")
    assert idle([_sample(now - 900, 0), _sample(now - 10, 1)]) == ("busy", "in use now")
    # Another GPU's readings are not this one's.
    assert idle([{"received_at": now, "gpus": [{"uuid": "GPU-b", "index": 1, "utilization_pct": 50}]}])[0] == "unknown"


async def test_gpu_overview_api(held):
    client, node_id, _, ids = held
    r = await client.get("/api/v1/gpus")
    assert r.status == 200, await r.text()
    got = {g["uuid"]: g for g in await r.json()}
    first, second = (got[g["uuid"]] for g in _gpus())
    assert first["node_id"] == node_id and first["node_name"] == "gpu-box-7" and first["node_online"] is True
    assert (first["instance_id"], first["instance_name"], first["username"]) == (ids["alice-train"], "alice-train",
                                                                                  "alice")
    assert (second["instance_name"], second["username"]) == ("bob-secret-job", "bob")
    assert first["utilization_pct"] == 80.0 and first["memory_used_mb"] == 12282 and first["idle"] == "busy"
    await post_form(client, "/logout", {})
    await page_login(client, "alice@example.org")
    r = await client.get("/api/v1/gpus")
    assert r.status == 403 and "bob" not in await r.text()
