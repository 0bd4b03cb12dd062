"""Fast checks without Docker: pool parsing, /proc parsing, map validation, the rule text, and the
asyncio proxy relaying between local sockets (backpressure, half-close, removal)."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from agent import protocol as p
from agent.config import AgentConfig
from agent.handlers import HandlerError
from agent.ports.base import Forward
from agent.ports.kernel import KernelForwarder, bridge_for
from agent.ports.manager import PortForwarding, chain_tag
from agent.ports.pools import PoolError, PortPools, listening_ports, parse_ranges
from agent.ports.proxy import ProxyForwarder
from agent.runtime.fake import FakeDriver
from tests.wire import call

# --------------------------------------------------------------------------- pools


@pytest.mark.parametrize(("text", "ranges"), [
    ("20000-29999", ((20000, 29999),)),
    ("20000-20999,30000-30099", ((20000, 20999), (30000, 30099))),
    (" 30000-30099 , 20000-20999 ", ((20000, 20999), (30000, 30099))),
    ("20000-20010,20005-20020,20021", ((20000, 20021),)),  # overlapping and adjacent ranges merge
    ("443", ((443, 443),)),
    ("1-65535", ((1, 65535),)),
    ("", ()),
])
def test_pool_ranges_parse(text: str, ranges: tuple[tuple[int, int], ...]) -> None:
    assert parse_ranges(text, "pool") == ranges


@pytest.mark.parametrize(("value", "words"), [
    ({"tcp": "0-10"}, "outside 1-65535"),
    ({"tcp": "20000-70000"}, "outside 1-65535"),
    ({"tcp": "29999-20000"}, "ends before it starts"),
    ({"tcp": "20000-"}, "not a port number"),
    ({"tcp": "abc"}, "not a port number"),
    ({"tcp": "20000-20010,,20020"}, "empty range"),
    ({"tcp": "-5"}, "not a port number"),
    ({"tcp": 20000}, "must be a text"),
    ({"sctp": "20000-20010"}, "unknown protocol 'sctp'"),
    (["20000-29999"], "must be an object"),
])
def test_bad_pools_are_one_line(value: Any, words: str) -> None:
    with pytest.raises(PoolError) as info:
        PortPools.parse(value)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_pools_to_dict_and_contains() -> None:
    pools = PortPools.parse({"tcp": "20000-20999,30000-30099", "udp": "40000"})
    assert pools.to_dict() == {"tcp": [[20000, 20999], [30000, 30099]], "udp": [[40000, 40000]]}
    assert pools.contains("tcp", 20000) and pools.contains("tcp", 30099) and not pools.contains("tcp", 21000)
    assert pools.contains("udp", 40000) and not pools.contains("udp", 20000)
    assert PortPools.parse({"tcp": "1-2"}).to_dict() == {"tcp": [[1, 2]], "udp": []}


PROC_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:4E21 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 00000000:4E22 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0100007F:4E23 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
   3: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0
"""
PROC_TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue
   0: 00000000000000000000000000000000:4E24 00000000000000000000000000000000:0000 0A 00000000:00000000
"""
PROC_UDP = """\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  10: 00000000:4E25 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 5 2 0 0
  11: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 6 2 0 0
  12: 0100007F:4E26 0100007F:0035 01 00000000:00000000 00:00000000 00000000     0        0 7 2 0 0
"""


def test_listening_ports_from_proc(tmp_path: Path) -> None:
    net = tmp_path / "proc" / "net"
    net.mkdir(parents=True)
    (net / "tcp").write_text(PROC_TCP)
    (net / "tcp6").write_text(PROC_TCP6)
    (net / "udp").write_text(PROC_UDP)  # no udp6: a host without IPv6
    pools = PortPools.parse({"tcp": "20000-20100", "udp": "20000-20100"})
    # 20003 is a TCP connection and 20006 a connected UDP socket (neither listens); 22 and 68 are
    # outside the pools.
    assert listening_ports(pools, str(tmp_path)) == {"tcp": [20001, 20002, 20004], "udp": [20005]}


async def test_listening_ports_sees_a_real_listener() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        pools = PortPools.parse({"tcp": f"{port}-{port}", "udp": ""})
        assert (await asyncio.to_thread(listening_ports, pools)) == {"tcp": [port], "udp": []}


def _route_line(iface: str, dest: str, gateway: str, flags: int, mask: str) -> str:
    """A /proc/net/route line: the kernel prints addresses as u32s in host byte order."""

    def h(ip: str) -> str:
        return f"{int.from_bytes(ipaddress.IPv4Address(ip).packed, sys.byteorder):08X}"

    return f"{iface}\t{h(dest)}\t{h(gateway)}\t{flags:04X}\t0\t0\t0\t{h(mask)}\t0\t0\t0"


def test_bridge_for_takes_the_longest_direct_route(tmp_path: Path) -> None:
    lines = [
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT",
        _route_line("eth0", "0.0.0.0", "192.0.2.1", 3, "0.0.0.0"),
        _route_line("docker0", "172.17.0.0", "0.0.0.0", 1, "255.255.0.0"),
        _route_line("br-1234abcd", "172.18.0.0", "0.0.0.0", 1, "255.255.0.0"),
        _route_line("br-narrow", "172.18.0.128", "0.0.0.0", 1, "255.255.255.128"),
        _route_line("down0", "172.19.0.0", "0.0.0.0", 0, "255.255.0.0"),
        _route_line("eth0", "192.0.2.0", "0.0.0.0", 1, "255.255.255.0"),
    ]
    (tmp_path / "proc" / "net").mkdir(parents=True)
    (tmp_path / "proc" / "net" / "route").write_text("\n".join(lines) + "\n")
    root = str(tmp_path)
    assert bridge_for("172.17.0.2", root) == "docker0"
    assert bridge_for("172.18.0.5", root) == "br-1234abcd"
    assert bridge_for("172.18.0.200", root) == "br-narrow"
    assert bridge_for("172.19.0.2", root) is None  # that route is not up
    assert bridge_for("8.8.8.8", root) is None  # only the default route (a gateway) reaches it
    assert bridge_for("not-an-ip", root) is None


# --------------------------------------------------------------------------- maps and rules


@pytest.mark.parametrize(("data", "words"), [
    ({"maps": None}, "maps"),
    ({"maps": [{"id": None, "instance_id": 1, "protocol": "tcp", "host_port": 1, "instance_port": 1}]}, "id"),
    ({"maps": [{"id": 1, "instance_id": 0, "protocol": "tcp", "host_port": 1, "instance_port": 1}]}, "instance_id"),
    ({"maps": [{"id": 1, "instance_id": 1, "protocol": "TCP", "host_port": 1, "instance_port": 1}]}, "protocol"),
    ({"maps": [{"id": 1, "instance_id": 1, "protocol": "udp", "host_port": 65536, "instance_port": 1}]},
     "host_port"),
    ({"maps": [{"id": 1, "instance_id": 1, "protocol": "udp", "host_port": 1, "instance_port": 1.5}]},
     "instance_port"),
])
async def test_malformed_maps_are_refused_naming_the_field(data: Any, words: str) -> None:
    config = AgentConfig(server="http://dm:3150", node_id=1, credential=None, port_forwarding="proxy")
    pf = PortForwarding(FakeDriver(), lambda: config, lambda: "inst")
    with pytest.raises(HandlerError) as info:
        await call(pf.handle_apply, p.PortsApply, data)
    assert info.value.code == "invalid" and words in info.value.message
    await pf.close()


async def test_invalid_apply_never_touches_the_runtime() -> None:
    config = AgentConfig(server="http://dm:3150", node_id=1, credential=None, port_forwarding="proxy")
    pf = PortForwarding(FakeDriver(), lambda: config, lambda: "inst")
    with pytest.raises(HandlerError) as info:
        await call(pf.handle_apply, p.PortsApply, {"maps": [{"id": 1}]})
    assert info.value.code == "invalid"
    pf.on_container_event(1, "start")  # nothing applied yet: nothing to re-apply
    await pf.settle()
    assert pf.facts() == {"ports": {"pools": {"tcp": [[20000, 29999]], "udp": [[20000, 29999]]}, "mode": "proxy"}}
    await pf.close()


def test_chain_tags_fit_iptables() -> None:
    assert chain_tag(3, "a1b2c3d4e5") == "DM3-a1b2c3"
    assert chain_tag(7, None) == "DM7-none"
    assert chain_tag(7, "../x y") == "DM7-xy"
    longest = chain_tag(10**15, "f" * 64)
    assert len(f"{longest}-DNAT") <= 28
    KernelForwarder(longest)  # accepted as a tag
    with pytest.raises(ValueError):
        KernelForwarder("DM1; rm -rf /")


def test_rule_text() -> None:
    k = KernelForwarder("DM3-abc123")
    tables = k._tables([Forward("tcp", 20080, "172.17.0.2", 80), Forward("udp", 20081, "172.17.0.2", 53),
                        Forward("tcp", 20082, "172.17.0.2", 80)], ["docker0"], ["172.17.0.10", "172.17.0.9"])
    nat = tables["nat"].splitlines()
    assert nat[:3] == ["*nat", ":DM3-abc123-DNAT - [0:0]", ":DM3-abc123-SNAT - [0:0]"]
    assert "-A DM3-abc123-DNAT -p tcp -m tcp --dport 20080 -j DNAT --to-destination 172.17.0.2:80" in nat
    assert "-A DM3-abc123-DNAT -p udp -m udp --dport 20081 -j DNAT --to-destination 172.17.0.2:53" in nat
    # One masquerade per container port, however many host ports lead there.
    assert sum("--dport 80 -j MASQUERADE" in line for line in nat) == 1
    filt = tables["filter"].splitlines()
    # What our DNAT sent to each running container is accepted, in address order (not text order).
    assert [line for line in filt if line.startswith("-A DM3-abc123-FWD")] == [
        f"-A DM3-abc123-FWD -d 172.17.0.{n}/32 -m conntrack --ctstate DNAT -j ACCEPT" for n in (2, 9, 10)]
    assert any(line.startswith("-A DM3-abc123-IN -i docker0 ") and line.endswith("-j DROP") for line in filt)
    assert tables["nat"].endswith("\nCOMMIT\n") and tables["filter"].endswith("\nCOMMIT\n")


# --------------------------------------------------------------------------- the proxy, locally


async def _echo_server() -> tuple[asyncio.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()  # answer the half-close, then finish
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        port: int = s.getsockname()[1]
        return port


async def test_proxy_relays_a_large_stream_with_half_close() -> None:
    server, target = await _echo_server()
    port = _free_port()
    proxy = ProxyForwarder()
    try:
        assert await proxy.apply([Forward("tcp", port, "127.0.0.1", target)]) == {}
        assert proxy.held() == {"tcp": {port}, "udp": set()}
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        payload = os.urandom(8 * 1024 * 1024)

        async def send() -> None:
            writer.write(payload)
            await writer.drain()
            writer.write_eof()

        sender = asyncio.create_task(send())
        received = await asyncio.wait_for(reader.read(), 30)  # until the echoed EOF
        await sender
        assert received == payload
        writer.close()

        # A removed map: its listener is closed at once.
        assert await proxy.apply([]) == {}
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
    finally:
        await proxy.close()
        server.close()


async def test_proxy_reports_a_taken_port() -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proxy = ProxyForwarder()
        failures = await proxy.apply([Forward("tcp", port, "127.0.0.1", 9)])
        assert failures[("tcp", port)][0] == "port_busy"
        assert proxy.held() == {"tcp": set(), "udp": set()}
        await proxy.close()


async def test_proxy_udp_relay_and_retarget() -> None:
    loop = asyncio.get_running_loop()

    class Echo(asyncio.DatagramProtocol):
        def __init__(self, tag: bytes) -> None:
            self.tag = tag

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: Any) -> None:
            self.transport.sendto(self.tag + data, addr)  # type: ignore[attr-defined]

    ta, _ = await loop.create_datagram_endpoint(lambda: Echo(b"a:"), local_addr=("127.0.0.1", 0))
    tb, _ = await loop.create_datagram_endpoint(lambda: Echo(b"b:"), local_addr=("127.0.0.1", 0))
    port_a, port_b = ta.get_extra_info("sockname")[1], tb.get_extra_info("sockname")[1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("0.0.0.0", 0))
        port = probe.getsockname()[1]
    proxy = ProxyForwarder()
    try:
        assert await proxy.apply([Forward("udp", port, "127.0.0.1", port_a)]) == {}

        def roundtrip(data: bytes) -> bytes:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(2)
                s.sendto(data, ("127.0.0.1", port))
                return s.recvfrom(65535)[0]

        assert await asyncio.to_thread(roundtrip, b"1") == b"a:1"
        assert await proxy.apply([Forward("udp", port, "127.0.0.1", port_b)]) == {}
        assert await asyncio.to_thread(roundtrip, b"2") == b"b:2"
    finally:
        await proxy.close()
        ta.close()
        tb.close()
