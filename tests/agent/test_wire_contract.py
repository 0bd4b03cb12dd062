"""The typed wire contract: every message type round-trips through JSON, decoding names the bad
field, both ends handle exactly the protocol's set, and a huge state travels in parts."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import types
import typing
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import protocol as p
from agent.config import AgentConfig
from agent.link.snapshot import merge_parts, snapshot_parts
from agent.runtime.fake import FakeDriver
from agent.workloads import make_link

_STRATEGIES: dict[Any, st.SearchStrategy[Any]] = {}


def strategy_for(tp: Any) -> st.SearchStrategy[Any]:
    """Values of a wire type: every field filled, valid where the type checks itself."""
    if tp in _STRATEGIES:
        return _STRATEGIES[tp]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        found: st.SearchStrategy[Any] = st.one_of(st.none(), st.integers(), st.text(max_size=5),
                                                  st.lists(st.integers(), max_size=2))
    elif tp is bool:
        found = st.booleans()
    elif tp is int:
        found = st.integers(min_value=0, max_value=2**53)
    elif tp is float:
        found = st.floats(allow_nan=False, allow_infinity=False, width=32)
    elif tp is str:
        found = st.text(min_size=1, max_size=12)
    elif tp is dt.datetime:
        found = st.datetimes(timezones=st.just(dt.UTC))
    elif tp is types.NoneType:
        found = st.none()
    elif origin is typing.Literal:
        found = st.sampled_from(args)
    elif origin in (typing.Union, types.UnionType):
        found = st.one_of(*(strategy_for(a) for a in args))
    elif origin in (list, tuple):
        found = st.lists(strategy_for(args[0]), max_size=3)
        if origin is tuple:
            found = found.map(tuple)
    elif origin is dict:
        found = st.dictionaries(st.text(min_size=1, max_size=6), strategy_for(args[1]), max_size=3)
    elif dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        fields = {f.name: strategy_for(hints[f.name]) for f in dataclasses.fields(tp) if f.init}
        found = st.builds(tp, **fields).filter(lambda o: getattr(o, "__wire_check__", lambda: None)() is None)
    else:
        raise AssertionError(f"no strategy for {tp!r}")
    _STRATEGIES[tp] = found
    return found


REPLIES = sorted({c.REPLY for c in p.REQUESTS.values()}, key=lambda c: c.__name__)
ALL = sorted({*p.REQUESTS.values(), *REPLIES, *p.AGENT_NOTICES.values(), *p.DMD_NOTICES.values()} - {p.Event},
             key=lambda c: c.__name__)
EVENTS = sorted(p.EVENT_KINDS.values(), key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_every_message_type_round_trips_through_json(cls: type, data: st.DataObject) -> None:
    value = data.draw(strategy_for(cls))
    text = json.dumps(p.to_data(value), allow_nan=False)
    assert p.parse(cls, json.loads(text)) == value


@pytest.mark.parametrize("cls", EVENTS, ids=lambda c: c.__name__)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_every_event_kind_round_trips_inside_an_event(cls: type, data: st.DataObject) -> None:
    body = data.draw(strategy_for(cls))
    env = p.decode(p.notice_envelope(p.Event(body)).to_json())
    assert env.data["kind"] == cls.KIND  # the v1 shape: the kind beside its fields
    assert p.parse(p.Event, env.data) == p.Event(body)


def test_requests_envelope_and_back() -> None:
    spec = p.ContainerSpec(instance_id=7, node_id=2, name="dm-x-7-web", image="debian:12",
                           gpus=[p.GpuRequest("nvidia", uuid="GPU-1", gids=(44,))])
    env = p.decode(p.request_envelope(p.InstanceEnsure(spec, "running"), "d9").to_json())
    assert (env.type, env.id) == ("instance.ensure", "d9")
    assert env.data["spec"]["gpus"][0]["gids"] == [44]
    assert p.parse(p.InstanceEnsure, env.data) == p.InstanceEnsure(spec, "running")


@pytest.mark.parametrize(("cls", "data", "path", "words"), [
    (p.InstanceEnsure, {"spec": {"instance_id": "7"}, "desired": "running"}, "spec.instance_id", "integer"),
    (p.InstanceEnsure, {"spec": {"instance_id": 7, "node_id": 1, "name": "n", "image": "i"}, "desired": "paused"},
     "desired", "one of"),
    (p.InstanceEnsure, {"desired": "running"}, "spec", "required"),
    (p.PortsApply, {"maps": [{"id": 1, "instance_id": 2, "protocol": "sctp", "host_port": 1, "instance_port": 1}]},
     "maps[0].protocol", "one of"),
    (p.PortsApply, {"maps": [{"id": 1, "instance_id": 2, "protocol": "tcp", "host_port": 0, "instance_port": 1}]},
     "maps[0]", "host_port"),
    (p.InstanceAccess, {"instance_id": 3, "ssh": {"enabled": True}}, "ssh", "keys is required"),
    (p.ImageImport, {"url": "/b/1", "repository": ""}, "", "repository must be a non-empty string"),
    (p.ContainerReply, {"container": {"id": "c", "name": "n", "image": "i", "state": "zombie"}},
     "container.state", "one of"),
    (p.Metrics, {"at": "now"}, "at", "number"),
])
def test_decoding_names_the_bad_field(cls: type, data: dict[str, Any], path: str, words: str) -> None:
    with pytest.raises(p.DecodeError) as info:
        p.parse(cls, data)
    assert info.value.path == path and words in info.value.message


def test_unknown_fields_are_ignored_and_missing_ones_take_their_defaults() -> None:
    got = p.parse(p.ImagePull, {"ref": "busybox:1", "from_a_newer_dmd": {"x": 1}})
    assert got == p.ImagePull("busybox:1", None, "")


def test_an_unknown_event_kind_is_none_not_an_error() -> None:
    assert p.parse_event({"kind": "from.the.future", "x": 1}) is None
    with pytest.raises(p.DecodeError, match="unknown event kind"):
        p.parse(p.Event, {"kind": "from.the.future"})


def _agent_registry() -> set[str]:
    config = AgentConfig(server="http://127.0.0.1:1", node_id=1, credential="dmn_x")
    link, _ = make_link(config, FakeDriver())
    return set(link._handlers.types()) | set(link._builtins.types())


def test_the_agent_handles_exactly_the_requests_of_the_protocol() -> None:
    assert _agent_registry() == set(p.REQUESTS)


def test_dmd_handles_exactly_the_agent_notices_of_the_protocol() -> None:
    from dmd.agents.hub import Hub

    hub = Hub(db=None, heartbeat_s=10)  # type: ignore[arg-type]  # the registry needs no database
    assert hub.incoming.types() == set(p.AGENT_NOTICES)


def _container(i: int) -> p.ContainerInfo:
    return p.ContainerInfo(id=f"{i:064x}", name=f"dm-abcdef-{i}-some-longer-instance-name", image="registry.local/x:1",
                           state="running", instance_id=i, node_id=1, managed=True,
                           labels={"dm.managed": "1", "dm.instance": str(i), "dm.node": "1",
                                   "dm.installation": "abcdef0123", "org.opencontainers.image.title": "x" * 40},
                           created_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), ip_address="172.17.0.2")


def test_a_state_far_over_one_message_travels_in_parts_and_comes_back_whole() -> None:
    state = p.Snapshot(containers=[_container(i) for i in range(6000)],
                       images=[p.ImageInfo(id=f"sha256:{i:064x}", repo_tags=[f"lab/img{i}:v1"], size=i)
                               for i in range(4000)],
                       listening=p.Listening(tcp=[22, 80]))
    whole = len(json.dumps(p.to_data(state)))
    assert whole > 4 * p.MAX_MESSAGE_BYTES  # one hello could never carry it
    parts = snapshot_parts(state)
    assert len(parts) >= 5 and [x.part for x in parts] == list(range(len(parts)))
    for part in parts:
        assert len(p.notice_envelope(part).to_json().encode()) <= p.MAX_MESSAGE_BYTES
    assert merge_parts([p.parse(p.SnapshotPart, json.loads(json.dumps(p.to_data(x)))) for x in parts]) == state


def test_an_empty_state_is_one_part_and_a_runtime_error_is_not_an_empty_inventory() -> None:
    assert [x.part for x in snapshot_parts(p.Snapshot(containers=[], images=[]))] == [0]
    failed = merge_parts(snapshot_parts(p.Snapshot(runtime_error="docker is down")))
    assert failed.runtime_error == "docker is down" and failed.images is None and failed.containers is None
