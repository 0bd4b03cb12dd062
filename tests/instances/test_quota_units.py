"""Placement, quotas and the GPU ledger at the storage level (instances.create on a real
database, no application): every refusal with its exact reason, every boundary."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa

from dmd.db import Database
from dmd.db.schema import gpu_allocations, images, instances, node_shares, nodes
from dmd.db.types import utcnow
from dmd.errors import ApiError
from dmd.models import User
from dmd.pages.instances import capacity_text
from dmd.queries import instances as svc
from dmd.queries import users as user_svc

GPU = {"vendor": "nvidia", "name": "A5000"}


def gpus(*uuids: str | None) -> list[dict[str, Any]]:
    return [{**GPU, "index": i, **({"uuid": u} if u is not None else {})} for i, u in enumerate(uuids)]


async def add_node(db: Database, name: str, *, cpus: float | None = 8, memory_mb: int | None = 8000,
                   gpu_list: list[dict[str, Any]] | None = None, owner: User | None = None,
                   cordoned: bool = False, image: str = "img:1", image_owner: User | None = None,
                   public: bool = True) -> int:
    now = utcnow()
    facts: dict[str, Any] = {"gpus": gpu_list or []}
    if cpus is not None:
        facts["cpu_count"] = cpus
    if memory_mb is not None:
        facts["memory_total_mb"] = memory_mb
    async with db.begin() as conn:
        r = await conn.execute(nodes.insert().values(
            name=name, owner_id=owner.id if owner else None, status="online", cordoned=cordoned, local=False,
            facts=json.dumps(facts), created_at=now, updated_at=now))
        node_id = int(r.inserted_primary_key[0])
        await conn.execute(images.insert().values(
            node_id=node_id, ref=image, image_id="sha256:1", size=1, owner_id=image_owner.id if image_owner else None,
            public=public, created_at=now, updated_at=now))
    return node_id


async def user(db: Database, email: str, **kw: Any) -> User:
    async with db.begin() as conn:
        return await user_svc.create(conn, email=email, password_hash="x", **kw)


def req(name: str = "i", **kw: Any) -> svc.CreateRequest:
    values: dict[str, Any] = {"name": name, "image": "img:1", "node_id": None, "cpus": None, "memory_mb": None,
                              "gpu_count": 0, "gpu_uuids": None, "env": {}, "command": None, "privileged": False,
                              "host_network": False}
    values.update(kw)
    return svc.CreateRequest(**values)


async def create(db: Database, owner: User, request: svc.CreateRequest, online: set[int]):
    async with db.begin() as conn:
        return await svc.create(conn, owner, request, online)


async def refused(db: Database, owner: User, request: svc.CreateRequest, online: set[int]) -> tuple[int, str, str]:
    with pytest.raises(ApiError) as e:
        await create(db, owner, request, online)
    return e.value.status, e.value.code, e.value.message


async def held(db: Database, instance_id: int) -> list[str]:
    async with db.read() as conn:
        return sorted((await conn.execute(sa.select(gpu_allocations.c.gpu_key)
                                          .where(gpu_allocations.c.instance_id == instance_id))).scalars())


def test_gpu_keys_are_uuids_unless_they_repeat_or_are_missing():
    from tests.portmaps.test_visibility import _node

    assert [k for k, _ in svc.gpu_keys(_node({"gpus": gpus("GPU-a", "GPU-b")}))] == ["GPU-a", "GPU-b"]
    assert [k for k, _ in svc.gpu_keys(_node({"gpus": gpus("GPU-a", "GPU-a")}))] == ["index:0", "index:1"]
    assert [k for k, _ in svc.gpu_keys(_node({"gpus": gpus("GPU-a", None)}))] == ["index:0", "index:1"]
    # No index, or indexes that repeat: the GPU's place in the facts, so keys never repeat.
    assert [k for k, _ in svc.gpu_keys(_node({"gpus": [{"uuid": "x"}, {"uuid": "x"}]}))] == ["slot:0", "slot:1"]
    assert [k for k, _ in svc.gpu_keys(_node({"gpus": [{"index": 0}, {"index": 0}]}))] == ["slot:0", "slot:1"]
    assert [k for k, _ in svc.gpu_keys(_node({"gpus": [{"uuid": "", "index": 3}, {"uuid": "y", "index": 4}]}))] == [
        "index:3", "index:4"]
    assert svc.gpu_keys(_node({})) == []


async def test_capacity_to_the_last_cpu_megabyte_and_gpu(db: Database) -> None:
    admin = await user(db, "boss@example.org", role="admin")
    n = await add_node(db, "n1", cpus=4, memory_mb=1000, gpu_list=gpus("GPU-a", "GPU-b"))
    first = await create(db, admin, req("a", cpus=2.5, memory_mb=600, gpu_count=1), {n})
    assert await held(db, first.id) == ["GPU-a"]
    # What was asked, once; each figure once, memory in the pages' units; what is short, by name.
    assert await refused(db, admin, req("b", cpus=1.6), {n}) == (
        409, "no_capacity", "no node can take this instance (asked: 1.6 CPUs, the node's default memory, 0 GPUs): "
                            "n1: 1.5 CPUs, 400 MiB memory, 1 of 2 GPUs free (too few CPUs)")
    assert (await refused(db, admin, req("b", cpus=1, memory_mb=401), {n}))[2] == (
        "no node can take this instance (asked: 1 CPUs, 401 MiB memory, 0 GPUs): "
        "n1: 1.5 CPUs, 400 MiB memory, 1 of 2 GPUs free (too little memory)")
    # (Sized: an instance without a size has the default's, 1 CPU and 1024 MiB, more than is left.)
    assert (await refused(db, admin, req("b", cpus=1, memory_mb=1, gpu_count=2), {n}))[2].endswith(
        "(too few GPUs)")
    assert (await refused(db, admin, req("b", cpus=1, memory_mb=1, gpu_uuids=["GPU-a"]), {n}))[2].endswith(
        "(GPU GPU-a is not free here)")
    last = await create(db, admin, req("b", cpus=1.5, memory_mb=400, gpu_count=1), {n})  # exactly what is left
    assert await held(db, last.id) == ["GPU-b"]
    async with db.read() as conn:
        usage = await svc.node_usage(conn, n)
    assert (usage.cpus, usage.memory_mb, usage.gpus_taken) == (4.0, 1000, {"GPU-a", "GPU-b"})
    # A deleted instance frees its CPUs and memory at once (its GPUs when it is forgotten).
    async with db.begin() as conn:
        await svc.set_desired(conn, first.id, "deleted")
        usage = await svc.node_usage(conn, n)
        assert (usage.cpus, usage.memory_mb) == (1.5, 400)
        await svc.forget(conn, first.id)
        node = (await svc.usable_nodes(conn, admin))[0]
        free = await svc.free_on(conn, node)
    assert (free.cpus, free.memory_mb, [k for k, _ in free.gpus], free.gpus_total) == (2.5, 600, ["GPU-a"], 2)


async def test_a_node_without_cpu_or_memory_facts_takes_any_size(db: Database) -> None:
    admin = await user(db, "boss@example.org", role="admin")
    n = await add_node(db, "bare", cpus=None, memory_mb=None)
    inst = await create(db, admin, req(cpus=512, memory_mb=10**7), {n})
    assert inst.node_id == n
    async with db.read() as conn:
        free = await svc.free_on(conn, (await svc.usable_nodes(conn, admin))[0])
    assert (free.cpus, free.memory_mb) == (None, None)
    assert svc.describe_free(free) == "bare: ? CPUs, ? memory, 0 of 0 GPUs free"


async def test_placement_goes_to_the_first_node_that_fits_and_says_why_not_elsewhere(db: Database) -> None:
    admin = await user(db, "boss@example.org", role="admin")
    off = await add_node(db, "off")
    cordoned = await add_node(db, "cordoned", cordoned=True)
    other_image = await add_node(db, "other", image="else:1")
    small = await add_node(db, "small", cpus=1)
    big = await add_node(db, "big", cpus=16)
    online = {cordoned, other_image, small, big}
    assert (await create(db, admin, req("a", cpus=2), online)).node_id == big
    assert (await create(db, admin, req("b", cpus=1), online)).node_id == small
    status, code, message = await refused(db, admin, req("c", cpus=15), online)
    assert (status, code) == (409, "no_capacity")
    assert message == ("no node can take this instance (asked: 15 CPUs, the node's default memory, 0 GPUs): "
                       "off: offline; cordoned: cordoned; other: no image img:1 "
                       "you may use; small: 0 CPUs, 6.8 GiB memory, 0 of 0 GPUs free (too few CPUs); "
                       "big: 14 CPUs, 6.8 GiB memory, 0 of 0 GPUs free (too few CPUs)")
    assert (await create(db, admin, req("d", node_id=big), online)).node_id == big
    assert off not in online
    # The same refusal, as the pages say it: each node's reason in the page's language (no
    # English "offline" in the Japanese one), the request restated once, memory in GiB.
    with pytest.raises(ApiError) as e:
        await create(db, admin, req("e", cpus=15, memory_mb=2048, gpu_count=1), online)
    assert e.value.extra["asked"] == {"cpus": 15, "memory_mb": 2048, "gpus": 1}
    assert [(r["node"], r["reason"]) for r in e.value.extra["nodes"]] == [
        ("off", "offline"), ("cordoned", "cordoned"), ("other", "no_image"), ("small", "full"), ("big", "full")]
    assert capacity_text("en", e.value) == (
        "Asked for 15 CPUs, 2.0 GiB memory, 1 GPUs. off: offline; cordoned: cordoned; "
        "other: no image img:1 you may use; "
        "small: too few CPUs (0 CPUs, 6.8 GiB memory, 0 of 0 GPUs free); "
        "big: too few CPUs (13 CPUs, 5.8 GiB memory, 0 of 0 GPUs free).")
    ja = capacity_text("ja", e.value)
    assert "off: オフライン" in ja and "cordoned: 受付停止中" in ja and "CPU が足りません" in ja
    assert "offline" not in ja and "cordoned:" in ja and "CPUs" not in ja


async def test_users_place_only_on_nodes_they_own_or_are_shared_with_and_images_they_may_use(db: Database) -> None:
    alice = await user(db, "alice@example.org")
    bob = await user(db, "bob@example.org")
    theirs = await add_node(db, "bobs", owner=bob)
    shared = await add_node(db, "shared", image_owner=bob, public=False)
    own = await add_node(db, "alices", owner=alice, image_owner=alice, public=False)
    online = {theirs, shared, own}
    assert await refused(db, alice, req(node_id=theirs), online) == (
        422, "invalid", f"node_id: no node {theirs} that you may use")
    assert (await create(db, alice, req("mine"), online)).node_id == own
    async with db.begin() as conn:
        await conn.execute(node_shares.insert().values(node_id=shared, user_id=alice.id, created_at=utcnow(),
                                                        accepted_at=utcnow()))
        assert [n.name for n in await svc.usable_nodes(conn, alice)] == ["shared", "alices"]
        assert [n.name for n in await svc.usable_nodes(conn, bob)] == ["bobs"]
        assert not await svc.image_usable(conn, alice, shared, "img:1")  # bob's, private
        assert await svc.image_usable(conn, bob, shared, "img:1")
        assert await svc.image_usable(conn, alice, own, "img:1")
        assert not await svc.image_usable(conn, alice, own, "nope:1")
    assert (await refused(db, alice, req("x", node_id=shared), online))[2] == (
        "no node can take this instance (asked: the node's default CPUs, the node's default memory, 0 GPUs): "
        "shared: no image img:1 you may use")
    lonely = await user(db, "carol@example.org")
    assert await refused(db, lonely, req(), online) == (
        409, "no_capacity", "there is no node you may use; ask an administrator to share one")


async def test_gpu_requests_by_uuid(db: Database) -> None:
    admin = await user(db, "boss@example.org", role="admin")
    a = await add_node(db, "a", gpu_list=gpus("GPU-1", "GPU-2"))
    b = await add_node(db, "b", gpu_list=gpus("GPU-3"))
    online = {a, b}
    assert await refused(db, admin, req(gpu_uuids=["GPU-9"]), online) == (
        422, "invalid", "gpus: these GPUs are not on any node you may use")
    assert await refused(db, admin, req(gpu_uuids=["GPU-3"], node_id=a), online) == (
        422, "invalid", "gpus: GPU-3 is not a GPU of node a; its GPUs are: GPU-1, GPU-2")
    inst = await create(db, admin, req("x", gpu_uuids=["GPU-3"]), online)
    assert inst.node_id == b and await held(db, inst.id) == ["GPU-3"]
    inst = await create(db, admin, req("y", gpu_uuids=["GPU-2"]), online)
    assert inst.node_id == a and await held(db, inst.id) == ["GPU-2"]


async def test_each_gpu_id_selects_exactly_one_device(db: Database) -> None:
    """A node whose GPUs repeat a uuid (or report none): asking by that uuid used to give every
    GPU reporting it while the quota counted one (issue 10, hole 3)."""
    limited = await user(db, "u@example.org", gpu_limit=2)
    dup = await add_node(db, "dup", owner=limited, gpu_list=gpus("GPU-x", "GPU-x"))
    bare = await add_node(db, "bare", owner=limited, gpu_list=gpus(None, None))
    mixed = await add_node(db, "mixed", owner=limited, gpu_list=gpus("GPU-a", None))
    online = {dup, bare, mixed}
    ambiguous = (422, "invalid", "gpus: GPU-x is reported by 2 GPUs of node dup; ask for one of them by key: "
                                 "index:0, index:1")
    assert await refused(db, limited, req(gpu_uuids=["GPU-x"], node_id=dup), online) == ambiguous
    assert await refused(db, limited, req(gpu_uuids=["GPU-x"]), online) == ambiguous
    assert await refused(db, limited, req(gpu_uuids=["index:0", "index:0"], node_id=dup), online) == (
        422, "invalid", "gpus: index:0 is asked for more than once; list each GPU once")
    assert await refused(db, limited, req(gpu_uuids=["index:7"], node_id=dup), online) == (
        422, "invalid", "gpus: index:7 is not a GPU of node dup; its GPUs are: index:0, index:1")
    assert await refused(db, limited, req(gpu_uuids=["None"], node_id=bare), online) == (
        422, "invalid", "gpus: None is not a GPU of node bare; its GPUs are: index:0, index:1")
    assert await refused(db, limited, req(gpu_uuids=[" "], node_id=bare), online) == (
        422, "invalid", "gpus: a GPU id is empty; use the keys GET /capacity lists")
    # Two ids of one device: its uuid (reported by it alone) and its key.
    assert await refused(db, limited, req(gpu_uuids=["GPU-a", "index:0"], node_id=mixed), online) == (
        422, "invalid", "gpus: GPU-a and index:0 are the same GPU of node mixed (index:0)")
    one = await create(db, limited, req("one", gpu_uuids=["index:1"], node_id=dup), online)
    assert await held(db, one.id) == ["index:1"]
    two = await create(db, limited, req("two", gpu_uuids=["index:0"], node_id=dup), online)
    assert await held(db, two.id) == ["index:0"]
    # The quota counts the devices held: a third is refused, on any node.
    assert await refused(db, limited, req("three", gpu_uuids=["GPU-a"]), online) == (
        403, "quota_exceeded", "you may hold at most 2 GPU(s); you hold 2 and asked for 1")
    async with db.begin() as conn:
        await svc.forget(conn, one.id)
    inst = await create(db, limited, req("by-uuid", gpu_uuids=["GPU-a"]), online)  # its own uuid: one device
    assert (inst.node_id, await held(db, inst.id)) == (mixed, ["index:0"])


async def test_quotas_count_live_instances_and_held_gpus(db: Database) -> None:
    limited = await user(db, "u@example.org", instance_limit=2, gpu_limit=2)
    n = await add_node(db, "n", owner=limited, gpu_list=gpus("GPU-1", "GPU-2", "GPU-3"))
    first = await create(db, limited, req("a", gpu_count=1), {n})
    assert await refused(db, limited, req("b", gpu_count=2), {n}) == (
        403, "quota_exceeded", "you may hold at most 2 GPU(s); you hold 1 and asked for 2")
    assert await refused(db, limited, req("b", gpu_uuids=["GPU-2", "GPU-3"]), {n}) == (
        403, "quota_exceeded", "you may hold at most 2 GPU(s); you hold 1 and asked for 2")
    await create(db, limited, req("b", gpu_count=1), {n})  # exactly the GPU quota
    assert await refused(db, limited, req("c"), {n}) == (
        403, "quota_exceeded", "you may have at most 2 instance(s); delete one or ask an administrator")
    async with db.begin() as conn:
        await svc.set_desired(conn, first.id, "deleted")  # a deleting instance no longer counts
    third = await create(db, limited, req("c"), {n})
    assert third.owner_id == limited.id
    # No GPU quota: as many as the node has; none wanted: never refused for GPUs.
    free = await user(db, "f@example.org", gpu_limit=0)
    async with db.begin() as conn:
        await conn.execute(node_shares.insert().values(node_id=n, user_id=free.id, created_at=utcnow(),
                                                        accepted_at=utcnow()))
    assert (await create(db, free, req("cpu-only"), {n})).owner_id == free.id
    assert (await refused(db, free, req("gpu", gpu_count=1), {n}))[:2] == (403, "quota_exceeded")


async def test_names_are_unique_per_user_and_checked(db: Database) -> None:
    admin = await user(db, "boss@example.org", role="admin")
    other = await user(db, "o@example.org", role="admin")
    n = await add_node(db, "n")
    await create(db, admin, req("same"), {n})
    assert await refused(db, admin, req("same"), {n}) == (409, "name_taken",
                                                          "you already have an instance named 'same'")
    assert (await create(db, other, req("same"), {n})).name == "same"
    assert (await refused(db, admin, req("bad name"), {n}))[:2] == (422, "invalid")


async def test_visible_and_listed_instances(db: Database) -> None:
    admin = await user(db, "boss@example.org", role="admin")
    alice = await user(db, "alice@example.org")
    bob = await user(db, "bob@example.org")
    n1 = await add_node(db, "n1")
    n2 = await add_node(db, "n2")
    async with db.begin() as conn:
        for u in (alice, bob):
            for node_id in (n1, n2):
                await conn.execute(node_shares.insert().values(node_id=node_id, user_id=u.id, created_at=utcnow(),
                                                        accepted_at=utcnow()))
    made = {}
    for owner, name, node_id in ((alice, "a1", n1), (bob, "b1", n1), (alice, "a2", n2), (alice, "a3", n1)):
        made[name] = (await create(db, owner, req(name, node_id=node_id), {n1, n2})).id
    async with db.read() as conn:
        ids = [i.id for i in await svc.list_visible(conn, alice, limit=10, after_id=None)]
        assert ids == [made["a1"], made["a2"], made["a3"]]
        assert [i.id for i in await svc.list_visible(conn, alice, limit=10, after_id=made["a1"])] == \
            [made["a2"], made["a3"]]
        assert [i.id for i in await svc.list_visible(conn, alice, limit=10, after_id=None, node_id=n1)] == \
            [made["a1"], made["a3"]]
        assert [i.id for i in await svc.list_visible(conn, admin, limit=2, after_id=None)] == \
            [made["a1"], made["b1"]]
        assert (await svc.get_visible(conn, alice, made["a1"])).name == "a1"
        assert (await svc.get_visible(conn, admin, made["b1"])).name == "b1"
        with pytest.raises(ApiError) as e:
            await svc.get_visible(conn, alice, made["b1"])
        assert (e.value.status, e.value.message) == (404, f"no such instance: {made['b1']}")
        rows = (await conn.execute(sa.select(instances.c.id))).scalars().all()
    assert len(rows) == 4


async def test_gpus_held_by_others_do_not_count_against_a_quota(db: Database) -> None:
    admin = await user(db, "boss@example.org", role="admin")
    limited = await user(db, "u@example.org", gpu_limit=1)
    n = await add_node(db, "n", gpu_list=gpus("GPU-1", "GPU-2", "GPU-3"))
    async with db.begin() as conn:
        await conn.execute(node_shares.insert().values(node_id=n, user_id=limited.id, created_at=utcnow(),
                                                        accepted_at=utcnow()))
    await create(db, admin, req("big", gpu_count=2), {n})
    inst = await create(db, limited, req("mine", gpu_count=1), {n})
    assert await held(db, inst.id) == ["GPU-3"]


async def test_what_is_recorded(db: Database) -> None:
    admin = await user(db, "boss@example.org", role="admin")
    n = await add_node(db, "n")
    plain = await create(db, admin, req("plain"), {n})
    assert (plain.command, plain.env, plain.ssh_enabled, plain.ssh_keys_all) == (None, {}, True, True)
    assert (plain.desired, plain.status, plain.owner_id, plain.image) == ("running", "pending", admin.id, "img:1")
    full = await create(db, admin, req("full", command=["sleep", "9"], env={"A": "1"}, ssh=False, cpus=1.5,
                                       memory_mb=64, privileged=True), {n})
    assert (full.command, full.env, full.ssh_enabled, full.cpus, full.memory_mb, full.privileged) == (
        ["sleep", "9"], {"A": "1"}, False, 1.5, 64, True)
    host = await create(db, admin, req("host", host_network=True), {n})  # the host's own sshd: none of DM's
    assert (host.host_network, host.ssh_enabled) == (True, False)


async def test_instances_without_a_size_get_the_node_s_default_and_count(db: Database) -> None:
    """Unsized instances used to run without limits and count as nothing (issue 10, hole 11)."""
    admin = await user(db, "boss@example.org", role="admin")
    n = await add_node(db, "n", cpus=2, memory_mb=4096)
    first = await create(db, admin, req("a"), {n})
    assert (first.cpus, first.memory_mb) == (svc.DEFAULT_CPUS, svc.DEFAULT_MEMORY_MB) == (1.0, 1024)
    await create(db, admin, req("b"), {n})
    async with db.read() as conn:
        usage = await svc.node_usage(conn, n)
    assert (usage.cpus, usage.memory_mb) == (2.0, 2048)
    # The node is full at its defaults: a third is refused, as a sized one would be.
    assert await refused(db, admin, req("c"), {n}) == (
        409, "no_capacity", "no node can take this instance (asked: the node's default CPUs, the node's default "
                            "memory, 0 GPUs): n: 0 CPUs, 2.0 GiB memory, 0 of 0 GPUs free (too few CPUs)")
    # An administrator's defaults for the node; never more than the node has.
    async with db.begin() as conn:
        await conn.execute(nodes.update().where(nodes.c.id == n).values(default_cpus=0.5, default_memory_mb=99999))
        node = (await svc.usable_nodes(conn, admin))[0]
    assert svc.default_size(node) == (0.5, 4096)
    async with db.begin() as conn:
        await conn.execute(nodes.update().where(nodes.c.id == n).values(default_memory_mb=256))
        await svc.forget(conn, first.id)
    small = await create(db, admin, req("c", memory_mb=512), {n})  # given: kept; not given: the node's default
    assert (small.cpus, small.memory_mb) == (0.5, 512)
    # A node that reports no size takes the defaults as they are.
    bare = await add_node(db, "bare", cpus=None, memory_mb=None)
    inst = await create(db, admin, req("d", node_id=bare), {bare})
    assert (inst.cpus, inst.memory_mb) == (1.0, 1024)


async def test_instances_recorded_without_a_size_are_counted_at_the_default(db_url: str) -> None:
    """Migration 0008 fills the size of instances created before the defaults existed."""
    from dmd.db.migrate import upgrade

    database = Database(db_url)
    try:
        await upgrade(database, "0007")  # the revision before 0008
        admin = await user(database, "boss@example.org", role="admin")
        n = await add_node(database, "old", cpus=4, memory_mb=4096)
        now = utcnow()
        async with database.begin() as conn:
            for name, cpus, memory_mb in (("unsized", None, None), ("sized", 2.0, 512)):
                await conn.execute(instances.insert().values(
                    name=name, owner_id=admin.id, node_id=n, image="img:1", cpus=cpus, memory_mb=memory_mb, env="{}",
                    privileged=False, host_network=False, desired="running", status="running", created_at=now,
                    updated_at=now))
        await upgrade(database)
        async with database.read() as conn:
            rows = (await conn.execute(sa.select(instances.c.name, instances.c.cpus, instances.c.memory_mb)
                                       .order_by(instances.c.name))).all()
            usage = await svc.node_usage(conn, n)
        assert [tuple(r) for r in rows] == [("sized", 2.0, 512), ("unsized", 1.0, 1024)]
        assert (usage.cpus, usage.memory_mb) == (3.0, 1536)
    finally:
        await database.close()


async def test_migration_0008_matches_the_schema(db: Database) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from dmd.db.schema import metadata

    def diff(conn: sa.Connection) -> list[Any]:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return [d for d in compare_metadata(ctx, metadata) if "default_cpus" in repr(d) or "default_memory" in repr(d)]

    async with db.engine.connect() as conn:
        assert await conn.run_sync(diff) == []
