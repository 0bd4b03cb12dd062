"""The SSH gateway with the real OpenSSH client: a dmd whose gateway listens on 127.0.0.1:<any>,
users with SSH keys registered through the API, and `ssh` run as its own process against it
with StrictHostKeyChecking=yes and the known_hosts line the API gives (never "accept anything")."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from dmd.core import DM
from dmd.db.schema import images

# The end-to-end tests run instances of the test openssh image on the real local node.
from tests.access.conftest import KeyPair, keys, make_key, test_images  # noqa: F401 (fixtures)
from tests.conftest import AppFactory, add_user, make_token
from tests.instances.conftest import local  # noqa: F401 (fixture)
from tests.nodes.helpers import FakeAgent
from tests.runtime.conftest import docker_test_image  # noqa: F401 (fixture)

CLIENT_OPTIONS = [
    "-F", "/dev/null",  # the machine's ssh_config must not change what is tested
    "-o", "BatchMode=yes",
    "-o", "StrictHostKeyChecking=yes",
    "-o", "IdentitiesOnly=yes",
    "-o", "ConnectTimeout=10",
    "-o", "ServerAliveInterval=5",
]


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def refused(self) -> bool:
        return self.returncode == 255 and "Permission denied" in self.stderr


@dataclass
class Gateway:
    """A dmd with its gateway on, three users (alice, bob: users; boss: admin) with a key each."""

    client: TestClient  # type: ignore[type-arg]
    port: int
    known_hosts: Path
    keys: dict[str, KeyPair]
    tokens: dict[str, dict[str, str]] = field(default_factory=dict)
    key_ids: dict[str, int] = field(default_factory=dict)
    user_ids: dict[str, int] = field(default_factory=dict)
    agents: list[FakeAgent] = field(default_factory=list)

    def argv(self, user: str, key: str, *extra: str) -> list[str]:
        return ["ssh", *CLIENT_OPTIONS, "-o", f"UserKnownHostsFile={self.known_hosts}", "-i",
                str(self.keys[key].path), "-p", str(self.port), *extra, f"{user}@127.0.0.1"]

    async def ssh(self, user: str, key: str, *extra: str, command: list[str] | None = None,
                  timeout: float = 30) -> Run:
        return await run([*self.argv(user, key, *extra), *(command or [])], timeout=timeout)

    async def api(self, method: str, path: str, who: str, body: Any = None, status: int = 200) -> Any:
        r = await self.client.request(method, f"/api/v1{path}", json=body, headers=self.tokens[who])
        assert r.status == status, (method, path, r.status, await r.text())
        return await r.json() if r.status != 204 else None


async def run(argv: list[str], *, timeout: float = 30, stdin: bytes | None = None) -> Run:
    """A real client process (its own process: the event loop is never blocked)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return Run(proc.returncode if proc.returncode is not None else -1, out.decode(errors="replace"),
               err.decode(errors="replace"))


@pytest.fixture(scope="session")
def gw_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, KeyPair]:
    directory = tmp_path_factory.mktemp("gw-keys")
    return {name: make_key(directory, name) for name in ("alice", "bob", "boss", "spare")}


async def make_gateway(make_client: AppFactory, tmp_path: Path, key_pairs: dict[str, KeyPair],
                       **config: Any) -> Gateway:
    client = await make_client(ssh_listen="127.0.0.1:0", **config)
    addr = client.app[DM].gateway.address
    assert addr is not None and addr.port > 0
    gw = Gateway(client, addr.port, tmp_path / "known_hosts", key_pairs)
    for name, role in (("alice", "user"), ("bob", "user"), ("boss", "admin")):
        email = f"{name}@example.org"
        gw.user_ids[name] = await add_user(client, email, role=role, username=name)
        gw.tokens[name] = await make_token(client, email)
        made = await gw.api("POST", "/ssh-keys", name, {"name": name, "public_key": key_pairs[name].public}, 201)
        gw.key_ids[name] = int(made["id"])
    # The client trusts exactly what the API says the gateway's key is.
    shown = await gw.api("GET", "/ssh/gateway", "alice")
    gw.known_hosts.write_text(shown["known_hosts"] + "\n")
    return gw


@pytest.fixture
async def gateway(make_client: AppFactory, tmp_path: Path, gw_keys: dict[str, KeyPair]) -> Any:
    gw = await make_gateway(make_client, tmp_path, gw_keys)
    yield gw
    for agent in gw.agents:
        await agent.close()


async def scripted_node(gw: Gateway) -> int:
    """A node of boss's (admin) provided for everyone, online through a scripted agent, with a
    public image: instances can be recorded on it (the agent answers no instance request, so
    none of them runs)."""
    made = await gw.api("POST", "/nodes", "boss", {"name": f"n-{secrets.token_hex(3)}"}, 201)
    await gw.api("POST", f"/nodes/{made['id']}/public", "boss", {"public": True})
    r = await gw.client.post("/api/v1/nodes/join", json={"token": made["join_token"], "hostname": "gw"})
    assert r.status == 200, await r.text()
    joined = await r.json()
    agent = FakeAgent(str(gw.client.make_url("")).rstrip("/"), joined["credential"], joined["node_id"])
    gw.agents.append(agent)
    await agent.connect()
    async with gw.client.app[DM].db.begin() as conn:
        await conn.execute(images.insert().values(
            node_id=made["id"], ref="gw/busybox:latest", image_id=f"sha256:{secrets.token_hex(32)}", size=1,
            owner_id=gw.user_ids["boss"], public=True, created_at=sa.func.now(), updated_at=sa.func.now()))
    return int(made["id"])


async def add_instance(gw: Gateway, who: str, node_id: int, name: str) -> int:
    made = await gw.api("POST", "/instances", who, {"name": name, "image": "gw/busybox:latest",
                                                    "node_id": node_id}, 201)
    return int(made["id"])


async def interactive(cfg: Path, host: str) -> int:
    """`ssh -tt host`: wait for the prompt, type a line, see its result (not its echo), exit 4."""
    proc = await asyncio.create_subprocess_exec("ssh", "-F", str(cfg), "-tt", host, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None
    seen = b""

    async def until(marker: bytes) -> None:
        nonlocal seen
        async with asyncio.timeout(30):
            while marker not in seen:
                chunk = await proc.stdout.read(4096)  # type: ignore[union-attr]
                assert chunk, f"the session ended before {marker!r}: {seen!r}"
                seen += chunk
        seen = seen[seen.index(marker) + len(marker):]

    try:
        await until(b"# ")
        proc.stdin.write(b"echo dm-$((6*7))\n")
        await until(b"dm-42")
        proc.stdin.write(b"exit 4\n")
        return await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def through_tunnel(cfg: Path, host: str, remote_port: int) -> str:
    """`ssh -F cfg -N -L <free>:127.0.0.1:remote_port host`, then GET / through it: the page's text."""
    import aiohttp

    from tests.e2e.procs import free_port
    from tests.waiting import wait_for

    port = free_port()
    tunnel = await asyncio.create_subprocess_exec(
        "ssh", "-F", str(cfg), "-N", "-L", f"{port}:127.0.0.1:{remote_port}", host,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL)
    try:
        async def fetched() -> str | None:
            try:
                async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/") as resp:
                    return await resp.text()
            except aiohttp.ClientError:
                return None

        return await wait_for(fetched, "the page through the tunnel", 30)
    finally:
        tunnel.terminate()
        await tunnel.wait()
