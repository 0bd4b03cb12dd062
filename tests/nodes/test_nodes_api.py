"""Nodes through the API: joining, visibility, sharing, quotas, cordon, rotate, delete."""

import asyncio
import datetime as dt

from agent import protocol as p
from dmd.core import DM
from dmd.db.schema import nodes
from tests.conftest import add_user, make_token
from tests.nodes.conftest import node
from tests.waiting import wait_for


async def test_create_and_join(client, admin):
    r = await client.post("/api/v1/nodes", json={"name": "gpu-box-1"}, headers=admin)
    assert r.status == 201
    created = await r.json()
    assert created["status"] == "pending" and created["join_token"].startswith("dmj_")
    base = str(client.make_url("")).rstrip("/")
    assert created["join_command"] == f"dmc join {base} {created['join_token']}"
    r = await client.post("/api/v1/nodes/join", json={"token": created["join_token"], "hostname": "gpu-box-1"})
    assert r.status == 200
    joined = await r.json()
    assert joined["node_id"] == created["id"] and joined["credential"].startswith("dmn_")
    assert joined["heartbeat_s"] == 10
    again = await client.post("/api/v1/nodes/join", json={"token": created["join_token"]})
    assert again.status == 403 and (await again.json())["error"]["code"] == "join_token_invalid"
    n = await node(client, admin, created["id"])
    assert n["status"] == "offline" and n["join_expires_at"] is None
    # Neither secret is stored in the clear.
    async with client.app[DM].db.read() as conn:
        row = (await conn.execute(nodes.select())).first()
    assert joined["credential"] not in str(row) and created["join_token"] not in str(row)


async def test_a_join_token_is_used_once_under_parallel_joins(client, admin):
    """Ten agents present one join token at once: one gets the credential, nine are refused."""
    created = await (await client.post("/api/v1/nodes", json={"name": "contested"}, headers=admin)).json()
    replies = await asyncio.gather(*(
        client.post("/api/v1/nodes/join", json={"token": created["join_token"], "hostname": f"h{i}"})
        for i in range(10)))
    bodies = [await r.json() for r in replies]
    assert sorted(r.status for r in replies) == [200] + [403] * 9, bodies
    assert {b["error"]["code"] for b in bodies if "error" in b} == {"join_token_invalid"}
    [winner] = [b for b in bodies if "credential" in b]
    # The credential handed out is the one stored: the node answers to it on the agent link.
    r = await client.get(f"/api/v1/nodes/{created['id']}", headers=admin)
    assert (await r.json())["status"] == "offline"
    from tests.nodes.helpers import FakeAgent

    agent = FakeAgent(str(client.make_url("")), winner["credential"], created["id"])
    try:
        assert (await agent.connect())["node_id"] == created["id"]
    finally:
        await agent.close()


async def test_expired_join_token(client, admin):
    r = await client.post("/api/v1/nodes", json={"name": "late"}, headers=admin)
    created = await r.json()
    async with client.app[DM].db.begin() as conn:
        await conn.execute(nodes.update().values(join_expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))
    r = await client.post("/api/v1/nodes/join", json={"token": created["join_token"]})
    assert r.status == 410 and "expired" in (await r.json())["error"]["message"]
    r = await client.post(f"/api/v1/nodes/{created['id']}/join-token", headers=admin)
    assert r.status == 201
    fresh = await r.json()
    assert (await client.post("/api/v1/nodes/join", json={"token": fresh["join_token"]})).status == 200


async def test_bad_node_names(client, admin):
    for name in ("", "../etc", "a b", "x" * 65, "$(reboot)", "-lead"):
        r = await client.post("/api/v1/nodes", json={"name": name}, headers=admin)
        assert r.status == 422, name
    await client.post("/api/v1/nodes", json={"name": "dup"}, headers=admin)
    r = await client.post("/api/v1/nodes", json={"name": "dup"}, headers=admin)
    assert r.status == 409


async def test_visibility_and_sharing(client, admin, alice, joined):
    await add_user(client, "bob@example.org")
    bob = await make_token(client, "bob@example.org")
    nid, _ = await joined("alice-node", alice)
    assert (await node(client, alice, nid))["access"] == "owner"
    assert (await node(client, admin, nid))["access"] == "admin"
    assert (await client.get(f"/api/v1/nodes/{nid}", headers=bob)).status == 404
    assert (await (await client.get("/api/v1/nodes", headers=bob)).json())["items"] == []
    assert (await client.post(f"/api/v1/nodes/{nid}/shares", json={"username": "bob"}, headers=bob)).status == 404
    r = await client.post(f"/api/v1/nodes/{nid}/shares", json={"username": "bob"}, headers=alice)
    assert r.status == 201
    r = await client.post(f"/api/v1/nodes/{nid}/shares", json={"username": "bob"}, headers=alice)
    assert r.status == 409
    assert (await client.get(f"/api/v1/nodes/{nid}", headers=bob)).status == 404  # until bob accepts
    assert (await client.post(f"/api/v1/shares/{nid}/accept", headers=bob)).status == 200
    assert (await node(client, bob, nid))["access"] == "shared"
    # Shared users may look, not manage.
    assert (await client.patch(f"/api/v1/nodes/{nid}", json={"name": "mine"}, headers=bob)).status == 403
    assert (await client.delete(f"/api/v1/nodes/{nid}", headers=bob)).status == 403
    shares = await (await client.get(f"/api/v1/nodes/{nid}/shares", headers=alice)).json()
    bob_id = shares[0]["user_id"]
    assert [s["username"] for s in shares] == ["bob"]
    assert (await client.delete(f"/api/v1/nodes/{nid}/shares/{bob_id}", headers=alice)).status == 204
    assert (await client.get(f"/api/v1/nodes/{nid}", headers=bob)).status == 404
    r = await client.post(f"/api/v1/nodes/{nid}/shares", json={"username": "nobody"}, headers=alice)
    assert r.status == 422


async def test_node_limit_is_atomic(client, admin, alice):
    me = await (await client.get("/api/v1/me", headers=alice)).json()
    await client.patch(f"/api/v1/users/{me['id']}", json={"node_limit": 3}, headers=admin)
    results = await asyncio.gather(*(
        client.post("/api/v1/nodes", json={"name": f"n{i}"}, headers=alice) for i in range(10)
    ))
    statuses = sorted(r.status for r in results)
    assert statuses.count(201) == 3 and statuses.count(403) == 7
    body = await next(r for r in results if r.status == 403).json()
    assert body["error"]["code"] == "quota_exceeded"
    # Admins are not limited by their own quota field.
    assert (await client.post("/api/v1/nodes", json={"name": "admin-node"}, headers=admin)).status == 201


async def test_cordon_rename(client, admin, joined):
    nid, _ = await joined("box")
    r = await client.post(f"/api/v1/nodes/{nid}/cordon", headers=admin)
    assert (await r.json())["cordoned"] is True
    r = await client.post(f"/api/v1/nodes/{nid}/uncordon", headers=admin)
    assert (await r.json())["cordoned"] is False
    r = await client.patch(f"/api/v1/nodes/{nid}", json={"name": "box-2"}, headers=admin)
    assert (await r.json())["name"] == "box-2"
    audit = await (await client.get("/api/v1/audit?action=node.", headers=admin)).json()
    assert {"node.create", "node.join", "node.cordon", "node.uncordon", "node.rename"} <= {
        e["action"] for e in audit["items"]}


async def test_online_facts_metrics_ping(client, admin, joined, agents):
    nid, cred = await joined("box")
    agent = agents(nid, cred)
    facts = {"hostname": "box", "cpu_count": 8,
             "gpus": [{"vendor": "nvidia", "index": 0, "name": "A100", "uuid": "GPU-1"}]}
    welcome = await agent.connect(facts)
    assert welcome["node_id"] == nid and welcome["protocol"] == 1 and welcome["heartbeat_s"] == 10
    n = await node(client, admin, nid)
    assert n["status"] == "online" and n["facts"]["cpu_count"] == 8 and n["gpus"][0]["uuid"] == "GPU-1"
    assert n["agent_version"] == "test-agent"
    await agent.send(p.METRICS, {"at": 1765000000.0, "cpu_pct": 12.5, "memory_used_mb": 100})
    await agent.send(p.FACTS, {"hostname": "box", "cpu_count": 16, "gpus": []})

    async def metrics():
        return (await (await client.get(f"/api/v1/nodes/{nid}/metrics", headers=admin)).json())["items"]

    assert (await wait_for(metrics, "the metrics sample", 5))[-1]["cpu_pct"] == 12.5
    await wait_for(lambda: _has(client, admin, nid, lambda n: n["facts"]["cpu_count"] == 16), "the new facts", 5)
    r = await client.post(f"/api/v1/nodes/{nid}/ping", headers=admin)
    assert r.status == 200 and (await r.json())["agent_time"] == 123.0
    agent.answers[p.PING] = RuntimeError("disk on fire")
    r = await client.post(f"/api/v1/nodes/{nid}/ping", headers=admin)
    assert r.status == 502 and "disk on fire" in (await r.json())["error"]["message"]
    before_close = dt.datetime.now(dt.UTC)
    await agent.close()
    n = await wait_for(lambda: _has(client, admin, nid, lambda n: n["status"] == "offline"), "the node offline", 5)
    last_seen = dt.datetime.fromisoformat(n["last_seen"].replace("Z", "+00:00"))
    assert before_close - dt.timedelta(seconds=15) <= last_seen <= dt.datetime.now(dt.UTC), n
    r = await client.post(f"/api/v1/nodes/{nid}/ping", headers=admin)
    assert r.status == 409 and (await r.json())["error"]["code"] == "node_offline"


async def test_rotate_credential_online_and_offline(client, admin, joined, agents):
    nid, cred = await joined("box")
    agent = agents(nid, cred)
    saved = {}
    agent.answers[p.CREDENTIAL_ROTATE] = lambda data: saved.update(data) or {}
    await agent.connect()
    r = await client.post(f"/api/v1/nodes/{nid}/rotate-credential", headers=admin)
    assert r.status == 200 and (await r.json())["delivered"] is True
    code, _ = await agent.closed()
    assert code == 1000
    old = agents(nid, cred)
    await old.open()
    assert (await old.closed())[0] == p.CLOSE_AUTH
    new = agents(nid, saved["credential"])
    await new.connect()
    await new.close()
    await wait_for(lambda: _has(client, admin, nid, lambda n: n["status"] == "offline"), "the node offline", 5)
    r = await client.post(f"/api/v1/nodes/{nid}/rotate-credential", headers=admin)
    body = await r.json()
    assert body["delivered"] is False and body["join_command"].startswith("dmc join ")
    stale = agents(nid, saved["credential"])
    await stale.open()
    assert (await stale.closed())[0] == p.CLOSE_AUTH


async def test_delete_tells_the_agent(client, admin, joined, agents):
    nid, cred = await joined("doomed")
    agent = agents(nid, cred)
    await agent.connect()
    assert (await client.delete(f"/api/v1/nodes/{nid}", headers=admin)).status == 204
    code, reason = await agent.closed()
    assert code == p.CLOSE_DELETED and "deleted" in reason
    assert any(e.type == p.NODE_DELETED for e in agent.received)
    again = agents(nid, cred)
    await again.open()
    assert (await again.closed())[0] == p.CLOSE_AUTH
    assert (await client.get(f"/api/v1/nodes/{nid}", headers=admin)).status == 404


async def test_node_credential_only_works_on_the_agent_link(client, admin, joined):
    _, cred = await joined("box")
    for path in ("/api/v1/me", "/api/v1/nodes"):
        r = await client.get(path, headers={"Authorization": f"Bearer {cred}"})
        assert r.status == 401
    # And an API token is no node credential (see test_agent_link's forged credentials).


async def _has(client, admin, node_id: int, pred) -> dict | None:
    """The node, when `pred` holds for it."""
    n = await node(client, admin, node_id)
    return n if pred(n) else None
