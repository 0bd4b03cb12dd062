"""Uploads cannot fill dmd's disk (issue 10, hole 9).

* the node (joined, connected), the caller's rights and the reference are checked before a byte of
  the body is read: the answer comes while the client is still holding its body back;
* uploads are spooled in `spool_dir` (by default `<data_dir>/blobs`, never the SQLite file's folder);
* an upload that would leave less than `spool_min_free_bytes` free is refused, 507
  `insufficient_storage` (before the body when the declared length says so, else while it streams),
  and its spool file is removed;
* at most 2 transfers per user at once: the third is refused at once, 429 `too_many_transfers`,
  while other users carry on;
* spool files left by a crash are removed at start.

The nodes are scripted agents over the real WebSocket; on the three databases."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent import protocol as p
from dmd.config import Config, ConfigError
from dmd.core import DM
from dmd.usecases import images as uc
from tests.conftest import add_user, make_token, share_node
from tests.nodes.helpers import FakeAgent
from tests.waiting import wait_for


class Importing(FakeAgent):
    """A node that answers every import with an image of the name asked for."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.images: list[dict[str, Any]] = []
        self.answers[p.IMAGES_LIST] = lambda d: {"images": self.images}
        self.answers[p.IMAGE_IMPORT] = self._import

    def _import(self, data: dict[str, Any]) -> dict[str, Any]:
        image = {"id": f"sha256:{secrets.token_hex(32)}", "repo_tags": [f"{data['repository']}:{data['tag']}"],
                 "size": 5}
        self.images.append(image)
        return {"image": image}


class HeldBody:
    """A request body that sends one chunk and then waits until released: an answer that comes
    while it waits was given before the body was read."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.sent = 0

    async def __call__(self) -> AsyncIterator[bytes]:
        yield b"x" * 1024
        self.sent += 1024
        await self.release.wait()
        yield b"y" * 1024


async def new_node(client, admin, name: str, *, join: bool = True, connect: bool = True) -> Any:  # type: ignore[no-untyped-def]
    created = await (await client.post("/api/v1/nodes", json={"name": name}, headers=admin)).json()
    if not join:
        return created
    joined = await (await client.post("/api/v1/nodes/join", json={"token": created["join_token"]})).json()
    agent = Importing(str(client.make_url("")), joined["credential"], joined["node_id"])
    if connect:
        await agent.connect({"hostname": name, "cpu_count": 2, "memory_total_mb": 4000, "gpus": []})
    return agent


def url(node_id: int, repository: str = "dm-test/up", tag: str = "1") -> str:
    return f"/api/v1/nodes/{node_id}/images/import?repository={repository}&tag={tag}"


async def held_post(client, path: str, headers: dict[str, str]) -> tuple[Any, HeldBody]:  # type: ignore[no-untyped-def]
    """POST a held body; the reply must come within 10 s, while the body is still held."""
    body = HeldBody()
    r = await asyncio.wait_for(client.post(path, headers=headers, data=body()), 10)
    assert not body.release.is_set()
    body.release.set()
    return r, body


async def expect(r: Any, status: int, code: str) -> dict[str, Any]:
    data = await r.json()
    assert r.status == status, data
    assert data["error"]["code"] == code, data
    return data


def spooled(client) -> list[Path]:  # type: ignore[no-untyped-def]
    return list(client.app[DM].blobs.dir.iterdir())


async def test_refusals_come_before_the_body(client, admin):
    await add_user(client, "alice@example.org")
    alice = await make_token(client, "alice@example.org")
    never = await new_node(client, admin, "never", join=False)
    offline = await new_node(client, admin, "offline", connect=False)
    online = await new_node(client, admin, "online")
    try:
        r, _ = await held_post(client, url(never["id"]), admin)
        data = await expect(r, 409, "node_not_joined")
        assert "join" in data["error"]["message"]
        r, _ = await held_post(client, url(offline.node_id), admin)
        await expect(r, 409, "node_offline")
        r, _ = await held_post(client, url(online.node_id), alice)  # not shared with alice
        assert r.status == 404, await r.text()
        r, _ = await held_post(client, url(online.node_id, "NOT VALID"), admin)
        assert r.status == 422, await r.text()
        # Someone else's reference (the admin's image), for a plain user the node is shared with.
        r = await client.post(url(online.node_id, "dm-test/admins"), headers=admin, data=b"a tarball")
        assert r.status == 201, await r.text()
        await share_node(client, online.node_id, "alice", admin)
        assert len(online.images) == 1
        r, _ = await held_post(client, url(online.node_id, "dm-test/admins"), alice)
        await expect(r, 409, "image_ref_taken")
        assert len(online.images) == 1  # the agent was not asked
        assert spooled(client) == []
    finally:
        await online.close()


async def test_free_space_margin(make_client, monkeypatch):
    client = await make_client(spool_min_free_bytes=1 << 62)  # no disk has that much: every upload refused
    await add_user(client, "root@example.org", role="admin")
    admin = await make_token(client, "root@example.org")
    node = await new_node(client, admin, "n")
    try:
        r, _ = await held_post(client, url(node.node_id), admin)
        data = await expect(r, 507, "insufficient_storage")
        assert "spool_dir" in data["error"]["message"]
        # A declared length that would go past the margin: refused before reading, too.
        dm = client.app[DM]
        async def ten_gib() -> int:
            return 10 << 30

        monkeypatch.setattr(dm.blobs, "free_bytes", ten_gib)
        dm.config.spool_min_free_bytes = (10 << 30) - (3 << 19)  # 1.5 MiB above the margin
        r = await client.post(url(node.node_id), headers=admin, data=b"x" * (2 << 20))  # declares 2 MiB
        await expect(r, 507, "insufficient_storage")
        assert not any(e.type == p.IMAGE_IMPORT for e in node.received)
        # While it streams: the disk fills after the first look.
        looks: list[int] = []

        async def filling() -> int:
            looks.append(1)
            return 1 << 40 if len(looks) == 1 else 0

        monkeypatch.setattr(dm.blobs, "free_bytes", filling)
        monkeypatch.setattr(uc, "FREE_CHECK_EVERY", 1)

        async def body() -> AsyncIterator[bytes]:
            for _ in range(64):
                yield b"z" * 65536

        r = await client.post(url(node.node_id), headers=admin, data=body())
        await expect(r, 507, "insufficient_storage")
        assert len(looks) >= 2
        assert spooled(client) == []  # the partial file is gone
        assert not any(e.type == p.IMAGE_IMPORT for e in node.received)
    finally:
        await node.close()


async def test_two_transfers_per_user(client, admin):
    uid = await add_user(client, "alice@example.org", transfer_limit=2)  # the default of users made through the API
    alice = await make_token(client, "alice@example.org")
    await add_user(client, "bob@example.org", transfer_limit=2)
    bob = await make_token(client, "bob@example.org")
    node = await new_node(client, admin, "n")
    dm = client.app[DM]
    try:
        for username in ("alice", "bob"):
            await share_node(client, node.node_id, username, admin)
        held = [HeldBody(), HeldBody()]
        uploads = [asyncio.ensure_future(client.post(url(node.node_id, f"dm-test/held{i}"), headers=alice,
                                                     data=h())) for i, h in enumerate(held)]
        await wait_for(lambda: dm.transfers.running(uid) == 2, "alice's two uploads running")
        r, _ = await held_post(client, url(node.node_id, "dm-test/third"), alice)
        data = await expect(r, 429, "too_many_transfers")
        assert "at most 2" in data["error"]["message"]
        r = await client.post(f"/api/v1/nodes/{node.node_id}/images/pull", headers=alice, json={"ref": "busybox:1"})
        await expect(r, 429, "too_many_transfers")  # pulls count too
        # Bob carries on.
        r = await client.post(url(node.node_id, "dm-test/bobs"), headers=bob, data=b"bob's tarball")
        assert r.status == 201, await r.text()
        for h in held:
            h.release.set()
        for done in await asyncio.gather(*uploads):
            assert done.status == 201, await done.text()
        assert dm.transfers.running(uid) == 0
        r = await client.post(url(node.node_id, "dm-test/third"), headers=alice, data=b"now it fits")
        assert r.status == 201, await r.text()
        assert spooled(client) == []
    finally:
        await node.close()


async def user_id_of(client, headers: dict[str, str]) -> int:  # type: ignore[no-untyped-def]
    return int((await (await client.get("/api/v1/me", headers=headers)).json())["id"])


async def test_the_ceiling_an_admin_sets_is_the_one_the_gate_keeps(client, admin):
    uid = await add_user(client, "alice@example.org")
    alice = await make_token(client, "alice@example.org")
    node = await new_node(client, admin, "n")
    dm = client.app[DM]
    try:
        await share_node(client, node.node_id, "alice", admin)
        r = await client.patch(f"/api/v1/users/{uid}", headers=admin, json={"transfer_limit": 1})
        assert r.status == 200, await r.text()
        held = HeldBody()
        upload = asyncio.ensure_future(client.post(url(node.node_id, "dm-test/held"), headers=alice, data=held()))
        await wait_for(lambda: dm.transfers.running(uid) == 1, "alice's upload running")
        r, _ = await held_post(client, url(node.node_id, "dm-test/second"), alice)
        data = await expect(r, 429, "too_many_transfers")
        assert "at most 1 at once" in data["error"]["message"]
        held.release.set()
        assert (await upload).status == 201
        # No ceiling at all (null): more at once than the default of 2.
        r = await client.patch(f"/api/v1/users/{uid}", headers=admin, json={"transfer_limit": None})
        assert r.status == 200, await r.text()
        more = [HeldBody() for _ in range(3)]
        uploads = [asyncio.ensure_future(client.post(url(node.node_id, f"dm-test/h{i}"), headers=alice, data=h()))
                   for i, h in enumerate(more)]
        await wait_for(lambda: dm.transfers.running(uid) == 3, "three uploads running")
        for h in more:
            h.release.set()
        for done in await asyncio.gather(*uploads):
            assert done.status == 201, await done.text()
    finally:
        await node.close()


async def test_spool_folder(make_client, tmp_path):
    stale = tmp_path / "data" / "blobs" / "left-by-a-crash.tar"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"x" * 100)
    client = await make_client()
    assert client.app[DM].blobs.dir == stale.parent and not stale.exists()
    other = tmp_path / "spool"
    client = await make_client(spool_dir=str(other))
    assert client.app[DM].blobs.dir == other
    with pytest.raises(ConfigError) as e:
        Config(data_dir=str(tmp_path / "data"), spool_dir=str(tmp_path / "data")).validate()
    assert e.value.key == "spool_dir" and "SQLite" in e.value.problem


async def test_the_gate_takes_a_limit_per_user() -> None:
    """The per-user limit is a callable (plain or async: an admin's setting read from storage)."""
    from dmd.usecases.transfers import TooManyTransfers, TransferGate

    async def limit_for(user_id: int) -> int:
        await asyncio.sleep(0)
        return {1: 1, 2: 3}.get(user_id, 2)

    gate = TransferGate(limit_for)
    await gate.enter(1)
    with pytest.raises(TooManyTransfers):
        await gate.enter(1)
    for _ in range(3):
        await gate.enter(2)
    with pytest.raises(TooManyTransfers) as e:
        await gate.enter(2)
    assert e.value.status == 429 and e.value.code == "too_many_transfers"
    gate.leave(1)
    async with gate.slot(1):
        assert gate.running(1) == 1
    assert gate.running(1) == 0 and TransferGate().limit_for(7) == 2
