"""The node pages, without JavaScript: the list, adding a node (its join command shown once),
a node's facts, GPUs and live metrics from a real agent link, and what owners, users a node
is shared with, strangers and administrators may do."""

from __future__ import annotations

import datetime as dt
import html as htmllib
import re
import time
from typing import Any

import aiohttp
import pytest

from agent import protocol as p
from agent.gpu.nvidia import parse_xml
from dmd.core import DM
from dmd.db.schema import nodes as nodes_table
from dmd.pages import figures as node_pages
from dmd.pages.figures import TIMES
from dmd.queries import audit
from dmd.queries import users as user_svc
from tests.agent.helpers import fixture_text
from tests.conftest import add_user
from tests.nodes.helpers import FakeAgent
from tests.pages.conftest import get_csrf, page_login, post_form
from tests.waiting import wait_for

_JOIN_RE = re.compile(r'<code class="secret" id="join-command">dmc join (\S+) (dmj_[^<\s]+)</code>')


def _gpus() -> list[dict[str, Any]]:
    """The two cards of a real nvidia-smi (tests/fixtures/gpu)."""
    return [g.to_dict() for g in parse_xml(fixture_text("nvidia-smi-q-x.rtx-a5000x2.v13.no-supported-clocks.xml"))]


def _facts() -> dict[str, Any]:
    return {
        "hostname": "gpu-box-7", "os": {"id": "debian", "name": "Debian GNU/Linux", "version": "12",
                                        "pretty_name": "Debian GNU/Linux 12 (bookworm)"},
        "kernel": "6.1.0-18-amd64", "arch": "x86_64", "cpu_model": "AMD EPYC 7313 16-Core Processor",
        "cpu_count": 32, "memory_total_mb": 257_000, "memory_available_mb": 200_000, "disk_path": "/var/lib/docker",
        "disk_total_mb": 1_900_000, "disk_free_mb": 1_500_000,
        "addresses": {"ipv4": ["10.0.0.7"], "ipv6": ["fd00::7"]},
        "gpus": _gpus(),
        "runtime": {"name": "docker", "version": "26.1.5", "api_version": "1.45", "data_root": "/var/lib/docker",
                    "os": "Debian GNU/Linux 12 (bookworm)"},
    }


def _metrics(cpu: float, gpu_util: float) -> dict[str, Any]:
    return {
        "at": time.time(), "cpu_pct": cpu, "memory_total_mb": 257_000, "memory_available_mb": 193_000,
        "memory_used_mb": 64_000, "load_1": 3.25, "load_5": 2.5, "load_15": 1.75,
        "gpus": [{"vendor": "nvidia", "index": g["index"], "uuid": g["uuid"], "utilization_pct": gpu_util,
                  "memory_total_mb": 24564, "memory_used_mb": 12282, "temperature_c": 61.0} for g in _gpus()],
    }


def _main(html: str) -> str:
    return html.split('<main id="main"', 1)[1].split("</main>", 1)[0]


async def _actions(client, prefix: str) -> list[str]:
    async with client.app[DM].db.read() as conn:
        return [e["action"] for e in await audit.list_entries(conn, limit=500, action=prefix)]


async def _add_node(client, name: str) -> tuple[int, str, str]:
    """Add a node through the form; returns (id, join command, token) from the page shown next."""
    r = await post_form(client, "/nodes", {"name": name}, csrf_from="/nodes")
    assert r.status == 303, await r.text()
    m = re.fullmatch(r"/nodes/(\d+)", r.headers["Location"])
    assert m, r.headers["Location"]
    node_id = int(m.group(1))
    html = await (await client.get(f"/nodes/{node_id}")).text()
    j = _JOIN_RE.search(html)
    assert j, _main(html)
    return node_id, f"dmc join {j.group(1)} {j.group(2)}", j.group(2)


async def _agent_join(client, token: str) -> tuple[int, Any]:
    """POST /api/v1/nodes/join as dmc does: no cookies; (status, body)."""
    async with aiohttp.ClientSession(base_url=str(client.make_url(""))) as s:
        r = await s.post("/api/v1/nodes/join", json={"token": token, "hostname": "gpu-box-7"})
        return r.status, await r.json()


async def _join(client, token: str) -> str:
    status, body = await _agent_join(client, token)
    assert status == 200, body
    return str(body["credential"])


async def _switch(client, email: str) -> None:
    await post_form(client, "/logout", {})
    await page_login(client, email)


@pytest.fixture
async def online(admin_client):
    """Add a node through the page, join it through the API and connect a FakeAgent with GPUs
    and two metrics samples; yields (client, node id, agent)."""
    client = admin_client
    node_id, _, token = await _add_node(client, "gpu-box-7")
    credential = await _join(client, token)
    agent = FakeAgent(str(client.make_url("")), credential, node_id)
    await agent.connect(_facts())
    hub = client.app[DM].hub
    await agent.send(p.METRICS, _metrics(12.5, 40.0))
    await agent.send(p.METRICS, _metrics(37.0, 80.0))
    await wait_for(lambda: len(hub.recent_metrics(node_id)) == 2, "two samples", 5)
    try:
        yield client, node_id, agent
    finally:
        await agent.close()


# --- the list and adding a node --------------------------------------------------------------

async def test_empty_list_explains_how_to_add(admin_client):
    r = await admin_client.get("/nodes")
    html = await r.text()
    assert r.status == 200
    main = _main(html)
    assert "No nodes yet" in main and "dmd serve --local-node" in main and "dmc join" in main
    assert 'action="/nodes"' in main and 'name="csrf_token"' in main and "<table" not in main
    assert 'href="/nodes" aria-current="page"' in html


async def test_a_plain_users_empty_list_says_where_nodes_come_from(user_client):
    """Not how to start dmd (an administrator's business): shared nodes appear here, or add your own."""
    main = _main(await (await user_client.get("/nodes")).text())
    assert "No nodes yet" in main and "Nodes shared with you" in main and "ask an administrator" in main
    assert "dmd serve" not in main and "dmc join" in main and 'action="/nodes"' in main
    user_client.session.cookie_jar.update_cookies({"dm_lang": "ja"})
    main = _main(await (await user_client.get("/nodes")).text())
    assert "管理者に依頼" in main and "dmd serve" not in main


async def test_add_node_shows_the_join_command_once(user_client):
    client = user_client
    node_id, command, token = await _add_node(client, "gpu-box-1")
    base = str(client.make_url("")).rstrip("/")
    assert command == f"dmc join {base} {token}"
    assert await _actions(client, "node.create") == ["node.create"]
    # Shown once: a reload has the waiting note and a way to make a new command, not the token.
    html = await (await client.get(f"/nodes/{node_id}")).text()
    assert token not in html and "Waiting for this node to join" in html
    assert f'action="/nodes/{node_id}/join-token"' in html
    # The shown token is the real one.
    await _join(client, token)
    html = await (await client.get(f"/nodes/{node_id}")).text()
    assert "Joined: now start the agent" in html and "Offline" in html
    listing = _main(await (await client.get("/nodes")).text())
    assert "gpu-box-1" in listing and "Yours" in listing and "1 in total, 0 online" in listing


async def test_join_page_says_what_to_do_next(user_client):
    r = await post_form(user_client, "/nodes", {"name": "edge-1"}, csrf_from="/nodes")
    html = await (await user_client.get(r.headers["Location"])).text()
    box = html.split('id="join"', 1)[1].split("</div>\n{% ", 1)[0]
    assert "Node edge-1 added" in box and "shown only once" in box
    assert "dmc run" in box and "systemctl enable --now dmc" in box
    assert "online on this page within seconds" in box
    assert re.search(r"until \d{4}-\d\d-\d\d \d\d:\d\d UTC \(in (59|60) min\)", box)
    assert 'data-copy="join-command"' in box


async def test_expired_join_command(user_client):
    client = user_client
    node_id, _, _ = await _add_node(client, "late")
    assert re.search(r"join command expires in (59|60) min", await (await client.get("/nodes")).text())
    async with client.app[DM].db.begin() as conn:
        await conn.execute(nodes_table.update().values(join_expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(1)))
    for path in ("/nodes", f"/nodes/{node_id}"):
        assert "join command expired: make a new one" in await (await client.get(path)).text()


async def test_add_node_errors(user_client):
    client = user_client
    for bad in ("", "a b", "../x", "-x", "x" * 65):
        r = await post_form(client, "/nodes", {"name": bad}, csrf_from="/nodes")
        html = await r.text()
        assert r.status == 422, bad
        assert "Node names use 1 to 64" in html and 'aria-invalid="true"' in html
    r = await post_form(client, "/nodes", {"name": "a b"}, csrf_from="/nodes")
    assert 'value="a b"' in await r.text()
    await _add_node(client, "dup")
    r = await post_form(client, "/nodes", {"name": "dup"}, csrf_from="/nodes")
    assert r.status == 409 and "already exists" in await r.text()
    # Without the CSRF token nothing happens.
    r = await client.post("/nodes", data={"name": "sneaky"}, allow_redirects=False)
    assert r.status == 403
    assert "sneaky" not in await (await client.get("/nodes")).text()


async def test_node_quota(client):
    await add_user(client, "q@example.org", username="q", node_limit=1)
    await page_login(client, "q@example.org")
    await _add_node(client, "first")
    r = await post_form(client, "/nodes", {"name": "second"}, csrf_from="/nodes")
    assert r.status == 403 and "node quota" in await r.text()


# --- an online node ---------------------------------------------------------------------------

async def test_online_node_shows_facts_gpus_and_metrics(online):
    client, node_id, _ = online
    r = await client.get(f"/nodes/{node_id}")
    html = htmllib.unescape(await r.text())
    assert r.status == 200
    main = _main(html)
    assert "badge-online" in main and "Online" in main and "heartbeat just now" in main
    for text in ("gpu-box-7", "Debian GNU/Linux 12 (bookworm)", "6.1.0-18-amd64", "x86_64",
                 "AMD EPYC 7313 16-Core Processor", "32 CPUs", "251 GiB", "1.4 TiB free of 1.8 TiB",
                 "docker 26.1.5", "10.0.0.7", "fd00::7", "test-agent"):
        assert text in main, text
    # GPUs: from the facts, with the newest live figures laid over them.
    gpus = main.split('id="gpus"', 1)[1].split("</section>", 1)[0]
    assert gpus.count("NVIDIA RTX A5000") == 2
    for g in _gpus():
        assert g["uuid"] in gpus
    assert "12.0 GiB / 24.0 GiB" in gpus and "80 %" in gpus and "61 °C" in gpus
    assert "590.44.01" in gpus and "CUDA 13.1" in gpus
    # Live metrics: the newest sample, and a line of the history.
    metrics = main.split('id="metrics"', 1)[1].split("</section>", 1)[0]
    assert f'data-metrics-url="/api/v1/nodes/{node_id}/metrics"' in metrics
    assert ">37 %<" in metrics and ">25 %<" in metrics  # CPU; memory 64000 of 257000 MiB
    assert "62.5 GiB / 251 GiB" in metrics and ">3.25<" in metrics and "5 min 2.50 · 15 min 1.75" in metrics
    assert ">80 %<" in metrics and ">50 %<" in metrics  # GPU use; GPU memory
    points = re.findall(r'<polyline data-spark="(\w+)" points="([^"]*)"', metrics)
    assert {k for k, v in points if len(v.split()) == 2} == {"cpu", "mem", "gpu"}
    # The list: status, CPU, memory, disk, GPUs, agent.
    listing = _main(htmllib.unescape(await (await client.get("/nodes")).text()))
    row = listing.split(f'data-node-id="{node_id}"', 1)[1].split("</tr>", 1)[0]
    for text in ("Online", "32 CPUs", "AMD EPYC", "251 GiB", "1.4 TiB free", "of 1.8 TiB",
                 f"2 {TIMES} NVIDIA RTX A5000", "test-agent", "Yours"):
        assert text in row, text


async def test_page_refresh_data_for_javascript(online):
    """The page carries what dm.js needs in data- attributes; the JSON it fetches works with
    the page's own session cookie."""
    client, node_id, _ = online
    html = await (await client.get(f"/nodes/{node_id}")).text()
    assert f'data-node-url="/api/v1/nodes/{node_id}"' in html and 'data-status="online"' in html
    r = await client.get(f"/api/v1/nodes/{node_id}/metrics")
    assert r.status == 200 and len((await r.json())["items"]) == 2
    r = await client.get(f"/api/v1/nodes/{node_id}")
    assert r.status == 200 and (await r.json())["status"] == "online"


async def test_offline_node_keeps_last_figures(online):
    client, node_id, agent = online
    await agent.close()
    await wait_for(lambda: not client.app[DM].hub.is_online(node_id), "the node offline", 5)
    html = await (await client.get(f"/nodes/{node_id}")).text()
    main = _main(html)
    assert "badge-offline" in main and "last seen just now" in main
    assert "the last figures it sent" in main


async def test_rotate_credential_online_and_offline(online):
    client, node_id, agent = online
    agent.answers[p.CREDENTIAL_ROTATE] = {}
    html = await (await client.get(f"/nodes/{node_id}")).text()
    assert "hands it a new one over its link" in html
    r = await post_form(client, f"/nodes/{node_id}/rotate-credential", {})
    assert r.status == 303 and r.headers["Location"] == f"/nodes/{node_id}"
    html = await (await client.get(f"/nodes/{node_id}")).text()
    assert "received its new credential" in html
    code, _ = await agent.closed()
    assert code == p.CLOSE_NORMAL
    rotate = next(e for e in agent.received if e.type == p.CREDENTIAL_ROTATE)
    assert rotate.data["credential"].startswith("dmn_")
    await wait_for(lambda: not client.app[DM].hub.is_online(node_id), "the node offline", 5)
    # Offline: the old credential is revoked and a new join command is shown, once.
    html = await (await client.get(f"/nodes/{node_id}")).text()
    assert "revokes the old credential at once" in html
    r = await post_form(client, f"/nodes/{node_id}/rotate-credential", {})
    assert r.headers["Location"] == f"/nodes/{node_id}"
    html = await (await client.get(f"/nodes/{node_id}")).text()
    assert "Credential of gpu-box-7 revoked" in html and _JOIN_RE.search(html)
    assert await _actions(client, "node.rotate_credential") == ["node.rotate_credential"] * 2


async def test_rotate_when_agent_fails(online):
    client, node_id, agent = online
    agent.answers[p.CREDENTIAL_ROTATE] = RuntimeError("disk full")
    r = await post_form(client, f"/nodes/{node_id}/rotate-credential", {})
    assert r.status == 502 and "could not do it" in await r.text()
    assert client.app[DM].hub.is_online(node_id)


async def test_delete_online_node_tells_the_agent(online):
    client, node_id, agent = online
    r = await client.get(f"/nodes/{node_id}/delete")
    html = await r.text()
    assert r.status == 200 and "Delete gpu-box-7?" in html and "cannot be undone" in html
    assert f'action="/nodes/{node_id}/delete"' in html
    r = await post_form(client, f"/nodes/{node_id}/delete", {})
    assert r.status == 303 and r.headers["Location"] == "/nodes"
    html = await (await client.get("/nodes")).text()
    assert "The node gpu-box-7 has been deleted" in html
    code, _ = await agent.closed()
    assert code == p.CLOSE_DELETED and any(e.type == p.NODE_DELETED for e in agent.received)
    assert client.app[DM].hub.recent_metrics(node_id) == []
    assert (await client.get(f"/nodes/{node_id}")).status == 404


# --- changing a node --------------------------------------------------------------------------

async def test_rename_cordon_join_token(user_client):
    client = user_client
    node_id, _, first_token = await _add_node(client, "box")
    r = await post_form(client, f"/nodes/{node_id}/rename", {"name": "box-2"})
    assert r.status == 303 and r.headers["Location"] == f"/nodes/{node_id}"
    html = await (await client.get(f"/nodes/{node_id}")).text()
    assert "The node is now called box-2" in html and "<h1>box-2" in html
    r = await post_form(client, f"/nodes/{node_id}/rename", {"name": "no way"})
    html = await r.text()
    assert r.status == 422 and "Node names use" in html and 'value="no way"' in html
    await _add_node(client, "other")
    r = await post_form(client, f"/nodes/{node_id}/rename", {"name": "other"})
    assert r.status == 409 and "already exists" in await r.text()

    r = await post_form(client, f"/nodes/{node_id}/cordon", {})
    assert r.status == 303
    html = await (await client.get(f"/nodes/{node_id}")).text()
    assert "box-2 is cordoned" in html and "badge-warn" in html and f"/nodes/{node_id}/uncordon" in html
    assert "cordoned" in _main(await (await client.get("/nodes")).text())
    await post_form(client, f"/nodes/{node_id}/uncordon", {})
    html = await (await client.get(f"/nodes/{node_id}")).text()
    assert "takes new instances again" in html and f"/nodes/{node_id}/cordon" in html

    r = await post_form(client, f"/nodes/{node_id}/join-token", {})
    assert r.headers["Location"] == f"/nodes/{node_id}"
    html = await (await client.get(f"/nodes/{node_id}")).text()
    m = _JOIN_RE.search(html)
    assert m and "New join command for box-2" in html and m.group(2) != first_token
    # The old token no longer works; the new one does.
    assert (await _agent_join(client, first_token))[0] == 403
    await _join(client, m.group(2))
    assert await _actions(client, "node.") == ["node.join", "node.join_token", "node.uncordon", "node.cordon",
                                               "node.create", "node.rename", "node.create"]


async def test_actions_need_the_csrf_token(user_client):
    client = user_client
    node_id, _, _ = await _add_node(client, "guarded")
    for action in ("rename", "cordon", "join-token", "rotate-credential", "delete", "shares"):
        r = await client.post(f"/nodes/{node_id}/{action}", data={"name": "x", "username": "admin"},
                              allow_redirects=False)
        assert r.status == 403, action
    html = await (await client.get(f"/nodes/{node_id}")).text()
    assert "<h1>guarded" in html and "cordoned" not in _main(html).split("</h1>")[0]


async def test_delete_pending_node(user_client):
    client = user_client
    node_id, _, token = await _add_node(client, "short-lived")
    r = await post_form(client, f"/nodes/{node_id}/delete", {})
    assert r.status == 303
    main = _main(await (await client.get("/nodes")).text())
    assert "The node short-lived has been deleted" in main and "No nodes yet" in main
    assert (await _agent_join(client, token))[0] == 403


# --- sharing and who sees what ----------------------------------------------------------------

async def test_sharing_and_permissions(client):
    await add_user(client, "admin@example.org", role="admin", username="admin")
    await add_user(client, "alice@example.org", username="alice")
    await add_user(client, "bob@example.org", username="bob")
    await add_user(client, "carol@example.org", username="carol")
    await page_login(client, "alice@example.org")
    node_id, _, _ = await _add_node(client, "alice-box")

    # Share errors, in words.
    r = await post_form(client, f"/nodes/{node_id}/shares", {"username": "nobody"})
    html = await r.text()
    assert r.status == 422 and "There is no user called nobody" in html and 'value="nobody"' in html
    r = await post_form(client, f"/nodes/{node_id}/shares", {"username": "alice"})
    assert r.status == 409 and "alice owns this node already" in await r.text()
    r = await post_form(client, f"/nodes/{node_id}/shares", {"username": "x" * 65})
    assert r.status == 422 and "Usernames use" in await r.text()
    r = await post_form(client, f"/nodes/{node_id}/shares", {"username": ""})
    assert r.status == 422 and "Usernames use" in await r.text()
    # Share with bob.
    r = await post_form(client, f"/nodes/{node_id}/shares", {"username": "bob"})
    assert r.status == 303 and r.headers["Location"] == f"/nodes/{node_id}#sharing"
    html = await (await client.get(f"/nodes/{node_id}")).text()
    # An offer until bob accepts; his email is not alice's to see.
    assert "now offered to bob" in html and "Not accepted yet" in html and "bob@example.org" not in html
    r = await post_form(client, f"/nodes/{node_id}/shares", {"username": "bob"})
    assert r.status == 409 and "already shared with bob" in await r.text()

    # bob: sees nothing of it until he accepts it on his shares page.
    await _switch(client, "bob@example.org")
    assert "alice-box" not in _main(await (await client.get("/nodes")).text())
    assert (await client.get(f"/nodes/{node_id}")).status == 404
    main = _main(await (await client.get("/shares")).text())
    assert "alice-box" in main and f'action="/shares/{node_id}/accept"' in main
    r = await post_form(client, f"/shares/{node_id}/accept", {}, csrf_from="/shares")
    assert r.status == 303 and r.headers["Location"] == "/shares"
    main = _main(await (await client.get("/shares")).text())
    assert "You accepted alice-box" in main and f'action="/shares/{node_id}/leave"' in main
    assert f'action="/shares/{node_id}/accept"' not in main

    # Then he sees it read-only; changes are refused.
    listing = _main(await (await client.get("/nodes")).text())
    assert "alice-box" in listing and "Shared with you" in listing and "owner: alice" in listing
    r = await client.get(f"/nodes/{node_id}")
    main = _main(await r.text())
    assert r.status == 200 and "alice shares this node with you" in main
    # His one form on it: leave the share.
    assert re.findall(r'<form[^>]*action="([^"]+)"', main) == [f"/shares/{node_id}/leave"] and "/delete" not in main
    for path, data in ((f"/nodes/{node_id}/rename", {"name": "mine"}), (f"/nodes/{node_id}/cordon", {}),
                       (f"/nodes/{node_id}/join-token", {}), (f"/nodes/{node_id}/rotate-credential", {}),
                       (f"/nodes/{node_id}/delete", {}), (f"/nodes/{node_id}/shares", {"username": "carol"})):
        r = await post_form(client, path, data)
        assert r.status == 403, path
        assert "not allowed" in (await r.text()).lower()
    assert (await client.get(f"/nodes/{node_id}/delete")).status == 403

    # carol: does not see it at all.
    await _switch(client, "carol@example.org")
    assert "alice-box" not in await (await client.get("/nodes")).text()
    assert (await client.get(f"/nodes/{node_id}")).status == 404
    assert (await client.get(f"/nodes/{node_id}/delete")).status == 404
    r = await post_form(client, f"/nodes/{node_id}/cordon", {})
    assert r.status == 404
    r = await post_form(client, f"/nodes/{node_id}/shares", {"username": "carol"})
    assert r.status == 404

    # The admin: sees and manages every node, including its shares.
    await _switch(client, "admin@example.org")
    listing = _main(await (await client.get("/nodes")).text())
    assert "alice-box" in listing and "Administrator" in listing and "owner: alice" in listing
    html = await (await client.get(f"/nodes/{node_id}")).text()
    assert 'id="sharing"' in html and "bob@example.org" in html
    r = await post_form(client, f"/nodes/{node_id}/shares", {"username": "carol"})
    assert r.status == 303

    # alice revokes bob's share; bob no longer sees the node.
    await _switch(client, "alice@example.org")
    html = await (await client.get(f"/nodes/{node_id}")).text()
    forms = re.findall(r'action="/nodes/\d+/shares/(\d+)/revoke"', html)
    assert len(forms) == 2
    async with client.app[DM].db.read() as conn:
        bob = await user_svc.get_by_email(conn, "bob@example.org")
    assert bob is not None and str(bob.id) in forms
    r = await post_form(client, f"/nodes/{node_id}/shares/{bob.id}/revoke", {})
    assert r.status == 303
    html = await (await client.get(f"/nodes/{node_id}")).text()
    assert "no longer shared with bob" in html
    r = await post_form(client, f"/nodes/{node_id}/shares/{bob.id}/revoke", {})
    assert r.status == 404
    await _switch(client, "bob@example.org")
    assert (await client.get(f"/nodes/{node_id}")).status == 404
    assert await _actions(client, "node.share") == ["node.share"] * 2
    assert await _actions(client, "node.share_accept") == ["node.share_accept"]
    assert await _actions(client, "node.unshare") == ["node.unshare"]


async def test_the_recipient_declines_and_leaves_on_the_shares_page(client):
    await add_user(client, "alice@example.org", username="alice")
    await add_user(client, "bob@example.org", username="bob")
    await page_login(client, "alice@example.org")
    one, _, _ = await _add_node(client, "one")
    two, _, _ = await _add_node(client, "two")
    for nid in (one, two):
        r = await post_form(client, f"/nodes/{nid}/shares", {"username": "bob"})
        assert r.status == 303
    await _switch(client, "bob@example.org")
    r = await post_form(client, f"/shares/{one}/leave", {}, csrf_from="/shares")  # declined while pending
    assert r.status == 303
    r = await post_form(client, f"/shares/{two}/accept", {}, csrf_from="/shares")
    assert r.status == 303
    # Leaving from the node's own page.
    r = await post_form(client, f"/shares/{two}/leave", {}, csrf_from=f"/nodes/{two}")
    assert r.status == 303
    main = _main(await (await client.get("/shares")).text())
    assert "You no longer use two" in main and "one" not in re.sub(r"<[^>]+>", " ", main).split()
    assert (await client.get(f"/nodes/{two}")).status == 404
    r = await post_form(client, f"/shares/{two}/leave", {}, csrf_from="/shares")
    assert r.status == 404
    assert await _actions(client, "node.share_leave") == ["node.share_leave"]
    assert await _actions(client, "node.share_decline") == ["node.share_decline"]


async def test_not_logged_in(client):
    r = await client.get("/nodes/1", allow_redirects=False)
    assert r.status == 303 and r.headers["Location"].startswith("/login?next=%2Fnodes%2F1")
    r = await client.post("/nodes", data={"name": "x"}, allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/login"


async def test_unknown_node_is_404(user_client):
    for path in ("/nodes/999", "/nodes/abc", "/nodes/99999999999999999999"):
        r = await user_client.get(path)
        assert r.status == 404, path
        assert "Page not found" in await r.text()


# --- Japanese ------------------------------------------------------------------------------------

async def test_japanese(online):
    client, node_id, _ = online
    client.session.cookie_jar.update_cookies({"dm_lang": "ja"})
    html = await (await client.get("/nodes")).text()
    assert '<html lang="ja"' in html
    for text in ("ノードを追加", "オンライン", "プロセッサー", "メモリー", "ディスク", "所有", "32 CPU",
                 "合計 1 台、オンライン 1 台", "空き"):
        assert text in html, text
    html = await (await client.get(f"/nodes/{node_id}")).text()
    for text in ("ライブメトリクス", "CPU 使用率", "受付を停止", "認証情報を更新", "共有", "直近 15 分間",
                 "ドライバー", "最終ハートビート たった今"):
        assert text in html, text
    r = await post_form(client, "/nodes", {"name": "悪い 名前"}, csrf_from="/nodes")
    assert r.status == 422 and "ノード名は英数字" in await r.text()
    r = await post_form(client, "/nodes", {"name": "jp-node"}, csrf_from="/nodes")
    html = await (await client.get(r.headers["Location"])).text()
    assert "ノード jp-node を追加しました" in html and "一度しか表示されません" in html
    await get_csrf(client, "/nodes")


# --- helpers ---------------------------------------------------------------------------------------

def test_sizes_and_percentages():
    assert node_pages.mib(512) == "512 MiB"
    assert node_pages.mib(24564) == "24.0 GiB"
    assert node_pages.mib(257_000) == "251 GiB"
    assert node_pages.mib(1_900_000) == "1.8 TiB"
    assert node_pages.mib(None) == "—" and node_pages.mib("x") == "—" and node_pages.mib(True) == "—"
    assert node_pages.pct(0) == "0 %" and node_pages.pct(3.25) == "3.2 %" and node_pages.pct(99.6) == "100 %"
    assert node_pages.gpu_summary([{"name": "A"}, {"name": "B"}, {"name": "A"}]) == [f"2 {TIMES} A", "B"]


def test_sparkline_points():
    now = 10_000.0
    samples = [{"received_at": now - 1200, "cpu_pct": 50},  # older than the window: left out
               {"received_at": now - 900, "cpu_pct": 0},
               {"received_at": now - 450, "cpu_pct": 100},
               {"received_at": now - 300, "cpu_pct": 150},  # clamped
               {"received_at": now - 200, "cpu_pct": None}]  # no figure: left out
    pts = node_pages.spark_points(samples, "cpu", now).split()
    assert pts == ["0.0,31.0", "90.0,1.0", "120.0,1.0"]
    assert node_pages.spark_points(samples[:2], "cpu", now) == ""  # one point draws no line
    assert node_pages.spark_points(samples, "gpu", now) == ""


def test_relative_times():
    from functools import partial

    from dmd import i18n

    en, ja = partial(i18n.gettext, "en"), partial(i18n.gettext, "ja")
    assert node_pages.ago(en, 1000.0, now=1002.0) == "just now"
    assert node_pages.ago(en, 1000.0, now=1042.0) == "42 s ago"
    assert node_pages.ago(ja, 1000.0, now=1000.0 + 7200) == "2 時間前"
    assert node_pages.ago(en, None) == "never"
    assert node_pages.duration(en, 3600) == "1 hour" and node_pages.duration(en, 7200) == "2 hours"
    assert node_pages.duration(ja, 1800) == "30 分間"


async def test_admins_provide_a_node_for_everyone_on_its_page(client):
    await add_user(client, "admin@example.org", role="admin", username="admin")
    await add_user(client, "alice@example.org", username="alice")
    await page_login(client, "alice@example.org")
    theirs, _, _ = await _add_node(client, "alice-box")
    assert f'action="/nodes/{theirs}/public"' not in await (await client.get(f"/nodes/{theirs}")).text()
    r = await post_form(client, f"/nodes/{theirs}/public", {"public": "1"})
    assert r.status == 403

    await _switch(client, "admin@example.org")
    site, _, _ = await _add_node(client, "site")
    html = await (await client.get(f"/nodes/{site}")).text()
    assert f'action="/nodes/{site}/public"' in html and "Provide for everyone" in html
    r = await post_form(client, f"/nodes/{site}/public", {"public": "1"}, csrf_from=f"/nodes/{site}")
    assert r.status == 303 and r.headers["Location"] == f"/nodes/{site}"
    html = await (await client.get(f"/nodes/{site}")).text()
    assert "site is now provided for everyone" in html and "Stop providing for everyone" in html
    r = await post_form(client, f"/nodes/{theirs}/public", {"public": "1"}, csrf_from=f"/nodes/{theirs}")
    assert r.status == 409 and "only a node an administrator owns" in await r.text()

    # alice now sees the admin's node, for everyone.
    await _switch(client, "alice@example.org")
    main = _main(await (await client.get("/nodes")).text())
    assert "site" in main and "For everyone" in main
    assert await _actions(client, "node.public") == ["node.public"]
