"""Images through dmd's API on a real Docker Engine, a real local registry and (for copies) a second
dockerd in its own network namespace.

* ``registry_image``: a small image pushed (once per session, Engine API only) to the local
  registry that ``scripts/ensure-services.sh`` runs on 127.0.0.1:5000, as
  ``127.0.0.1:5000/dm-test/busybox:pulltest``; the local copy is removed again, so a pull really
  downloads its layer. It is its own root file system (busybox plus a marker file), not
  ``dm-test/busybox`` itself: that image stays on the engine for the other tests, and a pull of it
  would find every layer already there.
* ``node``: the in-process local node (``tests.instances.conftest.local``), with every image and
  container a test made removed afterwards, also when it fails.
* ``second_dockerd``: a dockerd in a fresh network namespace (DESIGN §5), its own data and exec
  roots and socket; stopped and wiped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import secrets
import shutil
import subprocess
import tarfile
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiodocker
import pytest

from agent.config import AgentConfig
from agent.workloads import make_link, run_link
from tests.databases import every_database  # noqa: F401 (fixture: each test on all three databases)
from tests.instances.conftest import docker, local, wait_for  # noqa: F401 (fixtures)
from tests.netns import dockerd_in_netns, in_thread
from tests.runtime.conftest import docker_test_image  # noqa: F401 (fixture: builds the busybox image)
from tests.runtime.images import BUSYBOX_BINARY, BUSYBOX_REF, is_static_elf

REGISTRY = "127.0.0.1:5000"
# The local registry is on loopback: dmd pulls from it only when registry_allow names it (and
# 127.0.0.1:1, where nothing answers, for the failure tests).
ALLOWED_REGISTRIES = f"{REGISTRY} 127.0.0.1:1"
PULL_REF = f"{REGISTRY}/dm-test/busybox:pulltest"
# Unique per run, so the pushed layer is new to the engine and the pull really downloads it.
PULL_MARKER = f"dm pull test image {secrets.token_hex(8)}\n"
DOCKER_HOST = os.environ.get("DM_TEST_DOCKER_HOST", "unix:///var/run/docker.sock")
ENSURE = "scripts/ensure-services.sh"
# This run's repository prefix: other sessions may run these tests on the same engine at the same time.
T = f"dm-test/t{secrets.token_hex(3)}"


# --------------------------------------------------------------------------- helpers


def rootfs_tar(marker: str, *, mtime: int = 1_700_000_000) -> bytes:
    """A tiny root file system: the static busybox as sh/echo/cat/sleep, and /etc/marker.

    Fixed times and owners: the same marker gives the same bytes (and so the same layer)."""
    if not (os.path.isfile(BUSYBOX_BINARY) and is_static_elf(BUSYBOX_BINARY)):
        pytest.fail(f"{BUSYBOX_BINARY} must be Debian's static busybox (scripts/test-images.sh installs it)",
                    pytrace=False)
    buf = io.BytesIO()

    def info(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.size, ti.linkname, ti.mtime = kind, mode, size, link, mtime
        return ti

    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for d in ("bin", "etc", "dev", "proc", "sys", "tmp"):
            tar.addfile(info(d, tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755))
        with open(BUSYBOX_BINARY, "rb") as fh:
            data = fh.read()
        tar.addfile(info("bin/busybox", tarfile.REGTYPE, 0o755, len(data)), io.BytesIO(data))
        for applet in ("sh", "echo", "cat", "sleep", "ls"):
            tar.addfile(info(f"bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox"))
        body = marker.rstrip("\n").encode() + b"\n"  # a whole line: Docker logs only finished lines
        tar.addfile(info("etc/marker", tarfile.REGTYPE, 0o644, len(body)), io.BytesIO(body))
    return buf.getvalue()


async def rootfs(marker: str) -> bytes:
    """rootfs_tar from a coroutine: reading busybox and building the tar happen in a thread."""
    return await asyncio.to_thread(rootfs_tar, marker)


def tar_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


async def remove_image(engine: aiodocker.Docker, ref: str) -> None:
    with contextlib.suppress(aiodocker.DockerError):
        await engine.images.delete(ref, force=True)


async def image_ids(engine: aiodocker.Docker) -> set[str]:
    """Every image id on the engine, dangling ones included."""
    return {i["Id"] for i in await engine.images.list(all=True)}


async def engine_state(engine: aiodocker.Docker) -> tuple[set[str], set[str]]:
    """(untagged image ids, tags) on the engine. Other test sessions may share the engine, so
    "nothing left behind" compares these: none of them makes untagged images or this run's tags."""
    untagged, tags = set(), set()
    for i in await engine.images.list(all=True):
        real = [t for t in i.get("RepoTags") or [] if "<none>" not in t]
        tags.update(real)
        if not real:
            untagged.add(i["Id"])
    return untagged, tags


async def assert_nothing_left(engine: aiodocker.Docker, before: tuple[set[str], set[str]], *names: str) -> None:
    untagged, tags = await engine_state(engine)
    assert untagged <= before[0], f"new untagged images: {untagged - before[0]}"
    mine = {t for t in tags - before[1] if t.startswith((T, *names))}
    assert not mine, f"new tags: {mine}"


async def catalogue(client, headers, node_id: int) -> dict[str, dict[str, Any]]:
    r = await client.get(f"/api/v1/nodes/{node_id}/images", headers=headers)
    assert r.status == 200, await r.text()
    return {i["ref"]: i for i in await r.json()}


async def me(client, headers) -> int:
    r = await client.get("/api/v1/me", headers=headers)
    assert r.status == 200, await r.text()
    return int((await r.json())["id"])


async def logs_contain(client, headers, iid: int, text: str, timeout: float = 20) -> None:
    async def check() -> bool:
        r = await client.get(f"/api/v1/instances/{iid}/logs?tail=50", headers=headers)
        return r.status == 200 and text in await r.text()

    try:
        await wait_for(check, f"{text!r} in the logs of instance {iid}", timeout)
    except AssertionError as e:
        inst = await (await client.get(f"/api/v1/instances/{iid}", headers=headers)).text()
        logs = await (await client.get(f"/api/v1/instances/{iid}/logs?tail=50", headers=headers)).text()
        raise AssertionError(f"{e}; instance: {inst}; logs: {logs}") from None


async def remove_instance(client, headers, iid: int) -> None:
    r = await client.delete(f"/api/v1/instances/{iid}", headers=headers)
    assert r.status == 202, await r.text()

    async def gone() -> bool:
        return (await client.get(f"/api/v1/instances/{iid}", headers=headers)).status == 404

    await wait_for(gone, f"instance {iid} gone")


# --------------------------------------------------------------------------- registry


def _registry_answers() -> bool:
    try:
        with urllib.request.urlopen(f"http://{REGISTRY}/v2/", timeout=3) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="session")
def registry_image(docker_test_image) -> str:  # noqa: F811
    """PULL_REF is in the local registry and not on the engine."""
    if not _registry_answers():
        pytest.fail(f"the local registry does not answer on http://{REGISTRY}/v2/; run {ENSURE} (as root)",
                    pytrace=False)

    rootfs = rootfs_tar(PULL_MARKER)

    async def push() -> None:
        repo, _, tag = PULL_REF.rpartition(":")
        async with aiodocker.Docker(url=DOCKER_HOST) as d:
            async with d._query("images/create", "POST", params={"fromSrc": "-", "repo": repo, "tag": tag},
                                data=rootfs, headers={"Content-Type": "application/x-tar"}) as r:
                answer = await r.text()
            assert '"error' not in answer, answer
            # The registry needs no login; the Engine still wants an X-Registry-Auth header.
            result = await d.images.push(repo, tag=tag, auth={"serveraddress": REGISTRY})
            errors = [m for m in result if isinstance(m, dict) and m.get("error")]
            assert not errors, errors
            await d.images.delete(PULL_REF, force=True)

    in_thread(push)
    return PULL_REF


# --------------------------------------------------------------------------- the local node, cleaned


@pytest.fixture
async def client(make_client):  # type: ignore[no-untyped-def]
    """dmd, allowed to pull from the local test registry."""
    return await make_client(registry_allow=ALLOWED_REGISTRIES)



@pytest.fixture
async def made(docker) -> AsyncIterator[list[str]]:  # noqa: F811
    """Refs a test makes on the main engine: removed (with their containers) after the instances are."""
    refs: list[str] = []
    yield refs
    for ref in refs:
        with contextlib.suppress(aiodocker.DockerError):
            for c in await docker.containers.list(all=True, filters={"ancestor": [ref]}):
                await c.delete(force=True)
        await remove_image(docker, ref)


@pytest.fixture
async def node(made, local) -> dict[str, Any]:  # noqa: F811
    """The local node, online, with the busybox image; what the test made is removed afterwards."""
    return local


# --------------------------------------------------------------------------- a second dockerd


@pytest.fixture
def second_dockerd() -> Iterator[str]:
    """A dockerd in its own network namespace; yields its DOCKER_HOST."""
    if os.geteuid() != 0:
        pytest.fail("a second dockerd in a network namespace needs root", pytrace=False)
    for tool in ("ip", "nsenter", "dockerd"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing (iproute2, util-linux, docker.io)", pytrace=False)
    netns = f"dm-img-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", netns], check=True, timeout=10)
    try:
        with dockerd_in_netns(netns) as docker_host:
            yield docker_host
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False, timeout=10)


@pytest.fixture
async def second_node(client, admin, node, second_dockerd) -> AsyncIterator[dict[str, Any]]:
    """A second node, joined through the API, whose agent (in this process) drives the second dockerd."""
    r = await client.post("/api/v1/nodes", headers=admin, json={"name": "second"})
    assert r.status == 201, await r.text()
    created = await r.json()
    r = await client.post("/api/v1/nodes/join", json={"token": created["join_token"], "hostname": "second"})
    assert r.status == 200, await r.text()
    joined = await r.json()
    config = AgentConfig(server=str(client.make_url("")).rstrip("/"), node_id=joined["node_id"],
                         credential=joined["credential"], docker_host=second_dockerd)
    link, workloads = make_link(config)
    task = asyncio.create_task(run_link(link, workloads))

    async def online() -> bool:
        r = await client.get(f"/api/v1/nodes/{joined['node_id']}", headers=admin)
        return (await r.json())["status"] == "online"

    try:
        await wait_for(online, "the second node online")
        yield {"id": joined["node_id"], "docker_host": second_dockerd, "credential": joined["credential"]}
        # Its instances go while its agent still runs (the local node's teardown comes later).
        r = await client.get("/api/v1/instances?limit=200", headers=admin)
        for inst in (await r.json())["items"]:
            if inst["node_id"] == joined["node_id"]:
                await remove_instance(client, admin, inst["id"])
    finally:
        await link.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)


def ndjson(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


__all__ = [
    "ALLOWED_REGISTRIES",
    "BUSYBOX_REF",
    "PULL_MARKER",
    "PULL_REF",
    "REGISTRY",
    "T",
    "assert_nothing_left",
    "catalogue",
    "engine_state",
    "image_ids",
    "in_thread",
    "logs_contain",
    "me",
    "ndjson",
    "remove_image",
    "remove_instance",
    "rootfs",
    "rootfs_tar",
    "tar_of",
]
