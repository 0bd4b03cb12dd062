"""The agent's stream handler of kind "copy" on the fake driver, over an in-memory stream (the
Docker driver's archive calls are in the conformance suite; the whole path, browser to
container, in tests/pages/test_terminal_browser.py)."""

from __future__ import annotations

import io
import tarfile

from agent.file_copy import copy_handler
from agent.protocol import CopyParams, StreamOpen
from agent.protocol.types import ContainerInfo, ContainerSpec
from agent.runtime.fake import FakeDriver
from tests.memory_stream import pair


def _tar(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as t:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return out.getvalue()


async def _running(fake: FakeDriver) -> ContainerInfo:
    fake.add_image("debian:12")
    info = await fake.create(ContainerSpec(instance_id=7, node_id=1, name="dm-7-c", image="debian:12"))
    await fake.start(info.id)
    return info


async def test_copy_in_then_out() -> None:
    async with FakeDriver() as fake:
        info = await _running(fake)

        handle = copy_handler(fake)
        dmd, agent = pair(StreamOpen("copy", 7, copy=CopyParams("in", "/root")))
        body = _tar("notes.txt", "héllo\n".encode() * 50_000)
        for i in range(0, len(body), 65536):
            await dmd.write(body[i:i + 65536])
        await dmd.write_eof()
        end = await handle(agent, info)
        assert end.code == "closed" and agent.accepted, end

        dmd, agent = pair(StreamOpen("copy", 7, copy=CopyParams("out", "/root/notes.txt")))
        end = await handle(agent, info)
        assert end.code == "closed"
        got = bytearray()
        while chunk := await dmd.read():
            got += chunk
        with tarfile.open(fileobj=io.BytesIO(bytes(got))) as t:
            member = t.extractfile("notes.txt")
            assert member is not None and member.read() == "héllo\n".encode() * 50_000


async def test_refusals_keep_the_runtimes_reason() -> None:
    async with FakeDriver() as fake:
        info = await _running(fake)

        handle = copy_handler(fake)
        _, agent = pair(StreamOpen("copy", 7, copy=CopyParams("out", "/no/such")))
        end = await handle(agent, info)
        assert end.code == "not_found" and "/no/such" in end.reason
        assert not agent.accepted  # refused at open: dmd answers 404 before any byte
        _, agent = pair(StreamOpen("copy", 7, copy=CopyParams("sideways", "/root")))
        assert (await handle(agent, info)).code == "refused"
        _, agent = pair(StreamOpen("copy", 7))
        assert (await handle(agent, info)).code == "refused"
        dmd, agent = pair(StreamOpen("copy", 7, copy=CopyParams("in", "relative")))
        await dmd.write_eof()
        assert (await handle(agent, info)).code == "invalid" and not agent.accepted
        fake.set_capabilities(file_copy=False)
        dmd, agent = pair(StreamOpen("copy", 7, copy=CopyParams("in", "/root")))
        await dmd.write_eof()
        assert (await handle(agent, info)).code == "unsupported"
