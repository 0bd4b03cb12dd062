"""The agents' WebSocket from dmd's side: every kind of bad link is refused, logged and closed
with a reason, and the other agents are not disturbed."""

import asyncio
import json
import logging

import pytest

from agent import protocol as p
from dmd.agents.hub import SEND_QUEUE_MAX, AgentConn
from dmd.core import DM
from tests.nodes.conftest import node
from tests.waiting import wait_for


@pytest.fixture
async def bystander(joined, agents):
    """An agent that stays connected through every test here."""
    nid, cred = await joined("bystander")
    a = agents(nid, cred)
    await a.connect()
    return nid


async def _assert_bystander_fine(client, admin, nid):
    assert (await node(client, admin, nid))["status"] == "online"
    r = await client.post(f"/api/v1/nodes/{nid}/ping", headers=admin)
    assert r.status == 200


@pytest.mark.parametrize("credential", ["", "dmn_forged-credential", "dm_an-api-token-is-not-a-node", "x" * 5000])
async def test_forged_credentials(client, admin, agents, bystander, credential, caplog):
    caplog.set_level(logging.WARNING, "dmd.agents")
    a = agents(1, credential)
    await a.open()
    code, reason = await a.closed()
    assert code == p.CLOSE_AUTH and "credential" in reason
    assert "refused" in caplog.text
    await _assert_bystander_fine(client, admin, bystander)


@pytest.mark.parametrize("first, code, words", [
    ("not json at all", p.CLOSE_PROTOCOL, "JSON"),
    ("[1,2]", p.CLOSE_PROTOCOL, "object"),
    (json.dumps({"v": 1, "type": "heartbeat", "data": {}}), p.CLOSE_PROTOCOL, "hello"),
    (json.dumps({"v": 1, "type": "hello", "data": {"node_id": "1"}}), p.CLOSE_PROTOCOL, "node_id"),
    (json.dumps({"v": 1, "type": "hello", "evil": 1, "data": {}}), p.CLOSE_PROTOCOL, "unknown envelope"),
    (json.dumps({"v": 1, "type": "hello", "data": {"node_id": 0, "agent_version": "x",
                                                   "protocol": {"min": 1, "max": 1}}}), p.CLOSE_FORBIDDEN, "belongs"),
    (json.dumps({"v": 1, "type": "hello", "data": {"node_id": "SELF", "agent_version": "x",
                                                   "protocol": {"min": 7, "max": 9}}}), p.CLOSE_PROTOCOL, "speaks"),
    (b"\x00\x01binary", p.CLOSE_PROTOCOL, "hello"),
])
async def test_bad_handshakes(client, admin, joined, agents, bystander, first, code, words):
    nid, cred = await joined("victim")
    a = agents(nid, cred)
    await a.open()
    if isinstance(first, str):
        first = first.replace('"SELF"', str(nid))
    await a.send_raw(first)
    got_code, reason = await a.closed()
    assert got_code == code, reason
    assert words in reason
    assert (await node(client, admin, nid))["status"] != "online"
    await _assert_bystander_fine(client, admin, bystander)


@pytest.mark.parametrize("raw, code, words", [
    ("{broken", p.CLOSE_PROTOCOL, "JSON"),
    (json.dumps({"v": 1, "type": "hello", "data": {}}), p.CLOSE_PROTOCOL, "already"),
    (json.dumps({"v": 1, "type": "event", "data": {"node_id": 999999, "kind": "x"}}), p.CLOSE_FORBIDDEN, "node"),
    (json.dumps({"v": 1, "type": "reply", "id": "d1"}), p.CLOSE_PROTOCOL, "ok"),
    (json.dumps({"v": 1, "type": "metrics", "data": "x" * (p.MAX_MESSAGE_BYTES + 10)}), p.CLOSE_TOO_LARGE, "exceeds"),
    (b"binary", p.CLOSE_PROTOCOL, "unknown stream frame op"),  # binary frames are stream frames
    (p.frame(p.OP_OPEN, 1, b'{"kind":"exec","instance_id":1}'), p.CLOSE_PROTOCOL, "may not open"),
    (p.frame(p.OP_DATA, 1, b"x" * (p.CHUNK + 1)), p.CLOSE_PROTOCOL, "exceeds"),
])
async def test_bad_messages_after_handshake(client, admin, joined, agents, bystander, raw, code, words, caplog):
    caplog.set_level(logging.WARNING, "dmd.agents")
    nid, cred = await joined("victim")
    a = agents(nid, cred)
    await a.connect(answer=False)
    assert (await node(client, admin, nid))["status"] == "online"
    await a.send_raw(raw)
    got_code, reason = await a.closed()
    assert got_code == code and words in reason
    await wait_for(lambda: _status_is(client, admin, nid, "offline"), "the node offline", 5)
    assert "closing the link" in caplog.text
    await _assert_bystander_fine(client, admin, bystander)


async def test_unknown_request_gets_structured_error(client, admin, joined, agents):
    nid, cred = await joined("box")
    a = agents(nid, cred)
    await a.connect()
    await a.send("future.thing", {"x": 1}, id_="a1")
    [reply] = await wait_for(lambda: [e for e in a.received if e.type == p.REPLY and e.id == "a1"], "the reply", 5)
    assert reply.ok is False and reply.error["code"] == "unknown_type"
    assert (await node(client, admin, nid))["status"] == "online"


async def test_second_link_of_same_node_replaces_the_first(client, admin, joined, agents):
    nid, cred = await joined("box")
    first = agents(nid, cred)
    await first.connect()
    second = agents(nid, cred)
    await second.connect()
    code, _reason = await first.closed()
    assert code == p.CLOSE_REPLACED
    # The first link's end must not mark the node offline under the second: still online a while later.
    await asyncio.sleep(0.2)
    assert (await node(client, admin, nid))["status"] == "online"
    assert (await client.post(f"/api/v1/nodes/{nid}/ping", headers=admin)).status == 200


async def test_missed_heartbeats_mark_offline(make_client, tmp_path):
    from tests.conftest import add_user, make_token
    from tests.nodes.helpers import FakeAgent

    client = await make_client(agent_heartbeat_s=1)
    await add_user(client, "a@example.org", role="admin")
    admin = await make_token(client, "a@example.org")
    created = await (await client.post("/api/v1/nodes", json={"name": "quiet"}, headers=admin)).json()
    joined = await (await client.post("/api/v1/nodes/join", json={"token": created["join_token"]})).json()
    agent = FakeAgent(str(client.make_url("")), joined["credential"], joined["node_id"])
    talker_node = await (await client.post("/api/v1/nodes", json={"name": "talker"}, headers=admin)).json()
    talker_join = await (await client.post("/api/v1/nodes/join", json={"token": talker_node["join_token"]})).json()
    talker = FakeAgent(str(client.make_url("")), talker_join["credential"], talker_join["node_id"])
    try:
        await agent.connect()  # reads, but never sends a heartbeat
        await talker.connect()

        async def quiet_one_offline() -> bool:
            await talker.send(p.HEARTBEAT, {"seq": 1})  # the talker keeps its heartbeats coming
            return await _status_is(client, admin, joined["node_id"], "offline")

        await wait_for(quiet_one_offline, "the quiet node offline", 10, every=0.5)
        code, _reason = await agent.closed()
        assert code == p.CLOSE_HEARTBEAT
        assert (await node(client, admin, talker_join["node_id"]))["status"] == "online"
    finally:
        await agent.close()
        await talker.close()


async def test_send_queue_is_bounded(client):
    """An agent that stops reading is disconnected, not buffered for ever."""

    class StuckWS:
        closed_with: int | None = None

        async def send_str(self, _text):
            await asyncio.sleep(3600)

        async def close(self, code, message):
            self.closed_with = code

    ws = StuckWS()
    conn = AgentConn(client.app[DM].hub, 1, "stuck", ws, "test")  # type: ignore[arg-type]
    writer = asyncio.create_task(conn.write_loop())
    for i in range(SEND_QUEUE_MAX + 5):
        conn.send(p.message(p.PING, {"i": i}))
    await wait_for(lambda: ws.closed_with is not None, "the stuck link closed", 5)
    assert ws.closed_with == p.CLOSE_SLOW and conn.closing
    writer.cancel()


async def test_request_timeout(client, admin, joined, agents):
    nid, cred = await joined("slow")
    a = agents(nid, cred)
    a.answers[p.PING] = "silent"
    await a.connect()
    from dmd.agents.hub import AgentTimeout

    with pytest.raises(AgentTimeout):
        await client.app[DM].hub.ask(nid, p.Ping(), timeout=0.3)
    assert (await node(client, admin, nid))["status"] == "online"


async def _status_is(client, admin, node_id: int, status: str) -> bool:
    return (await node(client, admin, node_id))["status"] == status
