"""The world the authorization matrix runs in: one dmd, five callers, and one of each object,
all the owner's: a node online through a scripted agent (shared with one user, who accepted), an image row,
an instance, a port map, an SSH key and an API token.

Each caller has a bearer token for the API and a logged-in cookie session (with its CSRF
token) for the pages. A cell whose request would destroy what later cells need (a delete, a
credential rotation, a cordon) gets a fresh object of the owner's made for it (`fresh`)."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from dmd.core import DM
from dmd.db.schema import images
from tests.conftest import PASSWORD, add_user, make_token
from tests.nodes.helpers import FakeAgent

CALLERS = ("anonymous", "owner", "other", "shared", "admin")
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHQEbZ7ph/DGNFm8urRF1lcZI5qsN/GYOEf/Vn08IOM/ authz"
IMAGE = "authz/busybox:latest"


@dataclass
class Caller:
    name: str
    headers: dict[str, str] = field(default_factory=dict)  # bearer token (API)
    session: aiohttp.ClientSession | None = None  # cookie session (pages)
    csrf: str = ""
    user_id: int | None = None


@dataclass
class World:
    client: TestClient  # type: ignore[type-arg]
    callers: dict[str, Caller] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)
    agents: list[FakeAgent] = field(default_factory=list)
    _bare: aiohttp.ClientSession | None = None

    def bare(self) -> aiohttp.ClientSession:
        """A session that keeps no cookie: API cells are bearer tokens or nothing."""
        if self._bare is None:
            self._bare = aiohttp.ClientSession(base_url=self.base, cookie_jar=aiohttp.DummyCookieJar())
        return self._bare

    @property
    def base(self) -> str:
        return str(self.client.make_url("")).rstrip("/")

    async def api(self, method: str, path: str, body: Any = None, who: str = "owner") -> Any:
        r = await self.client.request(method, f"/api/v1{path}", json=body, headers=self.callers[who].headers)
        assert r.status in (200, 201, 204), (method, path, r.status, await r.text())
        return await r.json() if r.status != 204 else None

    async def node(self, *, online: bool = False) -> int:
        """A node of the owner's, shared with the shared user; online through a scripted agent."""
        made = await self.api("POST", "/nodes", {"name": f"n-{secrets.token_hex(3)}"})
        await self.api("POST", f"/nodes/{made['id']}/shares", {"username": "shared"})
        await self.api("POST", f"/shares/{made['id']}/accept", who="shared")
        if online:
            r = await self.client.post("/api/v1/nodes/join", json={"token": made["join_token"], "hostname": "authz"})
            assert r.status == 200, await r.text()
            joined = await r.json()
            agent = FakeAgent(self.base, joined["credential"], joined["node_id"])
            self.agents.append(agent)
            await agent.connect()
        return int(made["id"])

    async def image(self, node_id: int) -> int:
        """An image row of the owner's on the node (as a pull would leave it)."""
        async with self.client.app[DM].db.begin() as conn:
            r = await conn.execute(images.insert().values(
                node_id=node_id, ref=f"authz/i{secrets.token_hex(3)}:latest" if self.ids.get("image") else IMAGE,
                image_id=f"sha256:{secrets.token_hex(32)}", size=1, owner_id=self.callers["owner"].user_id,
                public=False, created_at=sa.func.now(), updated_at=sa.func.now()))
            return int(r.inserted_primary_key[0])

    async def instance(self) -> int:
        made = await self.api("POST", "/instances", {"name": f"i-{secrets.token_hex(3)}", "image": IMAGE,
                                                     "node_id": self.ids["node"]})
        return int(made["id"])

    async def fresh(self, kind: str) -> int:
        """A new object of the owner's of this kind (for a cell that destroys its object)."""
        if kind == "node":
            return await self.node()
        if kind == "instance":
            return await self.instance()
        if kind == "map":
            return int((await self.api("POST", f"/instances/{self.ids['instance']}/port-maps",
                                       {"instance_port": 1000 + len(self.agents) + secrets.randbelow(5000)}))["id"])
        if kind == "key":
            return int((await self.api("POST", "/ssh-keys", {"name": f"k-{secrets.token_hex(3)}",
                                                            "public_key": _new_key()}))["id"])
        if kind == "token":
            return int((await self.api("POST", "/tokens", {"name": f"t-{secrets.token_hex(3)}"}))["id"])
        if kind == "image":
            return await self.image(self.ids["node"])
        if kind == "user":
            return await add_user(self.client, f"u-{secrets.token_hex(3)}@example.org",
                                  username=f"u{secrets.token_hex(3)}")
        if kind == "share":  # the share of the node with the shared user, made again
            r = await self.client.post(f"/api/v1/nodes/{self.ids['node']}/shares", json={"username": "shared"},
                                       headers=self.callers["owner"].headers)
            assert r.status in (200, 201, 409), await r.text()
            await self.api("POST", f"/shares/{self.ids['node']}/accept", who="shared")
            return self.ids["node"]
        raise AssertionError(f"no fresh {kind}")

    async def close(self) -> None:
        for a in self.agents:
            await a.close()
        if self._bare is not None:
            await self._bare.close()
        for c in self.callers.values():
            if c.session is not None:
                await c.session.close()


_KEYS: list[str] = []


def _new_key() -> str:
    """A distinct valid ed25519 public key each time (a user's keys must differ)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pub = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return pub.decode() + " authz"


_CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')


async def session_of(w: World, who: str) -> tuple[aiohttp.ClientSession, str]:
    """A cookie session for the pages and its CSRF token: logged in, or (anonymous) the login
    page's, as a browser has it."""
    s = aiohttp.ClientSession(base_url=w.base, cookie_jar=aiohttp.CookieJar(unsafe=True))
    if who == "anonymous":
        r = await s.get("/login")
        m = _CSRF.search(await r.text())
        return s, m.group(1) if m else ""
    r = await s.post("/api/v1/auth/login", json={"email": f"{who}@example.org", "password": PASSWORD})
    assert r.status == 200, await r.text()
    return s, (await r.json())["csrf_token"]


async def build(client: TestClient) -> World:  # type: ignore[type-arg]
    w = World(client)
    session, csrf = await session_of(w, "anonymous")
    w.callers["anonymous"] = Caller("anonymous", session=session, csrf=csrf)
    for name in CALLERS[1:]:
        email = f"{name}@example.org"
        uid = await add_user(client, email, role="admin" if name == "admin" else "user", username=name)
        session, csrf = await session_of(w, name)
        w.callers[name] = Caller(name, await make_token(client, email), session, csrf, uid)
    w.ids["user"] = w.callers["owner"].user_id or 0
    w.ids["shared_user"] = w.callers["shared"].user_id or 0
    w.ids["node"] = await w.node(online=True)
    w.ids["image"] = await w.image(w.ids["node"])
    w.ids["instance"] = await w.instance()
    w.ids["map"] = await w.fresh("map")
    w.ids["key"] = int((await w.api("POST", "/ssh-keys", {"name": "k", "public_key": KEY}))["id"])
    w.ids["token"] = await w.fresh("token")
    return w
