"""The agent's port forwarding: dmd's ``ports.apply`` (the node's full set of port maps) made real.

dmd owns the ledger of host ports; the agent forwards each map's host_port to its instance's
container (container address : instance_port) itself, without Docker publishing. The set is
declarative: every apply replaces the previous one, and the agent re-applies it on its own when a
managed container starts or stops (its address changes, or it stops answering). A map whose
container is not running is "waiting": nothing is installed for it, so its port refuses.

Forwarding is done by kernel rules (iptables DNAT, see ``kernel.py``), which survive an agent
restart with their established connections, or, where those cannot be used, by an asyncio proxy
(``proxy.py``). Config ``port_forwarding``: "auto" (kernel when available, else proxy), "kernel",
"proxy"; the choice is made once per PortForwarding (on the first apply, or ``prepare()``).

Reply failure codes: ``out_of_pool`` (host port outside the node's pools), ``port_busy`` (a host
program listens on it), ``duplicate_port`` (an earlier map in the set has that protocol and host
port), ``no_address`` (the container runs without an address of its own, e.g. host networking),
``kernel_unavailable`` (mode "kernel" configured but iptables cannot be used), ``forward_failed``.

Public API (a feature of the agent, see :mod:`agent.features`)::

    ports = PortForwarding(driver, lambda: link.config, lambda: link.installation_id)
    ports.register(registry)                        # handles p.PortsApply
    reply = await ports.handle_apply(p.PortsApply([p.p.PortMap(1, 7, "tcp", 20080, 80)]))
        # -> p.PortsReply(mode, active=[ids], waiting=[ids], failed=[p.PortFailure], listening)
    ports.on_container_event(instance_id, action)   # plain call, from the event pump: re-applies
                                                    # (debounced, serialised) for mapped instances
    ports.port_facts()          # {"pools": {"tcp": [[20000, 29999]], "udp": [...]}, "mode": "kernel"|"proxy"}
    await ports.listening()     # {"tcp": [ports], "udp": [ports]}: host programs' ports in the pools
    await ports.prepare()       # optional: choose the mode now (facts() guesses until then)
    await ports.settle()        # wait until a pending re-apply has run (tests)
    task = asyncio.create_task(ports.run())         # re-applies kernel rules a firewall reload removed
    await ports.close()         # agent stops: proxies stop; kernel rules stay (connections survive)
    await ports.teardown()      # node deleted: close() and remove the kernel rules too
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
from collections.abc import Callable
from typing import Any

from agent import protocol as p
from agent.config import AgentConfig
from agent.features import Feature
from agent.handlers import HandlerError, HandlerRegistry
from agent.ports.base import Failures, Forward
from agent.ports.kernel import KernelForwarder
from agent.ports.pools import PROTOCOLS, listening_ports
from agent.ports.proxy import ProxyForwarder
from agent.runtime.driver import RuntimeDriver
from agent.runtime.errors import DriverError
from agent.runtime.ownership import ours_by_instance

__all__ = ["INVALID", "PortForwarding"]

log = logging.getLogger(__name__)

INVALID = "invalid"
DEBOUNCE_S = 0.2
GONE_ACTIONS = ("die", "stop", "kill", "destroy", "oom")
KEEPER_S = 30.0  # how often kernel rules are checked for removal behind the agent's back
APPLY_TIMEOUT_S = 60.0


def chain_tag(node_id: int, installation: str | None) -> str:
    """``DM<node>-<first 6 of the installation id>``: our chains never meet another agent's."""
    inst = re.sub(r"[^A-Za-z0-9]", "", installation or "")[:6] or "none"
    return f"DM{node_id % 10**12}-{inst}"


class PortForwarding(Feature):
    name = "ports"

    def __init__(self, driver: RuntimeDriver, config_getter: Callable[[], AgentConfig],
                 installation_getter: Callable[[], str | None] = lambda: None, *, proc_root: str = "/") -> None:
        self.driver = driver
        self._config = config_getter
        self._installation = installation_getter
        self._proc_root = proc_root
        self._desired: list[p.PortMap] | None = None  # None: dmd has sent nothing yet
        self._lock = asyncio.Lock()
        self._mode: str | None = None
        self._guess: str | None = None
        self._unavailable = ""  # why kernel mode cannot be used, when it was asked for
        self._kernel: KernelForwarder | None = None
        self._proxy: ProxyForwarder | None = None
        self._dirty = False
        self._reapply: asyncio.Task[None] | None = None
        self._closed = False
        self._installed = False  # the last apply put kernel rules in place
        self._urgent = False  # a container went: re-apply without waiting

    # --- the mode ------------------------------------------------------------------------
    def _tag(self) -> str:
        return chain_tag(self._config().node_id, self._installation())

    async def prepare(self) -> str:
        """Choose kernel or proxy forwarding (once); returns the mode."""
        if self._mode is not None:
            return self._mode
        wanted = self._config().port_forwarding
        ok, why = (False, "") if wanted == "proxy" else await KernelForwarder.available()
        if wanted == "kernel" or (wanted == "auto" and ok):
            self._mode = "kernel"
            self._unavailable = "" if ok else why
            self._kernel = KernelForwarder(self._tag(), proc_root=self._proc_root)
        else:
            self._mode = "proxy"
            self._proxy = ProxyForwarder()
            if wanted == "proxy" and (await KernelForwarder.available())[0]:
                # Kernel rules left by an earlier run in kernel mode would catch the traffic first.
                await KernelForwarder(self._tag(), proc_root=self._proc_root).teardown()
        return self._mode

    def _guess_mode(self) -> str:
        """facts() before the first apply: root and iptables on PATH (prepare() asks iptables itself)."""
        wanted = self._config().port_forwarding
        if wanted in ("kernel", "proxy"):
            return wanted
        if self._guess is None:
            self._guess = "kernel" if os.geteuid() == 0 and shutil.which("iptables") else "proxy"
        return self._guess

    # --- what the agent reports ----------------------------------------------------------
    def port_facts(self) -> dict[str, Any]:
        return {"pools": self._config().pools.to_dict(), "mode": self._mode or self._guess_mode()}

    def facts(self) -> dict[str, Any]:
        return {"ports": self.port_facts()}

    async def report(self) -> dict[str, Any]:
        return {"listening": await self.listening()}

    def _own_ports(self) -> dict[str, set[int]]:
        return self._proxy.held() if self._proxy is not None else {proto: set() for proto in PROTOCOLS}

    async def listening(self) -> dict[str, list[int]]:
        """Host ports in the pools that host programs (not our own proxy) listen on."""
        found = await asyncio.to_thread(listening_ports, self._config().pools, self._proc_root)
        own = self._own_ports()
        return {proto: [p for p in ports if p not in own[proto]] for proto, ports in found.items()}

    # --- apply ---------------------------------------------------------------------------
    def register(self, registry: HandlerRegistry) -> None:
        registry.register(p.PortsApply, self.handle_apply, timeout_s=APPLY_TIMEOUT_S)

    async def handle_apply(self, req: p.PortsApply) -> p.PortsReply:
        maps = req.maps
        self._desired = maps
        async with self._lock:
            try:
                return await self._apply_locked(maps)
            except DriverError as e:
                raise HandlerError(e.code, f"cannot list the containers: {e.message}") from None

    async def _apply_locked(self, maps: list[p.PortMap]) -> p.PortsReply:
        mode = await self.prepare()
        pools = self._config().pools
        # The Engine's listing and the host's sockets (read in a thread) at once: both are on the
        # way of every new map.
        containers, busy = await asyncio.gather(
            ours_by_instance(self.driver, self._config().node_id, self._installation()), self.listening())

        active: list[p.PortMap] = []
        waiting: list[int | str] = []
        failed: list[p.PortFailure] = []
        forwards: dict[tuple[str, int], Forward] = {}
        claimed: set[tuple[str, int]] = set()

        def fail(m: p.PortMap, code: str, message: str) -> None:
            failed.append(p.PortFailure(m.id, code, message))

        for m in maps:
            key = (m.protocol, m.host_port)
            if key in claimed:
                fail(m, "duplicate_port", f"another map already uses {m.protocol} port {m.host_port}")
                continue
            claimed.add(key)
            if not pools.contains(m.protocol, m.host_port):
                fail(m, "out_of_pool", f"{m.protocol} port {m.host_port} is outside this node's port pools")
            elif m.host_port in busy[m.protocol]:
                fail(m, "port_busy", f"a program on this host listens on {m.protocol} port {m.host_port}")
            elif (found := containers.get(m.instance_id)) is None or found.state != "running":
                log.debug("port map %s waits: instance %s has %s", m.id, m.instance_id,
                          f"a {found.state} container" if found else "no container here")
                waiting.append(m.id)
            elif not found.ip_address:
                fail(m, "no_address", f"instance {m.instance_id} runs without an address of its own")
            elif mode == "kernel" and self._unavailable:
                fail(m, "kernel_unavailable", f"kernel port forwarding cannot be used: {self._unavailable}")
            else:
                forwards[key] = Forward(m.protocol, m.host_port, found.ip_address, m.instance_port)
                active.append(m)

        reachable = [c.ip_address for c in containers.values() if c.state == "running" and c.ip_address]
        failures = await self._forward(list(forwards.values()), reachable)
        self._installed = len(forwards) > len(failures)  # an empty set leaves no chains at all
        for m in list(active):
            problem = failures.get((m.protocol, m.host_port))
            if problem is not None:
                active.remove(m)
                fail(m, *problem)
        return p.PortsReply(mode=mode, active=[m.id for m in active], waiting=waiting,  # type: ignore[arg-type]
                            failed=failed, listening=p.Listening(busy["tcp"], busy["udp"]))

    async def _forward(self, forwards: list[Forward], reachable: list[str]) -> Failures:
        if self._kernel is not None:
            if self._unavailable:
                return {}
            return await self._kernel.apply(forwards, reachable)
        assert self._proxy is not None
        return await self._proxy.apply(forwards)

    # --- container events ----------------------------------------------------------------
    def on_container_event(self, instance_id: int | None, action: str) -> None:
        """A managed container changed state: re-apply the set soon (debounced; a plain call)."""
        if self._closed or self._desired is None or instance_id is None:
            return
        if all(m.instance_id != instance_id for m in self._desired):
            return
        self._dirty = True
        if action in GONE_ACTIONS:
            # No debounce when a container goes: its address may be handed to the next container
            # that starts, and its maps must not lead there meanwhile.
            self._urgent = True
        if self._reapply is None or self._reapply.done():
            self._reapply = asyncio.get_running_loop().create_task(self._reapply_loop())

    async def _reapply_loop(self) -> None:
        while self._dirty and not self._closed:
            if not self._urgent:
                await asyncio.sleep(DEBOUNCE_S)  # a start comes with several events: apply once
            self._dirty = self._urgent = False
            maps = self._desired
            if maps is None:
                return
            try:
                async with self._lock:
                    await self._apply_locked(maps)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # keep the rules as they are; the next event or apply retries
                log.warning("port forwarding: re-apply failed: %s", e)

    # --- rules lost behind our back ----------------------------------------------------------
    async def restore_if_lost(self) -> bool:
        """Kernel mode: when our chains or their hooks are gone (a firewall reload, `iptables -F`),
        apply the last set again. True when it had to."""
        maps = self._desired
        if self._closed or self._kernel is None or not self._installed or self._unavailable or maps is None:
            return False
        if await self._kernel.intact():
            return False
        log.warning("port forwarding rules were removed behind the agent's back; applying them again")
        async with self._lock:
            await self._apply_locked(maps)
        return True

    async def run_keeper(self, interval_s: float = KEEPER_S) -> None:
        """restore_if_lost every `interval_s` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.restore_if_lost()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the next round tries again
                log.warning("port forwarding: checking the rules failed: %s", e)

    # --- the feature's hooks ------------------------------------------------------------------
    def container_changed(self, instance_id: int | None, action: str) -> None:
        self.on_container_event(instance_id, action)

    async def run(self) -> None:
        await self.run_keeper()

    async def settle(self) -> None:
        """Wait until a pending re-apply has run."""
        while self._reapply is not None and not self._reapply.done():
            await asyncio.shield(self._reapply)

    # --- the end -------------------------------------------------------------------------
    async def close(self, *, node_deleted: bool = False) -> None:
        """The agent stops (see :meth:`stop`); when its node was deleted, :meth:`teardown`."""
        if node_deleted:
            await self.teardown()
        else:
            await self.stop()

    async def stop(self) -> None:
        """The agent stops: proxies stop; kernel rules stay so connections survive a restart."""
        self._closed = True
        if self._reapply is not None:
            self._reapply.cancel()
            await asyncio.gather(self._reapply, return_exceptions=True)
        async with self._lock:
            if self._proxy is not None:
                await self._proxy.close()

    async def teardown(self) -> None:
        """The node is deleted: stop() and remove our kernel rules."""
        await self.stop()
        kernel = self._kernel
        if kernel is None and (await KernelForwarder.available())[0]:
            kernel = KernelForwarder(self._tag(), proc_root=self._proc_root)
        if kernel is not None:
            async with self._lock:
                await kernel.teardown()
