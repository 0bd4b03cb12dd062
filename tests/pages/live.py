"""A real `dmd serve` process and Debian's Chromium (through Playwright) for browser tests.

Neither is ever skipped: a missing chromium or playwright fails the run (make test installs
both)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playwright import async_api

from tests.leftovers import installation_of, remove_installation

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@dataclass
class Dmd:
    base: str
    setup_link: str
    proc: asyncio.subprocess.Process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def running_dmd(tmp_path: Path, *flags: str, port: int | None = None,
                      first_start: bool = True) -> AsyncIterator[Dmd]:
    """A real dmd on a free port (or `port`) with its own data dir; stopped with SIGTERM, must
    exit 0. `first_start=False`: the data dir has users already, so dmd prints no setup link
    and is ready when it answers."""
    port = port or free_port()
    config = tmp_path / "config.json"
    config.write_text("{}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DMD_")}
    log = (tmp_path / "dmd.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dmd", "serve", "--ssh-listen", "off", "--config", str(config),
        "--listen", f"127.0.0.1:{port}",
        "--data-dir", str(tmp_path / "data"), *flags, stdout=asyncio.subprocess.PIPE, stderr=log, env=env,
    )
    assert proc.stdout is not None
    link = ""
    try:
        async with asyncio.timeout(60):
            while first_start and not link:
                line = (await proc.stdout.readline()).decode()
                if not line:
                    raise AssertionError("dmd exited before printing the setup link; see dmd.log")
                m = re.search(r"Set up DM: (\S+)", line)
                link = m.group(1) if m else ""
            while not first_start and not await _answers(f"http://127.0.0.1:{port}/api/v1/health"):
                assert proc.returncode is None, "dmd exited at start; see dmd.log"
                await asyncio.sleep(0.1)
        yield Dmd(f"http://127.0.0.1:{port}", link, proc)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            code = await proc.wait()
        log.close()
        installation = await asyncio.to_thread(installation_of, tmp_path / "data")
        if installation is not None and "--local-node" in flags:
            await remove_installation(installation)
    assert code == 0, (tmp_path / "dmd.log").read_text()[-3000:]


async def _answers(url: str) -> bool:
    import aiohttp

    try:
        async with aiohttp.ClientSession() as s, s.get(url) as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: make test installs Debian's chromium"
    async with async_api.async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            await b.close()


async def reload_until(page: Any, selector: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while await page.locator(selector).count() == 0:
        assert time.monotonic() < deadline, f"{selector} did not appear on {page.url}"
        await asyncio.sleep(0.5)
        await page.reload()
