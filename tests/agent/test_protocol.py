"""The wire protocol shared by dmd and dmc: round trips, every ProtocolError, negotiation."""

from __future__ import annotations

import json

import pytest

from agent import protocol as p


def test_message_round_trip() -> None:
    env = p.message(p.HEARTBEAT, {"seq": 7})
    text = env.to_json()
    assert json.loads(text) == {"v": p.PROTOCOL_VERSION, "type": "heartbeat", "data": {"seq": 7}}
    back = p.decode(text)
    assert back == env
    assert not back.is_reply


def test_request_with_id_round_trip() -> None:
    env = p.message(p.PING, None, "d1")
    back = p.decode(env.to_json().encode())  # bytes are accepted too
    assert back.id == "d1" and back.type == p.PING and back.data == {}


def test_unicode_round_trip() -> None:
    env = p.message(p.EVENT, {"kind": "note", "text": "ノード 😀"})
    assert "ノード" in env.to_json()  # not escaped: ensure_ascii=False
    assert p.decode(env.to_json()).data["text"] == "ノード 😀"


def test_reply_ok_round_trip() -> None:
    env = p.reply_ok("a1", {"at": 1.5})
    obj = json.loads(env.to_json())
    assert obj == {"v": p.PROTOCOL_VERSION, "type": "reply", "id": "a1", "ok": True, "data": {"at": 1.5}}
    back = p.decode(env.to_json())
    assert back.is_reply and back.ok is True and back.data == {"at": 1.5} and back.error is None


def test_reply_ok_without_data() -> None:
    back = p.decode(json.dumps({"v": 1, "type": "reply", "id": "a1", "ok": True}))
    assert back.ok is True and back.data == {}


def test_reply_error_round_trip() -> None:
    env = p.reply_error("a2", "unknown_type", "no handler for x")
    obj = json.loads(env.to_json())
    assert obj == {"v": p.PROTOCOL_VERSION, "type": "reply", "id": "a2", "ok": False,
                   "error": {"code": "unknown_type", "message": "no handler for x"}}
    assert "data" not in obj
    back = p.decode(env.to_json())
    assert back.ok is False and back.error == {"code": "unknown_type", "message": "no handler for x"}


def test_reply_error_truncates() -> None:
    env = p.reply_error("a3", "c" * 100, "m" * 5000)
    assert env.error is not None
    assert len(env.error["code"]) == 64 and len(env.error["message"]) == 2000
    back = p.decode(json.dumps({"v": 1, "type": "reply", "id": "a", "ok": False,
                                "error": {"code": "c" * 100, "message": "m" * 3000}}))
    assert back.error is not None and len(back.error["code"]) == 64 and len(back.error["message"]) == 2000


def test_failed_reply_without_error_gets_a_default() -> None:
    obj = json.loads(p.Envelope(type=p.REPLY, id="x", ok=False).to_json())
    assert obj["error"] == {"code": "error", "message": "unknown error"}


def test_newer_version_and_unknown_data_fields_are_accepted() -> None:
    env = p.decode(json.dumps({"v": 2, "type": "something.new", "data": {"future": [1, 2]}}))
    assert env.v == 2 and env.type == "something.new" and env.data == {"future": [1, 2]}


def test_missing_data_is_empty() -> None:
    assert p.decode('{"v":1,"type":"heartbeat"}').data == {}


def test_hello_round_trip() -> None:
    hello = p.Hello(3, "0.1.0", p.ProtocolRange(1, 2), {"hostname": "h", "gpus": []}, p.Snapshot(containers=[]),
                    snapshot_parts=0)
    data = p.to_data(hello)
    assert data["protocol"] == {"min": 1, "max": 2}
    env = p.decode(p.notice_envelope(hello).to_json())
    assert p.parse(p.Hello, env.data) == hello


def test_hello_defaults_facts_and_state() -> None:
    hello = p.parse(p.Hello, {"node_id": 1, "agent_version": "x", "protocol": {"min": 1, "max": 1}})
    assert hello.facts == {} and hello.state == p.Snapshot() and hello.snapshot_parts == 0
    assert hello.state.containers is None and hello.state.images is None  # not reported, not "none"


@pytest.mark.parametrize(("data", "words"), [
    ({"node_id": "1", "agent_version": "x", "protocol": {"min": 1, "max": 1}}, "node_id"),
    ({"node_id": True, "agent_version": "x", "protocol": {"min": 1, "max": 1}}, "node_id"),
    ({"agent_version": "x", "protocol": {"min": 1, "max": 1}}, "node_id"),
    ({"node_id": 1, "agent_version": 5, "protocol": {"min": 1, "max": 1}}, "agent_version"),
    ({"node_id": 1, "agent_version": "x" * 65, "protocol": {"min": 1, "max": 1}}, "agent_version"),
    ({"node_id": 1, "agent_version": "x"}, "protocol"),
    ({"node_id": 1, "agent_version": "x", "protocol": {"min": 1}}, "protocol.max"),
    ({"node_id": 1, "agent_version": "x", "protocol": {"min": True, "max": 1}}, "protocol.min"),
    ({"node_id": 1, "agent_version": "x", "protocol": [1, 1]}, "protocol"),
    ({"node_id": 1, "agent_version": "x", "protocol": {"min": 1, "max": 1}, "facts": []}, "facts"),
    ({"node_id": 1, "agent_version": "x", "protocol": {"min": 1, "max": 1}, "state": "x"}, "state"),
    ({"node_id": 1, "agent_version": "x", "protocol": {"min": 1, "max": 1}, "state": {"images": [{}]}},
     r"state.images\[0\].id"),
    ({"node_id": 1, "agent_version": "x", "protocol": {"min": 1, "max": 1}, "snapshot_parts": -1}, "snapshot_parts"),
])
def test_bad_hello(data: dict[str, object], words: str) -> None:
    with pytest.raises(p.DecodeError, match=words):
        p.parse(p.Hello, data)


@pytest.mark.parametrize(("raw", "words"), [
    ("not json", "not valid JSON"),
    ("", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    ("[" * 100000 + "]" * 100000, "not valid JSON"),  # too deep: RecursionError
    ("[1, 2]", "JSON object"),
    ('"text"', "JSON object"),
    ("null", "JSON object"),
    ('{"v":1,"type":"x","extra":1}', "unknown envelope fields: extra"),
    ('{"type":"x"}', "'v'"),
    ('{"v":0,"type":"x"}', "'v'"),
    ('{"v":"1","type":"x"}', "'v'"),
    ('{"v":true,"type":"x"}', "'v'"),
    ('{"v":1.0,"type":"x"}', "'v'"),
    ('{"v":1}', "'type'"),
    ('{"v":1,"type":""}', "'type'"),
    ('{"v":1,"type":5}', "'type'"),
    ('{"v":1,"type":"' + "t" * 65 + '"}', "'type'"),
    ('{"v":1,"type":"x","id":5}', "'id'"),
    ('{"v":1,"type":"x","id":""}', "'id'"),
    ('{"v":1,"type":"x","id":"' + "i" * 65 + '"}', "'id'"),
    ('{"v":1,"type":"x","data":[]}', "'data'"),
    ('{"v":1,"type":"x","data":"s"}', "'data'"),
    ('{"v":1,"type":"reply","ok":true}', "id of its request"),
    ('{"v":1,"type":"reply","id":"a"}', "boolean 'ok'"),
    ('{"v":1,"type":"reply","id":"a","ok":1}', "boolean 'ok'"),
    ('{"v":1,"type":"reply","id":"a","ok":true,"data":[1]}', "reply 'data'"),
    ('{"v":1,"type":"reply","id":"a","ok":false}', "error {code, message}"),
    ('{"v":1,"type":"reply","id":"a","ok":false,"error":"bad"}', "error {code, message}"),
    ('{"v":1,"type":"reply","id":"a","ok":false,"error":{"code":"x"}}', "error {code, message}"),
    ('{"v":1,"type":"reply","id":"a","ok":false,"error":{"code":1,"message":"m"}}', "error {code, message}"),
])
def test_decode_errors(raw: str | bytes, words: str) -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.decode(raw)
    assert words in str(info.value)
    assert info.value.close_code == p.CLOSE_PROTOCOL


def test_decode_too_large() -> None:
    raw = json.dumps({"v": 1, "type": "metrics", "data": {"x": "y" * p.MAX_MESSAGE_BYTES}})
    with pytest.raises(p.ProtocolError, match="exceeds") as info:
        p.decode(raw)
    assert info.value.close_code == p.CLOSE_TOO_LARGE
    with pytest.raises(p.ProtocolError) as info:
        p.decode(raw.encode())
    assert info.value.close_code == p.CLOSE_TOO_LARGE


def test_decode_counts_bytes_not_characters() -> None:
    # Just under the limit in characters, over it in UTF-8 bytes.
    text = "é" * (p.MAX_MESSAGE_BYTES // 2 + 10)
    with pytest.raises(p.ProtocolError) as info:
        p.decode(json.dumps({"v": 1, "type": "x", "data": {"t": text}}, ensure_ascii=False))
    assert info.value.close_code == p.CLOSE_TOO_LARGE


def test_encode_too_large() -> None:
    env = p.message(p.FACTS, {"blob": "x" * p.MAX_MESSAGE_BYTES})
    with pytest.raises(p.ProtocolError, match="exceeds") as info:
        env.to_json()
    assert info.value.close_code == p.CLOSE_TOO_LARGE


def test_protocol_error_default_close_code() -> None:
    assert p.ProtocolError("x").close_code == p.CLOSE_PROTOCOL
    assert p.ProtocolError("x", p.CLOSE_FORBIDDEN).close_code == p.CLOSE_FORBIDDEN


def test_remote_error() -> None:
    err = p.RemoteError("timeout", "too slow")
    assert err.code == "timeout" and err.message == "too slow" and str(err) == "timeout: too slow"


@pytest.mark.parametrize(("agent_min", "agent_max", "expected"), [
    (1, 1, 1),
    (1, 5, p.PROTOCOL_VERSION),  # a newer agent speaks down to this dmd
    (p.PROTOCOL_VERSION + 1, p.PROTOCOL_VERSION + 3, None),  # too new
    (0, 0, None),  # too old
    (2, 1, None),  # an empty range
])
def test_negotiate(agent_min: int, agent_max: int, expected: int | None) -> None:
    assert p.negotiate(agent_min, agent_max) == expected


def test_negotiate_never_below_minimum() -> None:
    for lo in range(0, 4):
        for hi in range(lo, 4):
            got = p.negotiate(lo, hi)
            if got is not None:
                assert p.MIN_PROTOCOL_VERSION <= got <= p.PROTOCOL_VERSION and lo <= got <= hi


def test_id_source() -> None:
    ids = p.IdSource("a")
    assert [ids.next() for _ in range(3)] == ["a1", "a2", "a3"]
    assert p.IdSource("d").next() == "d1"  # independent counters


def test_close_codes_are_application_codes() -> None:
    for name in dir(p):
        if name.startswith("CLOSE_") and name not in ("CLOSE_NORMAL", "CLOSE_GOING_AWAY"):
            assert 4000 <= getattr(p, name) <= 4999, name
