"""Port maps through dmd: the in-process local node on the real dockerd, forwarding for real."""

from __future__ import annotations

import asyncio
import contextlib
import errno
from typing import Any

import pytest

from agent.ports.manager import PortForwarding
from dmd.core import DM
from tests.databases import every_database  # noqa: F401 (fixture: each test on all three databases)
from tests.instances.conftest import docker, instance, local, wait_for, wait_status  # noqa: F401
from tests.runtime.conftest import docker_test_image  # noqa: F401
from tests.runtime.images import BUSYBOX_REF

IMAGE = BUSYBOX_REF
# A web server that says which container answered; it comes back with the container.
WEB = ["/bin/busybox", "sh", "-c",
       "mkdir -p /www && echo hello-from-$(hostname) > /www/index.html && exec /bin/busybox httpd -f -p 8080 -h /www"]


@pytest.fixture
async def teardown_rules(client):
    """After the test: the local node's kernel rules go (tests must not leave chains behind)."""
    yield
    holder = client.app[DM].local_node
    if holder.workloads is not None:
        await holder.workloads.feature(PortForwarding).teardown()


async def create(client, headers, node_id: int, name: str, **extra: Any) -> dict[str, Any]:
    body = {"name": name, "image": IMAGE, "node_id": node_id, "command": WEB, "ssh": False, **extra}
    r = await client.post("/api/v1/instances", json=body, headers=headers)
    assert r.status == 201, await r.text()
    inst = await r.json()
    return await wait_status(client, headers, inst["id"], "running")


async def http_get(port: int, host: str = "127.0.0.1", timeout: float = 3.0) -> str:
    """One HTTP/1.0 GET; raises ConnectionRefusedError when nothing takes the connection."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    return data.decode(errors="replace")


async def refused(port: int, host: str = "127.0.0.1") -> bool:
    try:
        await http_get(port, host, timeout=2.0)
    except ConnectionRefusedError:
        return True
    except OSError as e:
        return e.errno == errno.ECONNREFUSED
    return False


async def answers(port: int, text: str, host: str = "127.0.0.1", timeout: float = 10) -> str:
    async def check() -> str | None:
        try:
            body = await http_get(port, host)
        except (TimeoutError, OSError):
            return None
        return body if text in body else None

    return await wait_for(check, f"{host}:{port} answering with {text!r}", timeout)  # type: ignore[no-any-return]
