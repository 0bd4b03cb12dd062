"""What a dmd under test leaves on the shared Docker Engine and in the host's iptables is removed
after it, passed or failed: its containers (by their dm.installation label) and its agents'
port-forwarding chains (named after the installation). A real dmd keeps both on purpose."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import subprocess
from pathlib import Path

import aiodocker

from agent.ports.kernel import KernelForwarder

# The installations whose dmd ran in this test process: the session's sweep removes their chains
# only, so that a second test run on the same host (another checkout's) keeps its own.
SEEN: set[str] = set()


def short_of(installation: str) -> str:
    """The installation's part of a chain tag (see agent.ports.kernel)."""
    return re.sub(r"[^A-Za-z0-9]", "", installation)[:6]


def installation_of(data_dir: Path) -> str | None:
    """The installation id in a dmd data dir's SQLite database (None when there is none yet)."""
    db = data_dir / "dmd.sqlite3"
    if not db.exists():
        return None
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT value FROM settings WHERE key = 'installation_id'").fetchone()
    if row:
        SEEN.add(str(row[0]))
    return str(row[0]) if row else None


async def remove_installation(installation: str) -> None:
    async with aiodocker.Docker() as docker:
        for c in await docker.containers.list(all=True, filters={"label": [f"dm.installation={installation}"]}):
            try:
                await c.delete(force=True)
            except aiodocker.DockerError as e:
                if e.status not in (404, 409):  # gone, or its removal (by dmd itself) under way
                    raise
    proc = await asyncio.create_subprocess_exec("iptables-save", "-t", "nat", stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    short = short_of(installation)
    for tag in sorted(set(re.findall(rf"^:(DM\d+-{short})-DNAT ", out.decode(), re.M))):
        await KernelForwarder(tag).teardown()


def session_chains(tags: set[str]) -> set[str]:
    """Of ``tags``, those of installations that ran in this process."""
    ours = {short_of(i) for i in SEEN}
    return {t for t in tags if t.split("-", 1)[1] in ours}


def chain_tags() -> set[str]:
    """The tags (DM<node>-<installation>) of every DM agent's chains on this host."""
    out = subprocess.run(["iptables-save"], capture_output=True, text=True, check=False).stdout
    return set(re.findall(r"^:(DM\d+-[A-Za-z0-9]+)-[A-Z]+ ", out, re.M))


def remove_chains(tags: set[str]) -> None:
    async def main() -> None:
        for tag in sorted(tags):
            await KernelForwarder(tag).teardown()

    asyncio.run(main())
