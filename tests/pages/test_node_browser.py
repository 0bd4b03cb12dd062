"""The nodes part of the newcomer's journey in a real Chromium against a real
`dmd serve --local-node`: the local node comes online with its CPU and memory, its page
shows facts and live metrics (refreshed by dm.js), and a second machine joins with the
`dmc join` line copied from the page and comes online by itself.

Screenshots land in the test's tmp_path (shots/); look at them when the design changes.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent import protocol as p
from tests.nodes.helpers import FakeAgent
from tests.pages.live import Dmd
from tests.pages.live import reload_until as _reload_until
from tests.pages.test_browser import _setup_admin, _watch_console

pytestmark = pytest.mark.browser

from tests.pages.test_node_pages import _facts, _metrics  # noqa: E402


async def _dmc(tmp_path: Path, *args: str) -> asyncio.subprocess.Process:
    """The real agent command line (what the dmc binary runs), logging to a file."""
    log = (tmp_path / "dmc.log").open("ab")
    try:
        return await asyncio.create_subprocess_exec(sys.executable, "-m", "agent", *args,
                                                    stdout=log, stderr=log)
    finally:
        log.close()


async def test_nodes_journey(dmd_local: Dmd, browser: Any, tmp_path: Path) -> None:
    dmd = dmd_local
    shots = tmp_path / "shots"
    ctx = await browser.new_context(viewport={"width": 1366, "height": 900}, locale="en-US",
                                    color_scheme="light")
    page = await ctx.new_page()
    errors = _watch_console(page)
    await _setup_admin(page, dmd)

    # 1. Nodes: the local node comes online, with its CPU and memory.
    assert await page.get_attribute("nav.mainnav a[href='/nodes']", "aria-current") == "page"
    await _reload_until(page, "table.nodes-table .badge-online")
    row = page.locator("table.nodes-table tbody tr").first
    text = await row.inner_text()
    assert "Online" in text and "this machine" in text
    assert re.search(r"\d+ CPUs", text) and "GiB" in text and "free" in text, text
    await page.screenshot(path=str(shots / "20-nodes.png"), full_page=True)

    # 2. Its page: facts, GPUs (none here), live metrics with a history line.
    await row.locator("a.strong").click()
    await page.wait_for_url(re.compile(r".*/nodes/\d+$"))
    node_url = page.url
    await _reload_until(page, "#metrics [data-metric=cpu_pct]")
    facts = await page.inner_text("section[aria-labelledby=facts-h]")
    assert "Host name" in facts and "Kernel" in facts and re.search(r"\d+ CPUs", facts)
    assert await page.locator("#gpus").count() == 1
    assert await page.locator("#manage form[action$='/cordon']").count() == 1
    assert await page.locator("#sharing form[action$='/shares']").count() == 1
    await page.screenshot(path=str(shots / "21-node-local.png"), full_page=True)
    # dm.js refreshes the figures from the API: the sample time becomes a clock time.
    await page.wait_for_function(
        "() => /\\d+:\\d\\d/.test(document.querySelector('[data-metric=at]').textContent)", timeout=25_000)

    # Dark theme and Japanese.
    await page.click("a[data-theme-choice='dark']")
    await page.wait_for_url(node_url)
    await page.screenshot(path=str(shots / "22-node-local-dark.png"), full_page=True)
    await page.click("a[hreflang='ja']")
    await page.wait_for_url(node_url)
    assert "ライブメトリクス" in await page.inner_text("#metrics")
    await page.screenshot(path=str(shots / "23-node-local-ja-dark.png"), full_page=True)
    await page.click("a[hreflang='en']")
    await page.click("a[data-theme-choice='light']")

    # 3. Add a node: the join command is shown once, with a copy button and what to do next.
    await page.goto(f"{dmd.base}/nodes")
    await page.fill("#f-name", "second-machine")
    await page.click("form[action='/nodes'] button[type=submit]")
    await page.wait_for_url(re.compile(r".*/nodes/\d+$"))
    command = (await page.inner_text("#join-command")).strip()
    m = re.fullmatch(r"dmc join (\S+) (dmj_\S+)", command)
    assert m and m.group(1) == dmd.base, command
    assert await page.is_visible("button[data-copy=join-command]")  # 127.0.0.1 is a secure context
    box = await page.inner_text("#join")
    assert "dmc run" in box and "systemctl enable --now dmc" in box and "within seconds" in box
    await page.screenshot(path=str(shots / "24-node-added.png"), full_page=True)

    # 4. The second machine: `dmc join …` then `dmc run`; the open page turns online by itself.
    agent_config = tmp_path / "dmc" / "config.json"
    join = await _dmc(tmp_path, "join", m.group(1), m.group(2), "--config", str(agent_config),
                      "--hostname", "second-machine")
    assert await asyncio.wait_for(join.wait(), 30) == 0, (tmp_path / "dmc.log").read_text()
    run = await _dmc(tmp_path, "run", "--config", str(agent_config))
    try:
        await page.wait_for_selector("h1 .badge-online", timeout=30_000)
        await page.wait_for_selector("#metrics [data-metric=cpu_pct]", timeout=30_000)
        assert await page.locator("#join-command").count() == 0  # shown once
        await page.screenshot(path=str(shots / "25-second-online.png"), full_page=True)
        await page.goto(f"{dmd.base}/nodes")
        assert await page.locator("table.nodes-table .badge-online").count() == 2
        await page.set_viewport_size({"width": 390, "height": 844})
        await page.screenshot(path=str(shots / "26-nodes-phone.png"), full_page=True)
        overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0
    finally:
        run.send_signal(signal.SIGTERM)
        await asyncio.wait_for(run.wait(), 30)

    # 5. A GPU machine (a FakeAgent speaking the real protocol, with facts from a real
    #    nvidia-smi): the GPU table and the GPU gauge, light and dark.
    await page.set_viewport_size({"width": 1366, "height": 900})
    await page.fill("#f-name", "gpu-box")
    await page.click("form[action='/nodes'] button[type=submit]")
    await page.wait_for_url(re.compile(r".*/nodes/\d+$"))
    token = (await page.inner_text("#join-command")).split()[-1]
    async with aiohttp.ClientSession() as s:
        r = await s.post(f"{dmd.base}/api/v1/nodes/join", json={"token": token, "hostname": "gpu-box"})
        joined = await r.json()
    agent = FakeAgent(dmd.base, joined["credential"], joined["node_id"])
    try:
        await agent.connect(_facts())
        for cpu, gpu in ((20.0, 35.0), (55.0, 60.0), (41.0, 92.0)):
            await agent.send(p.METRICS, _metrics(cpu, gpu))
            await asyncio.sleep(0.3)
        await page.wait_for_selector("h1 .badge-online", timeout=30_000)
        await _reload_until(page, "#metrics [data-metric=gpu_util]")
        assert (await page.inner_text("#gpus")).count("NVIDIA RTX A5000") == 2
        await page.screenshot(path=str(shots / "27-gpu-node.png"), full_page=True)
        await page.click("a[data-theme-choice='dark']")
        await page.wait_for_url(re.compile(r".*/nodes/\d+$"))
        await page.screenshot(path=str(shots / "28-gpu-node-dark.png"), full_page=True)
        await page.goto(f"{dmd.base}/nodes")
        await page.screenshot(path=str(shots / "29-nodes-dark.png"), full_page=True)
    finally:
        await agent.close()

    assert errors == [], errors
    await ctx.close()


async def test_node_pages_without_javascript(dmd_local: Dmd, browser: Any, tmp_path: Path) -> None:
    ctx = await browser.new_context(java_script_enabled=False, viewport={"width": 1100, "height": 800})
    page = await ctx.new_page()
    await _setup_admin(page, dmd_local)
    await page.fill("#f-name", "nojs-node")
    await page.click("form[action='/nodes'] button[type=submit]")
    await page.wait_for_url(re.compile(r".*/nodes/\d+$"))
    assert (await page.inner_text("#join-command")).startswith("dmc join ")
    assert not await page.is_visible("button[data-copy]")
    await page.click("form[action$='/cordon'] button")
    assert "is cordoned" in await page.inner_text(".flashes")
    await page.click("a[href$='/delete']")
    await page.click("form[action$='/delete'] button[type=submit]")
    await page.wait_for_url(f"{dmd_local.base}/nodes")
    assert "has been deleted" in await page.inner_text(".flashes")
    await page.screenshot(path=str(tmp_path / "nojs-nodes.png"), full_page=True)
    await ctx.close()
