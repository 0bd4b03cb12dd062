"""What the gateway refuses, with the reason the real client prints: destinations that are not
an instance the user may use (unknown, another user's, ambiguous), ports other than 22, an
instance that does not run, oversized names, remote forwarding; and `dmd ssh-config` / GET
/api/v1/ssh/config, which list exactly the instances the user may use."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from dmd.core import DM
from dmd.db.schema import instances
from tests.databases import every_database  # noqa: F401 (fixture: resolution and config on all three databases)
from tests.ssh.conftest import Gateway, Run, add_instance, scripted_node


async def forward(gw: Gateway, user: str, host: str, port: int = 22) -> str:
    """`ssh -W host:port` through the gateway (what ProxyJump runs); the client's stderr."""
    got = await gw.ssh(user, user, "-W", f"{host}:{port}")
    assert got.returncode == 255, (got.returncode, got.stdout, got.stderr)
    return got.stderr


async def test_destinations_resolve_only_among_the_users_instances(gateway: Gateway) -> None:
    node = await scripted_node(gateway)
    alices = await add_instance(gateway, "alice", node, "train")
    bobs = await add_instance(gateway, "bob", node, "train")
    await add_instance(gateway, "bob", node, "other")

    err = await forward(gateway, "alice", "nosuch")
    assert "no instance 'nosuch' among yours" in err, err
    # Bob's instances are not alice's to name, by name or by id (no hint that they exist).
    assert "no instance 'other' among yours" in await forward(gateway, "alice", "other")
    assert f"no instance '{bobs}' among yours" in await forward(gateway, "alice", str(bobs))
    # alice's own, by name or id: found; refused only because it does not run (the scripted
    # agent runs nothing): the reason names it.
    for name in ("train", str(alices)):
        err = await forward(gateway, "alice", name)
        assert "train is not running" in err, err
    # An administrator may use both: the name is ambiguous, and the candidates are listed.
    err = await forward(gateway, "boss", "train")
    assert "names several instances" in err and f"id {alices}, owner alice" in err and f"id {bobs}, owner bob" in err
    # Only port 22, whatever the instance.
    err = await forward(gateway, "alice", "train", 8888)
    assert "forwards only to port 22" in err and "ssh -L 8888:localhost:8888" in err, err
    # Oversized destinations are refused before any lookup.
    assert "longer than any instance name" in await forward(gateway, "alice", "x" * 300)


async def test_remote_forwarding_is_refused(gateway: Gateway) -> None:
    got = await gateway.ssh("alice", "alice", "-N", "-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:9")
    assert got.returncode == 255 and "remote port forwarding failed" in got.stderr.lower(), got.stderr


async def test_ssh_config_lists_the_users_instances_with_the_keys_to_trust(gateway: Gateway) -> None:
    node = await scripted_node(gateway)
    alices = await add_instance(gateway, "alice", node, "train")
    bobs = await add_instance(gateway, "bob", node, "train")
    await add_instance(gateway, "bob", node, "eval")
    addr = await gateway.api("GET", "/ssh/gateway", "alice")

    mine = await gateway.api("GET", "/ssh/config", "alice")
    assert mine["instances"] == 1
    text = mine["config"]
    assert "Host train\n    HostName train\n    User root\n" in text
    assert f"ProxyJump alice@127.0.0.1:{gateway.port}" in text
    assert "UserKnownHostsFile ~/.ssh/dm_known_hosts" in text and "eval" not in text
    assert addr["known_hosts"] in mine["known_hosts"].splitlines()
    # An administrator's config reaches same-named instances by id.
    boss = await gateway.api("GET", "/ssh/config", "boss")
    assert f"Host train-{alices}\n    HostName {alices}\n" in boss["config"]
    assert f"Host train-{bobs}\n    HostName {bobs}\n" in boss["config"] and "Host eval\n" in boss["config"]
    # The known_hosts path goes into the config as given; anything that could break out of the
    # line is refused.
    custom = await gateway.api("GET", "/ssh/config?known_hosts_path=/tmp/dm-kh", "alice")
    assert "UserKnownHostsFile /tmp/dm-kh" in custom["config"]
    for bad in ("a b", "x%0AProxyCommand%20sh", "'q'"):
        r = await gateway.client.get(f"/api/v1/ssh/config?known_hosts_path={bad}", headers=gateway.tokens["alice"])
        assert r.status == 422, (bad, await r.text())


async def test_dmd_ssh_config_on_a_laptop_prints_the_config_and_saves_the_keys(gateway: Gateway,
                                                                               tmp_path: Path) -> None:
    node = await scripted_node(gateway)
    await add_instance(gateway, "alice", node, "train")
    known = tmp_path / "laptop" / "dm_known_hosts"
    base = str(gateway.client.make_url("")).rstrip("/")
    token = gateway.tokens["alice"]["Authorization"].removeprefix("Bearer ")
    env = {**os.environ, "DM_TOKEN": token, "HOME": "/nonexistent"}
    got = await run_cli(["ssh-config", "--url", base, "--known-hosts", str(known)], env)
    assert got.returncode == 0, got.stderr
    api = await gateway.api("GET", f"/ssh/config?known_hosts_path={known}", "alice")
    assert got.stdout == api["config"]
    assert known.read_text() == api["known_hosts"]
    # A bad token: a clear reason, nothing written.
    (tmp_path / "other").mkdir()
    got = await run_cli(["ssh-config", "--url", base, "--known-hosts", str(tmp_path / "other" / "kh")],
                        {**env, "DM_TOKEN": "dm_" + "x" * 40})
    assert got.returncode == 1 and "401" in got.stderr and not (tmp_path / "other" / "kh").exists()


async def run_cli(args: list[str], env: dict[str, str]) -> Run:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "dmd", *args, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return Run(proc.returncode if proc.returncode is not None else -1, out.decode(), err.decode())


async def test_an_oversized_terminal_is_refused_and_the_connection_goes_on(gateway: Gateway) -> None:
    """A pty request beyond any screen (asyncssh as the client: OpenSSH sends its real size)."""
    import asyncssh

    known = asyncssh.import_known_hosts(gateway.known_hosts.read_text())
    async with asyncssh.connect("127.0.0.1", gateway.port, username="alice", known_hosts=known,
                                client_keys=[str(gateway.keys["alice"].path)], agent_path=None) as conn:
        try:
            await conn.run("true", term_type="xterm", term_size=(100_000, 100_000), check=False)
        except asyncssh.ChannelOpenError:
            pass
        else:
            raise AssertionError("an oversized pty was accepted")
        # The same connection, a sane request: the help, exit 0.
        got = await conn.run("true", check=False)
        assert got.exit_status == 0 and "Hello alice" in str(got.stdout)


async def test_the_instance_page_shows_the_way_through_the_gateway(gateway: Gateway) -> None:
    from tests.conftest import login

    node = await scripted_node(gateway)
    iid = await add_instance(gateway, "alice", node, "train")
    await login(gateway.client, "alice@example.org")
    page = await (await gateway.client.get(f"/instances/{iid}")).text()
    assert "ssh -J" not in page  # not running (the scripted agent runs nothing): no line that cannot work
    async with gateway.client.app[DM].db.begin() as conn:  # as the agent reports it once it runs
        await conn.execute(instances.update().where(instances.c.id == iid).values(status="running"))
    page = await (await gateway.client.get(f"/instances/{iid}")).text()
    assert f"ssh -J alice@127.0.0.1:{gateway.port} root@train" in page
    # An administrator looking at it reaches it by id (names are unique per owner only).
    await login(gateway.client, "boss@example.org")
    page = await (await gateway.client.get(f"/instances/{iid}")).text()
    assert f"ssh -J boss@127.0.0.1:{gateway.port} root@{iid}" in page
