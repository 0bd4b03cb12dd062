"""The single-box node: an agent running inside dmd's own process and event loop.

It is the same AgentLink a remote node runs, dialling dmd over loopback, so there is one
code path for every node. It needs no join step: at each start dmd mints a fresh
credential for it and keeps that only in memory (the database holds the hash).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from pathlib import Path

from agent.config import AgentConfig
from agent.link import AgentLink
from agent.runtime.driver import RuntimeDriver
from agent.workloads import Workloads, make_link, run_link
from dmd.auth.tokens import new_secret
from dmd.config import Config
from dmd.db import Database
from dmd.errors import Conflict
from dmd.models import SYSTEM
from dmd.queries import audit
from dmd.queries import nodes as node_svc

log = logging.getLogger("dmd.local_node")

LOCAL_NODE_HOST_KEY = "local_node_ssh_host_ed25519_key"


class LocalNode:
    """Built with dmd's other parts; start() creates (once) and connects the node, stop() ends it."""

    def __init__(self, db: Database, config: Config) -> None:
        self.db = db
        self.config = config
        self.link: AgentLink | None = None
        self.workloads: Workloads | None = None
        self.task: asyncio.Task[int] | None = None
        self.node_id: int | None = None

    async def start(self, server_url: str, *, docker_host: str | None = None,
                    driver: RuntimeDriver | None = None) -> AgentLink:
        """Create (once) and connect the local node; it is stopped when the app shuts down."""
        node_id, credential = await _ensure_node(self.db)
        cfg = self.config
        config = AgentConfig(server=server_url, node_id=node_id, credential=credential,
                             heartbeat_s=cfg.agent_heartbeat_s,
                             port_pools={"tcp": cfg.local_port_pool, "udp": cfg.local_port_pool},
                             port_forwarding=cfg.local_port_forwarding)
        if docker_host:
            config = config.replace(docker_host=docker_host)
        # The node's SSH host key (for instances the agent serves SSH for) is kept in dmd's data
        # folder: the same key after every restart, so that known_hosts entries stay true.
        host_key = str(Path(cfg.data_dir) / LOCAL_NODE_HOST_KEY)
        link, workloads = make_link(config, driver, ssh_host_key_path=host_key)
        self.link, self.workloads, self.node_id = link, workloads, node_id
        self.task = asyncio.get_running_loop().create_task(run_link(link, workloads))
        return link

    async def stop(self) -> None:
        if self.link is not None:
            await self.link.stop()
        if self.task is not None:
            with contextlib.suppress(Exception):
                await self.task


def loopback_url(host: str, port: int) -> str:
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _ensure_node(db: Database) -> tuple[int, str]:
    credential = new_secret(node_svc.CREDENTIAL_PREFIX)
    async with db.begin() as conn:
        node = await node_svc.local_node(conn)
        if node is None:
            base = node_svc.name_from_hostname(socket.gethostname())
            for name in (base, f"{base}-local", f"local-{new_secret(nbytes=3).lower()}"):
                try:
                    node, _ = await node_svc.create(conn, name=name[:64], owner=None, join_ttl_s=60, local=True)
                    break
                except Conflict:
                    continue
            assert node is not None
            await audit.record(conn, SYSTEM, "node.create", "node", node.id, name=node.name, local=True)
            log.info("created the local node %s (id %d)", node.name, node.id)
        await node_svc.set_credential(conn, node.id, credential)
        await node_svc.update(conn, node.id, join_token_hash=None, join_expires_at=None,
                              status="offline" if node.status == "pending" else node.status)
    return node.id, credential

