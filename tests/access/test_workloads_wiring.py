"""SSH as the agent wires it (Workloads): instance.access through the registry-facing handler,
and the supervisor's round listing the containers once, not once per instance."""

from __future__ import annotations

import random
import secrets

from agent import protocol as p
from agent.access.ssh import SshAccess
from agent.config import AgentConfig
from agent.protocol.types import ContainerSpec
from agent.runtime.docker import DockerDriver
from agent.workloads import make_link
from tests.access.conftest import DOCKER_HOST, KeyPair, ssh
from tests.waiting import wait_for
from tests.wire import call


async def test_workloads_ssh_and_one_listing_per_supervision_round(test_images: tuple[str, str],
                                                                    keys: dict[str, KeyPair]) -> None:
    openssh, _ = test_images
    installation = secrets.token_hex(8)
    node_id = random.randint(100_000, 999_999)
    driver = DockerDriver(DOCKER_HOST)
    config = AgentConfig(server="http://127.0.0.1:9", node_id=node_id, credential=None)
    link, w = make_link(config, driver)
    link.installation_id = installation  # as the welcome would say
    access = w.feature(SshAccess)
    ids = [random.randint(1_000_000, 2_000_000) for _ in range(2)]
    try:
        for n, iid in enumerate(ids):
            spec = ContainerSpec(instance_id=iid, node_id=node_id, name=f"dmt-wire-{installation}-{n}", image=openssh,
                                 command=["sleep", "infinity"], labels={"dm.installation": installation})
            await w.ensure(p.InstanceEnsure(spec, "running"))
            reply = await call(access.handle_access, p.InstanceAccess,
                               {"instance_id": iid, "ssh": {"enabled": True, "keys": [keys["A"].public]}})
            assert reply["ssh"]["state"] == "ready", reply
        first = await driver.find_instance(ids[0])
        assert first is not None and first.ip_address
        assert (await ssh(first.ip_address, keys["A"])).ok

        # sshd dies in the first instance: one supervision round, one container listing.
        await driver.exec(first.id, ["/bin/sh", "-c", "kill $(cat /run/dm-sshd.pid)"], user="0:0")
        listings = 0
        real_list = driver.list

        async def counting_list(*a, **kw):  # type: ignore[no-untyped-def]
            nonlocal listings
            listings += 1
            return await real_list(*a, **kw)

        driver.list = counting_list  # type: ignore[method-assign]
        restarted = await access.supervise_once()
        assert set(restarted) == {ids[0]} and restarted[ids[0]]["state"] == "ready"
        assert listings == 1
        driver.list = real_list  # type: ignore[method-assign]

        async def back() -> bool:
            return (await ssh(first.ip_address or "", keys["A"])).ok

        await wait_for(back, "SSH back in the restarted instance", 10)
    finally:
        for c in await driver.list(all=True, managed_only=True):
            if c.labels.get("dm.installation") == installation:
                await driver.remove(c.id, force=True)
        await driver.close()
