"""Kernel port forwarding: iptables DNAT rules in chains of this agent's own.

Every chain name starts with the manager's tag (``DM<node>-<installation>``), so two agents on one
host never touch each other's rules. Each apply replaces the chains' contents atomically with one
``iptables-restore --noflush`` (both tables: one process, the cost of a new map), and makes sure
the hooks into the built-in chains exist the first time (checked with ``-C`` before ``-I``, so
re-applying is idempotent) and again whenever :meth:`KernelForwarder.intact` finds something gone
(the agent's keeper asks every 30 s); an empty set removes chains and hooks. The rules outlive
the agent: established connections survive its restart, and the next apply replaces them with
the same set.

* nat ``<tag>-DNAT``, jumped to from PREROUTING and OUTPUT for local destinations: host_port ->
  container:port (OUTPUT covers connections from the node itself, 127.0.0.1 included).
* nat ``<tag>-SNAT`` from POSTROUTING: connections from 127.0.0.1 leave through the bridge masqueraded
  (with ``route_localnet=1`` on that bridge, or the kernel drops 127/8 sources as martians).
* filter ``<tag>-FWD`` from DOCKER-USER (else FORWARD): Docker's FORWARD drops unpublished ports,
  so connections this agent's DNAT sent to its running containers are accepted here (per
  container, not per port: only our DNAT rules lead to those ports, and the filter table then
  changes only when the containers do, so that a new map costs one table's commit, not two).
* filter ``<tag>-IN`` from INPUT: with route_localnet=1 a container could reach the host's
  127.0.0.1 services (CVE-2020-8558); new packets from the bridge to 127/8 are dropped.

route_localnet is switched on only where it was off, with a marker file in ``state_dir``; it is
switched off again when no DM chain protects that bridge any more and the marker says DM set it.

Public API::

    kernel = KernelForwarder("DM3-a1b2c3")
    ok, why = await KernelForwarder.available()
    failures = await kernel.apply([Forward("tcp", 20080, "172.17.0.2", 80)])   # {} when all is set
    await kernel.teardown()                                                     # hooks and chains gone
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import re
import shutil
import sys
from collections.abc import Sequence

from agent.ports.base import Failures, Forward

__all__ = ["KernelForwarder", "bridge_for"]

log = logging.getLogger(__name__)

IPTABLES_TIMEOUT_S = 30.0
LOCALNET_COMMENT = "dm-localnet"
DEFAULT_STATE_DIR = "/run/dm-ports"
_TAG_RE = re.compile(r"^[A-Za-z0-9-]{1,22}$")  # + the longest suffix "-DNAT" stays within 28
_IFACE_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,15}$")
_RTF_UP = 0x1


class IptablesError(Exception):
    pass


async def _run(args: Sequence[str], stdin: bytes | None = None) -> tuple[int, str]:
    """Run a program (never through a shell); (exit status, stderr or stdout text)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as e:
        return 127, f"{args[0]}: {e.strerror or e}"
    try:
        async with asyncio.timeout(IPTABLES_TIMEOUT_S):
            out, err = await proc.communicate(stdin)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return 124, f"{args[0]} did not finish within {IPTABLES_TIMEOUT_S:g} s"
    text = (err or out).decode(errors="replace").strip()
    return proc.returncode if proc.returncode is not None else 1, text


async def _iptables(table: str, *args: str) -> tuple[int, str]:
    return await _run(["iptables", "-w", "-t", table, *args])


def bridge_for(ip: str, proc_root: str = "/") -> str | None:
    """The interface with a directly connected route to ``ip`` (longest prefix), from
    /proc/net/route: docker0, br-xxxx. None when only a gateway reaches it. Blocking."""
    try:
        target = int(ipaddress.IPv4Address(ip))
    except ValueError:
        return None
    try:
        with open(os.path.join(proc_root, "proc", "net", "route"), encoding="ascii") as fh:
            lines = fh.read().splitlines()[1:]
    except OSError:
        return None
    best: tuple[int, str] | None = None
    for line in lines:
        fields = line.split()
        if len(fields) < 8:
            continue
        try:
            iface = fields[0]
            # The kernel prints these u32s in host byte order.
            dest, gateway, mask = (int.from_bytes(int(fields[i], 16).to_bytes(4, sys.byteorder), "big")
                                   for i in (1, 2, 7))
            flags = int(fields[3], 16)
        except (ValueError, OverflowError):
            continue
        if not flags & _RTF_UP or gateway or not mask or target & mask != dest:
            continue
        prefix = bin(mask).count("1")
        if _IFACE_RE.match(iface) and (best is None or prefix > best[0]):
            best = (prefix, iface)
    return best[1] if best else None


def _localnet_path(bridge: str) -> str:
    return f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet"


def _read_localnet(bridge: str) -> str | None:
    try:
        with open(_localnet_path(bridge), encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return None


def _write_localnet(bridge: str, value: str) -> None:
    with open(_localnet_path(bridge), "w", encoding="ascii") as fh:
        fh.write(value)


class KernelForwarder:
    def __init__(self, tag: str, *, proc_root: str = "/", state_dir: str = DEFAULT_STATE_DIR) -> None:
        if not _TAG_RE.match(tag):
            raise ValueError(f"not a chain tag: {tag!r}")
        self.tag = tag
        self.dnat, self.snat = f"{tag}-DNAT", f"{tag}-SNAT"
        self.fwd, self.inp = f"{tag}-FWD", f"{tag}-IN"
        self.proc_root = proc_root
        self.state_dir = state_dir
        # Whether our chains may be in place: None until this process knows (an earlier run may
        # have left them); False once torn down, so an empty set costs no iptables call.
        self._present: bool | None = None
        self._hooked = False  # the hooks were checked (and put in) since the chains were last found gone
        self._applied: dict[str, str] = {}  # what this process last restored, by table

    @staticmethod
    async def available() -> tuple[bool, str]:
        """Whether kernel forwarding can be used here, and why not."""
        if os.geteuid() != 0:
            return False, "the agent does not run as root"
        for tool in ("iptables", "iptables-restore"):
            if await asyncio.to_thread(shutil.which, tool) is None:
                return False, f"{tool} is not installed"
        rc, text = await _iptables("nat", "-S", "POSTROUTING")
        if rc != 0:
            return False, f"the nat table cannot be read: {text}"
        return True, ""

    # --- rules ---------------------------------------------------------------------------
    def _hooks(self, forward_parent: str) -> list[tuple[str, str, list[str]]]:
        """(table, built-in chain, rule) for each jump into our chains."""
        local = ["-m", "addrtype", "--dst-type", "LOCAL", "-j", self.dnat]
        return [
            ("nat", "PREROUTING", local),
            ("nat", "OUTPUT", local),
            ("nat", "POSTROUTING", ["-j", self.snat]),
            ("filter", forward_parent, ["-j", self.fwd]),
            ("filter", "INPUT", ["-j", self.inp]),
        ]

    def _tables(self, forwards: Sequence[Forward], bridges: Sequence[str],
                reachable: Sequence[str] = ()) -> dict[str, str]:
        """The iptables-restore input per table; declaring a chain flushes it (with --noflush).
        ``reachable``: the addresses of this agent's running containers (besides the targets)."""
        dnat: list[str] = []
        snat: list[str] = []
        for f in sorted(forwards, key=lambda f: (f.protocol, f.host_port)):
            p = f.protocol
            dnat.append(f"-A {self.dnat} -p {p} -m {p} --dport {f.host_port} "
                        f"-j DNAT --to-destination {f.target_ip}:{f.target_port}")
            snat.append(f"-A {self.snat} -s 127.0.0.0/8 -d {f.target_ip}/32 -p {p} -m {p} --dport {f.target_port} "
                        "-j MASQUERADE")
        targets = sorted({*reachable, *(f.target_ip for f in forwards)}, key=ipaddress.ip_address)
        fwd = [f"-A {self.fwd} -d {ip}/32 -m conntrack --ctstate DNAT -j ACCEPT" for ip in targets]
        inp = [f"-A {self.inp} -i {b} -d 127.0.0.0/8 ! -s 127.0.0.0/8 "
               f"-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -m comment --comment {LOCALNET_COMMENT} -j DROP"
               for b in sorted(bridges)]
        # dict.fromkeys: one container port may be reached from several host ports.
        return {
            "nat": "\n".join(["*nat", f":{self.dnat} - [0:0]", f":{self.snat} - [0:0]", *dnat,
                              *dict.fromkeys(snat), "COMMIT", ""]),
            "filter": "\n".join(["*filter", f":{self.fwd} - [0:0]", f":{self.inp} - [0:0]",
                                 *fwd, *inp, "COMMIT", ""]),
        }

    async def _restore(self, text: str) -> None:
        rc, out = await _run(["iptables-restore", "--noflush", "-w"], stdin=text.encode())
        if rc != 0:
            raise IptablesError(f"iptables-restore failed: {out}")

    async def _forward_parent(self) -> str:
        rc, _ = await _iptables("filter", "-S", "DOCKER-USER")
        return "DOCKER-USER" if rc == 0 else "FORWARD"

    async def _ensure_hooks(self) -> None:
        for tbl, chain, rule in self._hooks(await self._forward_parent()):
            rc, _ = await _iptables(tbl, "-C", chain, *rule)
            if rc == 0:
                continue
            rc, out = await _iptables(tbl, "-I", chain, "1", *rule)
            if rc != 0:
                raise IptablesError(f"cannot hook {tbl} {chain}: {out}")

    # --- route_localnet ------------------------------------------------------------------
    def _marker(self, bridge: str) -> str:
        return os.path.join(self.state_dir, f"localnet-{bridge}")

    def _enable_localnet(self, bridge: str) -> None:
        """Blocking. route_localnet=1 on ``bridge``, remembering (marker file) when DM turned it on."""
        if _read_localnet(bridge) != "0":
            return  # on already (ours or another's), or the bridge is gone
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        with open(self._marker(bridge), "w", encoding="ascii") as fh:
            fh.write("1\n")
        _write_localnet(bridge, "1")

    async def _release_localnet(self, keep: set[str]) -> None:
        """Turn route_localnet off again on bridges DM turned it on for, once no DM chain still
        protects them (no `dm-localnet` rule left for that bridge, from any agent on this host)."""
        try:
            names = await asyncio.to_thread(os.listdir, self.state_dir)
        except OSError:
            return
        bridges = [n.removeprefix("localnet-") for n in names if n.startswith("localnet-")]
        bridges = [b for b in bridges if b not in keep and _IFACE_RE.match(b)]
        if not bridges:
            return
        rc, rules = await _iptables("filter", "-S")
        if rc != 0:
            return
        for bridge in bridges:
            if any(LOCALNET_COMMENT in r and f"-i {bridge} " in r for r in rules.splitlines()):
                continue  # another agent on this host still forwards through it

            def release(b: str = bridge) -> None:
                if _read_localnet(b) is not None:
                    _write_localnet(b, "0")
                os.unlink(self._marker(b))

            try:
                await asyncio.to_thread(release)
            except OSError as e:
                log.warning("cannot turn route_localnet off on %s: %s", bridge, e)

    def _bridges(self, forwards: Sequence[Forward]) -> list[str | None]:
        """Blocking. The Linux bridge in front of each target; route_localnet is only ever touched
        on bridges (a macvlan container's "bridge" would be the uplink itself)."""
        found = [bridge_for(f.target_ip, self.proc_root) for f in forwards]
        return [b if b and os.path.isdir(f"/sys/class/net/{b}/bridge") else None for b in found]

    # --- the public calls ----------------------------------------------------------------
    async def apply(self, forwards: Sequence[Forward], reachable: Sequence[str] = ()) -> Failures:
        """Make our chains hold exactly ``forwards``; every forward fails alike if iptables does.
        An empty set removes our chains and hooks altogether (nothing is left behind idle). A
        table whose rules did not change since this process last restored it is not restored
        again (each table's commit costs the kernel some 13 ms)."""
        if not forwards:
            if self._present is not False:
                await self.teardown()
            return {}
        self._present = True
        try:
            bridges = sorted({b for b in await asyncio.to_thread(self._bridges, forwards) if b})
            tables = self._tables(forwards, bridges, reachable)
            changed = [t for t in ("filter", "nat") if not self._hooked or self._applied.get(t) != tables[t]]
            if changed:
                await self._restore("".join(tables[t] for t in changed))
                self._applied.update((t, tables[t]) for t in changed)
            if not self._hooked:
                await self._ensure_hooks()
                self._hooked = True
            # The protective INPUT rule (and its hook) are in before route_localnet is turned on,
            # never after.
            for bridge in bridges:
                try:
                    await asyncio.to_thread(self._enable_localnet, bridge)
                except OSError as e:  # 127.0.0.1 will not reach this bridge; the rest still works
                    log.warning("cannot set route_localnet on %s: %s", bridge, e)
        except IptablesError as e:
            log.warning("kernel port forwarding: %s", e)
            self._applied.clear()  # what is in the kernel is not known: restore all next time
            return {f.key: ("forward_failed", str(e)) for f in forwards}
        await self._release_localnet(set(bridges))
        return {}

    async def teardown(self) -> None:
        """Remove our hooks and chains (the node is deleted, or a test ends)."""
        for tbl, chain, rule in [*self._hooks("DOCKER-USER"), ("filter", "FORWARD", ["-j", self.fwd])]:
            for _ in range(100):  # every copy, should there be several
                rc, _ = await _iptables(tbl, "-D", chain, *rule)
                if rc != 0:
                    break
        for tbl, chain in (("nat", self.dnat), ("nat", self.snat), ("filter", self.fwd), ("filter", self.inp)):
            await _iptables(tbl, "-F", chain)
            await _iptables(tbl, "-X", chain)
        await self._release_localnet(set())
        self._present = False
        self._hooked = False
        self._applied.clear()

    async def intact(self) -> bool:
        """Whether every chain and hook of ours is in place. When one is gone (a firewall reload,
        `iptables -F`), the next apply puts the hooks back too."""
        for tbl, chain in (("nat", self.dnat), ("nat", self.snat), ("filter", self.fwd), ("filter", self.inp)):
            rc, _ = await _iptables(tbl, "-S", chain)
            if rc != 0:
                self._hooked = False
                return False
        for tbl, chain, rule in self._hooks(await self._forward_parent()):
            rc, _ = await _iptables(tbl, "-C", chain, *rule)
            if rc != 0:
                self._hooked = False
                return False
        return True

    async def chains_exist(self) -> bool:
        """Whether any of our chains is there (for tests and diagnostics)."""
        for tbl, chain in (("nat", self.dnat), ("nat", self.snat), ("filter", self.fwd), ("filter", self.inp)):
            rc, _ = await _iptables(tbl, "-S", chain)
            if rc == 0:
                return True
        return False
