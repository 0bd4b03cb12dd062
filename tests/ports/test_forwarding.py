"""Port forwarding against a real dockerd and real iptables: kernel rules and the asyncio proxy.

Every map forwards a host port to a busybox container; connections are made from the node
itself (127.0.0.1 and its own address) and from another network namespace (a veth pair, so
the packets take the PREROUTING and FORWARD path that other hosts' packets take).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent import protocol as p
from agent.handlers import HandlerError
from agent.ports.kernel import KernelForwarder, bridge_for
from agent.ports.manager import PortForwarding, chain_tag
from tests.ports.conftest import BB, ECHO_PORT, Env, Netns, host_address, ns_connect
from tests.wire import call


async def apply(pf: PortForwarding, data: dict[str, Any]) -> dict[str, Any]:
    return await call(pf.handle_apply, p.PortsApply, data)

SYNPROBE = Path(__file__).with_name("synprobe.py")


def pmap(map_id: int | str, instance_id: int, host_port: int, *, protocol: str = "tcp",
         instance_port: int = ECHO_PORT) -> dict[str, Any]:
    return {"id": map_id, "instance_id": instance_id, "protocol": protocol, "host_port": host_port,
            "instance_port": instance_port}


class Conn:
    """A TCP connection to an echo container: its greeting, then echoes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, greeting: bytes) -> None:
        self.reader, self.writer, self.greeting = reader, writer, greeting

    async def echo(self, payload: bytes) -> bytes:
        self.writer.write(payload + b"\n")
        await self.writer.drain()
        return (await asyncio.wait_for(self.reader.readline(), 5)).rstrip(b"\n")

    def close(self) -> None:
        self.writer.close()


async def connect(host: str, port: int) -> Conn:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
    greeting = (await asyncio.wait_for(reader.readline(), 5)).rstrip(b"\n")
    return Conn(reader, writer, greeting)


async def talk(host: str, port: int) -> bytes:
    """Connect, echo once, close: the container's greeting (``b"id-NAME"``)."""
    conn = await connect(host, port)
    try:
        assert await conn.echo(b"ping") == b"ping"
        return conn.greeting
    finally:
        conn.close()


async def refused(host: str, port: int) -> bool:
    try:
        conn = await connect(host, port)
    except ConnectionRefusedError:
        return True
    conn.close()
    return False


async def eventually(check: Any, within: float = 2.0) -> float:
    """Poll the coroutine function ``check`` until it returns True; the seconds it took."""
    start = time.monotonic()
    while True:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, TimeoutError):
            async with asyncio.timeout(0.5):  # a SYN to a stopped container's address goes unanswered
                if await check():
                    return time.monotonic() - start
        if time.monotonic() - start > within:
            raise AssertionError(f"{check} was not true within {within} s")
        await asyncio.sleep(0.05)


def udp_roundtrip(host: str, port: int, payload: bytes, *, tries: int = 3) -> bytes | None:
    """Blocking: one datagram out, the answer back (None: no answer)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        for _ in range(tries):
            s.sendto(payload, (host, port))
            with contextlib.suppress(TimeoutError, ConnectionRefusedError):
                return s.recvfrom(65535)[0]
    return None


async def iptables_save() -> str:
    proc = await asyncio.create_subprocess_exec("iptables-save", stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    return out.decode()


@contextlib.asynccontextmanager
async def event_pump(env: Env, pf: PortForwarding) -> AsyncIterator[None]:
    """What the agent does: pass every managed container event to the manager."""

    async def pump() -> None:
        async for ev in env.driver.events():
            if ev.node_id == env.node_id:
                pf.on_container_event(ev.instance_id, ev.action)

    task = asyncio.create_task(pump())
    await asyncio.sleep(0.2)  # subscribed before the test acts
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# --------------------------------------------------------------------------- kernel mode


async def test_kernel_map_reaches_the_container_from_loopback_own_address_and_another_netns(
        env: Env, netns: Netns) -> None:
    c = await env.echo("a")
    port = env.ports.take()
    pf = env.manager("kernel")
    assert await refused("127.0.0.1", port)

    reply = await call(pf.handle_apply, p.PortsApply, {"maps": [pmap(1, c.instance_id or 0, port)]})
    assert reply["mode"] == "kernel" and reply["active"] == [1]
    assert reply["waiting"] == [] and reply["failed"] == []
    assert set(reply["listening"]) == {"tcp", "udp"}

    assert await talk("127.0.0.1", port) == b"id-a"
    assert await talk(await host_address(), port) == b"id-a"
    assert await ns_connect(netns, netns.host_ip, port) == "id-a|ping|"

    # 127.0.0.1 works through route_localnet on the container's bridge, which is guarded.
    assert c.ip_address is not None
    bridge = bridge_for(c.ip_address)
    assert bridge is not None
    with open(f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet") as fh:
        assert fh.read().strip() == "1"
    rules = await iptables_save()
    guard = [line for line in rules.splitlines() if line.startswith(f"-A {env.tag}-IN ")]
    assert len(guard) == 1 and f"-i {bridge} " in guard[0] and guard[0].endswith("-j DROP"), guard
    assert "! -s 127.0.0.0/8 -d 127.0.0.0/8" in guard[0] and "! --ctstate RELATED,ESTABLISHED,DNAT" in guard[0]
    assert pf.port_facts() == {"pools": {"tcp": [[env.ports.first, env.ports.last]],
                                    "udp": [[env.ports.first, env.ports.last]]}, "mode": "kernel"}

    reply = await call(pf.handle_apply, p.PortsApply, {"maps": []})
    assert reply["active"] == []
    assert await refused("127.0.0.1", port)
    assert await refused(await host_address(), port)
    assert await ns_connect(netns, netns.host_ip, port) == "refused"


async def test_kernel_removed_map_refuses_at_once_and_others_stay(env: Env) -> None:
    c = await env.echo("a")
    keep, drop = env.ports.take(), env.ports.take()
    pf = env.manager("kernel")
    inst = c.instance_id or 0
    reply = await call(pf.handle_apply, p.PortsApply, {"maps": [pmap(1, inst, keep), pmap(2, inst, drop)]})
    assert sorted(reply["active"]) == [1, 2]
    open_conn = await connect("127.0.0.1", drop)
    assert await open_conn.echo(b"before") == b"before"

    reply = await call(pf.handle_apply, p.PortsApply, {"maps": [pmap(1, inst, keep)]})
    assert reply["active"] == [1]
    assert await refused("127.0.0.1", drop)  # at once: no waiting, no retry
    assert await refused(await host_address(), drop)
    assert await talk("127.0.0.1", keep) == b"id-a"
    assert await open_conn.echo(b"after") == b"after"  # what was connected stays connected
    open_conn.close()


async def test_kernel_rules_removed_behind_the_agents_back_come_back(env: Env) -> None:
    c = await env.echo("a")
    port = env.ports.take()
    pf = env.manager("kernel")
    assert (await apply(pf, {"maps": [pmap(1, c.instance_id or 0, port)]}))["active"] == [1]
    assert await pf.restore_if_lost() is False  # nothing lost: nothing done
    await KernelForwarder(chain_tag(c.node_id or 0, c.labels.get("dm.installation"))).teardown()  # a "reload"
    assert await refused("127.0.0.1", port)
    assert await pf.restore_if_lost() is True
    assert await talk("127.0.0.1", port) == b"id-a"
    # Only a hook removed (the chains stay): found, and put back too.
    hook = ["-t", "nat", "-D", "OUTPUT", "-m", "addrtype", "--dst-type", "LOCAL", "-j", f"{env.tag}-DNAT"]
    assert (await asyncio.to_thread(subprocess.run, ["iptables", *hook], capture_output=True)).returncode == 0
    assert await refused("127.0.0.1", port)
    assert await pf.restore_if_lost() is True
    assert await talk("127.0.0.1", port) == b"id-a"
    assert await pf.restore_if_lost() is False


async def test_kernel_hooks_are_idempotent_and_teardown_removes_everything(env: Env) -> None:
    c = await env.echo("a")
    port = env.ports.take()
    pf = env.manager("kernel")
    for _ in range(3):
        assert (await apply(pf, {"maps": [pmap(1, c.instance_id or 0, port)]}))["active"] == [1]
    rules = await iptables_save()
    tag = env.tag
    for hook in (f"-A PREROUTING -m addrtype --dst-type LOCAL -j {tag}-DNAT",
                 f"-A OUTPUT -m addrtype --dst-type LOCAL -j {tag}-DNAT",
                 f"-A POSTROUTING -j {tag}-SNAT",
                 f"-A DOCKER-USER -j {tag}-FWD",
                 f"-A INPUT -j {tag}-IN"):
        assert rules.count(hook) == 1, hook
    assert len(f"{tag}-DNAT") <= 28
    dnat = [line for line in rules.splitlines() if line.startswith(f"-A {tag}-DNAT")]
    assert dnat == [f"-A {tag}-DNAT -p tcp -m tcp --dport {port} -j DNAT --to-destination {c.ip_address}:{ECHO_PORT}"]
    # Our hook comes before Docker's own jump in PREROUTING.
    prerouting = [line for line in rules.splitlines() if line.startswith("-A PREROUTING")]
    ours = prerouting.index(f"-A PREROUTING -m addrtype --dst-type LOCAL -j {tag}-DNAT")
    assert ours < prerouting.index("-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER")

    await pf.teardown()
    assert tag not in await iptables_save()
    assert not await KernelForwarder(tag).chains_exist()
    assert await refused("127.0.0.1", port)


async def test_kernel_container_stop_and_start_are_followed(env: Env) -> None:
    a = await env.echo("a")
    port = env.ports.take()
    pf = env.manager("kernel")
    inst = a.instance_id or 0
    maps = {"maps": [pmap(1, inst, port)]}
    async with event_pump(env, pf):
        assert (await call(pf.handle_apply, p.PortsApply, maps))["active"] == [1]
        assert await talk("127.0.0.1", port) == b"id-a"

        await env.driver.stop(a.id, timeout=1)
        await eventually(lambda: refused("127.0.0.1", port))
        await pf.settle()
        # Another container may now hold a's old address: the port must not lead there.
        b = await env.echo("b")
        await env.driver.start(a.id)
        took = await eventually(lambda: _greets("127.0.0.1", port, b"id-a"))
        assert took < 1.5, took
        assert await talk(await host_address(), port) == b"id-a"
        await pf.settle()
    after = await env.driver.inspect(a.id)
    assert after is not None and after.ip_address and b.ip_address and after.ip_address != b.ip_address
    reply = await call(pf.handle_apply, p.PortsApply, maps)
    assert reply["active"] == [1]


async def _greets(host: str, port: int, greeting: bytes) -> bool:
    return await talk(host, port) == greeting


async def test_established_connection_survives_an_agent_restart(env: Env) -> None:
    c = await env.echo("a")
    port = env.ports.take()
    maps = {"maps": [pmap(1, c.instance_id or 0, port)]}
    first = env.manager("kernel")
    assert (await call(first.handle_apply, p.PortsApply, maps))["active"] == [1]
    local = await connect("127.0.0.1", port)
    remote = await connect(await host_address(), port)
    for conn in (local, remote):
        assert await conn.echo(b"one") == b"one"

    await first.close()  # the agent stops: its rules stay
    for conn in (local, remote):
        assert await conn.echo(b"two") == b"two"
    assert await talk("127.0.0.1", port) == b"id-a"

    second = env.manager("kernel")  # the agent is back and dmd applies the same set
    assert (await call(second.handle_apply, p.PortsApply, maps))["active"] == [1]
    for conn in (local, remote):
        assert await conn.echo(b"three") == b"three"
    assert await talk("127.0.0.1", port) == b"id-a"
    local.close()
    remote.close()


async def test_kernel_udp(env: Env) -> None:
    u = await env.udp_echo()
    port = env.ports.take()
    pf = env.manager("kernel")
    reply = await call(pf.handle_apply, p.PortsApply, {"maps": [pmap(1, u.instance_id or 0, port, protocol="udp")]})
    assert reply["active"] == [1]
    assert await asyncio.to_thread(udp_roundtrip, await host_address(), port, b"k1") == b"echo:k1"
    assert await asyncio.to_thread(udp_roundtrip, "127.0.0.1", port, b"k2") == b"echo:k2"


# --------------------------------------------------------------------------- proxy mode


async def test_proxy_mode_tcp_and_udp(env: Env) -> None:
    t = await env.echo("t")
    u = await env.udp_echo()
    tcp_port, udp_port = env.ports.take(), env.ports.take()
    pf = env.manager("proxy")
    maps = {"maps": [pmap(1, t.instance_id or 0, tcp_port),
                     pmap(2, u.instance_id or 0, udp_port, protocol="udp")]}
    reply = await call(pf.handle_apply, p.PortsApply, maps)
    assert reply["mode"] == "proxy" and sorted(reply["active"]) == [1, 2], reply
    assert pf.port_facts()["mode"] == "proxy"
    assert await talk("127.0.0.1", tcp_port) == b"id-t"
    assert await talk(await host_address(), tcp_port) == b"id-t"
    assert await asyncio.to_thread(udp_roundtrip, "127.0.0.1", udp_port, b"p1") == b"echo:p1"
    assert await asyncio.to_thread(udp_roundtrip, await host_address(), udp_port, b"p2") == b"echo:p2"
    assert env.tag not in await iptables_save()  # the proxy installs no rules

    # Our own listeners are neither "busy" nor reported as host programs' ports.
    reply = await call(pf.handle_apply, p.PortsApply, maps)
    assert sorted(reply["active"]) == [1, 2] and reply["failed"] == []
    assert tcp_port not in reply["listening"]["tcp"] and udp_port not in reply["listening"]["udp"]

    open_conn = await connect("127.0.0.1", tcp_port)
    reply = await call(pf.handle_apply, p.PortsApply, {"maps": [maps["maps"][1]]})
    assert reply["active"] == [2]
    assert await refused("127.0.0.1", tcp_port)  # the listener is closed at once
    assert await open_conn.echo(b"still") == b"still"
    open_conn.close()
    assert await asyncio.to_thread(udp_roundtrip, "127.0.0.1", udp_port, b"p3") == b"echo:p3"

    await pf.close()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", udp_port))  # released


async def test_proxy_follows_a_container_restart(env: Env) -> None:
    a = await env.echo("a")
    port = env.ports.take()
    pf = env.manager("proxy")
    async with event_pump(env, pf):
        assert (await apply(pf, {"maps": [pmap(1, a.instance_id or 0, port)]}))["active"] == [1]
        assert await talk("127.0.0.1", port) == b"id-a"
        await env.driver.stop(a.id, timeout=1)
        await eventually(lambda: refused("127.0.0.1", port))
        await env.echo("b")
        await env.driver.start(a.id)
        await eventually(lambda: _greets("127.0.0.1", port, b"id-a"))


# --------------------------------------------------------------------------- what fails, what waits


@pytest.mark.parametrize("mode", ["kernel", "proxy"])
async def test_port_busy_when_a_host_program_listens(env: Env, mode: str) -> None:
    c = await env.echo("a")
    u = await env.udp_echo()
    tcp_port, udp_port = env.ports.take(), env.ports.take()

    async def other(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"id-host-program\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(other, "0.0.0.0", tcp_port)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", udp_port))
    try:
        pf = env.manager(mode)
        listening = await pf.listening()
        assert tcp_port in listening["tcp"] and udp_port in listening["udp"]
        reply = await call(pf.handle_apply, p.PortsApply, {"maps": [pmap(1, c.instance_id or 0, tcp_port),
                                                pmap(2, u.instance_id or 0, udp_port, protocol="udp")]})
        assert reply["active"] == []
        assert sorted((f["id"], f["code"]) for f in reply["failed"]) == [(1, "port_busy"), (2, "port_busy")]
        assert tcp_port in reply["listening"]["tcp"] and udp_port in reply["listening"]["udp"]
        conn = await connect("127.0.0.1", tcp_port)
        assert conn.greeting == b"id-host-program"  # the host program keeps its port
        conn.close()
    finally:
        server.close()
        await server.wait_closed()
        udp.close()


async def test_waiting_out_of_pool_duplicates_and_other_installations(env: Env) -> None:
    created = await env.echo("x")  # running, for the duplicate
    stopped = await env.container(["/bin/busybox", "nc", "-ll", "-p", str(ECHO_PORT), "-e", "/bin/busybox", "sh",
                                   "-c", "echo id-late; exec /bin/busybox cat"], start=False)
    foreign = await env.container(["/bin/busybox", "sleep", "3600"], installation="another0")
    p1, p2, p3, p4 = (env.ports.take() for _ in range(4))
    pf = env.manager("kernel")
    maps = {"maps": [
        pmap(1, stopped.instance_id or 0, p1),
        pmap(2, 999_999, p2),  # no container at all
        pmap(3, created.instance_id or 0, env.ports.first - 1),  # outside the pools
        pmap(4, created.instance_id or 0, p3),
        pmap(5, created.instance_id or 0, p3),  # the same host port again
        pmap(6, foreign.instance_id or 0, p4),  # another installation's container on this Engine
        pmap("s-7", created.instance_id or 0, p4, protocol="udp"),
    ]}
    async with event_pump(env, pf):
        reply = await call(pf.handle_apply, p.PortsApply, maps)
        assert sorted(reply["waiting"], key=str) == [1, 2, 6]
        assert reply["active"] == [4, "s-7"]
        assert sorted((f["id"], f["code"]) for f in reply["failed"]) == [(3, "out_of_pool"), (5, "duplicate_port")]
        assert all(isinstance(f["message"], str) and f["message"] for f in reply["failed"])
        assert await refused("127.0.0.1", p1)  # waiting: nothing installed, the port refuses
        assert await talk("127.0.0.1", p3) == b"id-x"

        await env.driver.start(stopped.id)  # the event makes the waiting map active
        await eventually(lambda: _greets("127.0.0.1", p1, b"id-late"))
    reply = await call(pf.handle_apply, p.PortsApply, maps)
    assert sorted(reply["waiting"], key=str) == [2, 6]


@pytest.mark.parametrize("bad", [
    None,
    {},
    {"maps": "all"},
    {"maps": [5]},
    {"maps": [{"instance_id": 1, "protocol": "tcp", "host_port": 20000, "instance_port": 80}]},
    {"maps": [{"id": 1, "instance_id": 1, "protocol": "sctp", "host_port": 20000, "instance_port": 80}]},
    {"maps": [{"id": 1, "instance_id": 1, "protocol": "tcp", "host_port": 0, "instance_port": 80}]},
    {"maps": [{"id": 1, "instance_id": 1, "protocol": "tcp", "host_port": 20000, "instance_port": 70000}]},
    {"maps": [{"id": 1, "instance_id": "1", "protocol": "tcp", "host_port": 20000, "instance_port": 80}]},
    {"maps": [{"id": 1, "instance_id": 1, "protocol": "tcp", "host_port": True, "instance_port": 80}]},
    {"maps": [{"id": 1, "instance_id": 1, "protocol": "tcp", "host_port": 20000, "instance_port": 80},
              {"id": 1, "instance_id": 2, "protocol": "tcp", "host_port": 20001, "instance_port": 80}]},
])
async def test_invalid_maps_change_nothing(env: Env, bad: Any) -> None:
    c = await env.echo("a")
    port = env.ports.take()
    pf = env.manager("kernel")
    good = {"maps": [pmap(1, c.instance_id or 0, port)]}
    reply = await call(pf.handle_apply, p.PortsApply, good)
    assert reply["active"] == [1], reply
    with pytest.raises(HandlerError) as info:
        await call(pf.handle_apply, p.PortsApply, bad)
    assert info.value.code == "invalid" and "\n" not in info.value.message
    assert await talk("127.0.0.1", port) == b"id-a"  # the last good set still forwards


# --------------------------------------------------------------------------- containers as clients


async def test_another_container_reaches_a_map_through_the_node_address(env: Env) -> None:
    server = await env.echo("srv")
    client = await env.container([BB, "sleep", "3600"])
    port = env.ports.take()
    pf = env.manager("kernel")
    assert (await apply(pf, {"maps": [pmap(1, server.instance_id or 0, port)]}))["active"] == [1]
    line = f"echo hi | {BB} timeout 5 {BB} nc {await host_address()} {port}"
    result = await env.driver.exec(client.id, [BB, "sh", "-c", line])
    assert result.stdout == b"id-srv\nhi\n", result


async def test_containers_cannot_reach_the_hosts_loopback_services(env: Env) -> None:
    """route_localnet=1 (needed for 127.0.0.1 -> container) would let a container with CAP_NET_RAW
    reach services bound to the host's 127.0.0.1 (CVE-2020-8558); our INPUT guard drops that."""
    server = await env.echo("srv")
    attacker = await env.container([BB, "sleep", "3600"])
    port = env.ports.take()
    pf = env.manager("kernel")
    maps = {"maps": [pmap(1, server.instance_id or 0, port)]}
    assert (await call(pf.handle_apply, p.PortsApply, maps))["active"] == [1]
    raw = await (await env.docker.containers.get(attacker.id)).show()
    pid, mac, ip = raw["State"]["Pid"], raw["NetworkSettings"]["MacAddress"], raw["NetworkSettings"]["IPAddress"]
    bridge = bridge_for(ip)
    assert bridge is not None
    with open(f"/sys/class/net/{bridge}/address") as fh:
        gateway_mac = fh.read().strip()
    gateway_ip = raw["NetworkSettings"]["Gateway"]

    async def probe(dst: str, dst_port: int) -> str:
        proc = await asyncio.create_subprocess_exec(
            "nsenter", f"--net=/proc/{pid}/ns/net", sys.executable, str(SYNPROBE), mac, gateway_mac, ip, dst,
            str(dst_port), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0, err.decode()
        return out.decode().strip()

    async def iptables(*args: str) -> None:
        proc = await asyncio.create_subprocess_exec("iptables", "-w", *args, stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()

    # Judge our guard alone: other agents on this host may have guards of their own in INPUT, so
    # the probe's packets go first through a chain of the test's: our guard, then an ACCEPT. The
    # control puts an ACCEPT before our guard (which stays, so route_localnet stays on).
    judge = f"{env.tag}-T"
    with socket.socket() as loopback_only, socket.socket() as everywhere:
        loopback_only.bind(("127.0.0.1", 0))
        loopback_only.listen()
        everywhere.bind(("0.0.0.0", 0))
        everywhere.listen()
        lo_port = loopback_only.getsockname()[1]
        accept = ["-i", bridge, "-p", "tcp", "--dport", str(lo_port), "-j", "ACCEPT"]
        await iptables("-N", judge)
        try:
            await iptables("-A", judge, "-j", f"{env.tag}-IN")
            await iptables("-A", judge, *accept)
            await iptables("-I", "INPUT", "1", "-j", judge)
            assert await probe(gateway_ip, everywhere.getsockname()[1]) == "synack"  # the probe works
            assert await probe("127.0.0.1", lo_port) == "nothing"
            # Past the guard the probe does get through: the check above is a real one.
            await iptables("-I", judge, "1", *accept)
            assert await probe("127.0.0.1", lo_port) == "synack"
            await iptables("-D", judge, "1")
            assert (await call(pf.handle_apply, p.PortsApply, maps))["active"] == [1]  # a re-apply keeps the guard
            assert await probe("127.0.0.1", lo_port) == "nothing"
        finally:
            for args in (("-D", "INPUT", "-j", judge), ("-F", judge), ("-X", judge)):
                with contextlib.suppress(AssertionError):
                    await iptables(*args)
