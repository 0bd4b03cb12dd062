"""Agents are untrusted input (issue 10, hole 10): sizes per message type, rates per link, metrics
checked beyond their types. A scripted agent over the real WebSocket breaks each; only its link is
closed, with a code, dmd keeps nothing of what it sent, and another node carries on."""

from __future__ import annotations

import json
from typing import Any

from agent import protocol as p
from dmd.agents import limits
from dmd.agents.hub import METRICS_KEPT
from dmd.core import DM
from tests.nodes.conftest import node
from tests.waiting import wait_for


def metrics(gpus: int = 0, uuid: str = "GPU-x", **more: Any) -> dict[str, Any]:
    return {"at": 1.0, "cpu_pct": 5.0, **more,
            "gpus": [{"vendor": "nvidia", "index": i, "uuid": uuid, "utilization_pct": 1.0} for i in range(gpus)]}


async def carries_on(client, admin, agent) -> None:  # type: ignore[no-untyped-def]
    """The other node: online, answering, and its metrics kept."""
    hub = client.app[DM].hub
    before = len(hub.recent_metrics(agent.node_id))
    await agent.send(p.Metrics.TYPE, metrics(gpus=2))
    await wait_for(lambda: len(hub.recent_metrics(agent.node_id)) > before, "the bystander's metrics kept", 5)
    assert (await node(client, admin, agent.node_id))["status"] == "online"
    r = await client.post(f"/api/v1/nodes/{agent.node_id}/ping", headers=admin)
    assert r.status == 200, await r.text()


async def test_oversized_messages_close_only_that_link(client, admin, joined, agents):
    hub = client.app[DM].hub
    other = agents(*(await joined("bystander")))
    await other.connect()
    nid, cred = await joined("offender")
    # ~900 KB of well-typed metrics (under the protocol's 1 MiB, which dmd used to keep 90 of), then
    # facts over 256 KiB, then an event over 64 KiB.
    big_metrics = json.dumps({"v": 1, "type": "metrics", "data": metrics(gpus=2700, uuid="G" * 280)})
    big_facts = json.dumps({"v": 1, "type": "facts", "data": {"hostname": "h" * (300 * 1024)}})
    big_event = json.dumps({"v": 1, "type": "event", "data": {"kind": "container", "container_id": "c" * 70000}})
    assert 800_000 < len(big_metrics) < p.MAX_MESSAGE_BYTES
    for raw, words in ((big_metrics, "metrics message"), (big_facts, "facts message"), (big_event, "event message")):
        a = agents(nid, cred)
        await a.connect()
        await a.send(p.Metrics.TYPE, metrics(gpus=1))  # a fine one first
        await a.send_raw(raw)
        code, reason = await a.closed()
        assert code == p.CLOSE_TOO_LARGE and words in reason and "exceeds its limit" in reason, (code, reason)
        await wait_for(lambda: not hub.is_online(nid), "the offender offline", 5)
        assert all(len(json.dumps(m)) < limits.MAX_BYTES["metrics"] for m in hub.recent_metrics(nid))
        await carries_on(client, admin, other)
    assert len(hub.recent_metrics(nid)) == 3  # the three fine ones, nothing of the big ones
    async with client.app[DM].db.read() as conn:
        from dmd.queries import nodes as node_svc

        stored = await node_svc.get(conn, nid)
    assert "h" * 1000 not in json.dumps(stored.facts or {})


async def test_floods_are_cut_off(client, admin, joined, agents):
    hub = client.app[DM].hub
    other = agents(*(await joined("bystander")))
    await other.connect()
    nid, cred = await joined("flooder")
    for type_, data, rate in ((p.Metrics.TYPE, metrics(gpus=1), limits.RATES["metrics"]),
                              (p.NodeFacts.TYPE, {"hostname": "flood"}, limits.RATES["facts"])):
        a = agents(nid, cred)
        await a.connect()
        for _ in range(int(rate.burst) + 50):
            await a.send(type_, data)
        code, reason = await a.closed()
        assert code == p.CLOSE_RATE_LIMITED and f"too many {type_} messages" in reason, (code, reason)
        await wait_for(lambda: not hub.is_online(nid), "the flooder offline", 5)
        await carries_on(client, admin, other)
    # What dmd keeps of a node stays bounded: the samples it keeps, each under its size limit.
    kept = hub.recent_metrics(nid)
    assert len(kept) <= min(METRICS_KEPT, limits.RATES["metrics"].burst + 2)


async def test_metrics_checked_beyond_their_types(client, admin, joined, agents):
    hub = client.app[DM].hub
    other = agents(*(await joined("bystander")))
    await other.connect()
    nid, cred = await joined("liar")
    for raw, words in (
        ('{"v":1,"type":"metrics","data":{"at":NaN}}', "finite"),
        ('{"v":1,"type":"metrics","data":{"at":1,"cpu_pct":Infinity}}', "finite"),
        (json.dumps({"v": 1, "type": "metrics", "data": metrics(gpus=limits.MAX_METRIC_GPUS + 1)}), "GPUs"),
        (json.dumps({"v": 1, "type": "metrics", "data": {"at": "soon"}}), "at"),
    ):
        a = agents(nid, cred)
        await a.connect()
        await a.send_raw(raw)
        code, reason = await a.closed()
        assert code == p.CLOSE_PROTOCOL and words in reason, (raw, code, reason)
        await wait_for(lambda: not hub.is_online(nid), "the liar offline", 5)
    assert hub.recent_metrics(nid) == []
    await carries_on(client, admin, other)


def test_buckets_refill() -> None:
    now = [0.0]
    link = limits.LinkLimits(clock=lambda: now[0])
    env = p.message(p.Metrics.TYPE, metrics())
    for _ in range(int(limits.RATES["metrics"].burst)):
        link.check(env, 100)
    try:
        link.check(env, 100)
    except p.ProtocolError as e:
        assert e.close_code == p.CLOSE_RATE_LIMITED
    else:
        raise AssertionError("the bucket did not run out")
    now[0] += 1.0 / limits.RATES["metrics"].per_s  # one more token
    link.check(env, 100)
    for _ in range(int(limits.RATES[limits.ALL].burst) * 2):  # replies answer dmd's own requests: not counted
        link.check(p.reply_ok("r1", {}), 100)
