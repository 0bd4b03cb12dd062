"""The instances part of the newcomer's journey in a real Chromium against a real
`dmd serve --local-node` on the real Docker Engine: find the busybox image on the Images
page, create an instance from it through the form, watch it become running (dm.js polls
the API), follow its logs as they stream, stop it, delete it, and see it gone.

Screenshots land in the test's tmp_path (shots/); look at them when the design changes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.instances.test_gpus_and_reconcile import GpuNode, a5000_gpus
from tests.pages.live import Dmd
from tests.pages.live import reload_until as _reload_until
from tests.pages.test_browser import _setup_admin, _watch_console
from tests.runtime.conftest import docker_test_image  # noqa: F401 (fixture: builds the busybox image)
from tests.runtime.images import BUSYBOX_REF

pytestmark = pytest.mark.browser


async def _deleted(page: Any, name: str) -> None:
    """The list shows the instance go: dm.js marks its row deleted (or it was gone already)."""
    await page.wait_for_function(
        """(name) => {
          const row = [...document.querySelectorAll("tr[data-instance-id]")].find((r) => r.textContent.includes(name));
          return !row || row.querySelector("[data-inst-status=deleted]") !== null;
        }""", arg=name, timeout=30_000)


async def test_instance_journey(dmd_local: Dmd, browser: Any, tmp_path: Path, docker_test_image: str) -> None:  # noqa: F811
    dmd = dmd_local
    shots = tmp_path / "shots"
    ctx = await browser.new_context(viewport={"width": 1366, "height": 900}, locale="en-US", color_scheme="light")
    page = await ctx.new_page()
    errors = _watch_console(page)
    await _setup_admin(page, dmd)
    await _reload_until(page, "table.nodes-table .badge-online")

    # 1. Images: the local node's catalogue holds the busybox image; "Run" starts the form with it.
    await page.goto(f"{dmd.base}/images")
    row = f"tr:has(code.ref:text-is('{BUSYBOX_REF}'))"
    await _reload_until(page, row)
    assert "found on the node" in await page.inner_text(row)
    await page.screenshot(path=str(shots / "30-images.png"), full_page=True)
    await page.click(f"{row} a:has-text('Run')")
    await page.wait_for_url(re.compile(r".*/instances/new\?.*"))
    assert await page.eval_on_selector("#f-image", "el => el.value") == BUSYBOX_REF
    cap = await page.inner_text("table.capacity-table")
    assert "Online" in cap and "GiB" in cap, cap

    # 2. The form: more CPUs than the node has first (shown again with the input kept), then a good one.
    command = "sh\n-c\necho '<b>not bold</b>'; i=0; while true; do i=$((i+1)); echo tick $i; sleep 1; done"
    await page.fill("#f-name", "hello")
    await page.fill("#f-command", command)
    await page.fill("#f-env", "GREETING=hello")
    await page.fill("#f-cpus", "1000")
    await page.fill("#f-memory_mb", "64")
    await page.click("form.create-form button[type=submit]")
    await page.wait_for_selector(".alert-error")
    assert "No node can take this instance" in await page.inner_text(".alert-error")
    assert await page.input_value("#f-command") == command and await page.input_value("#f-name") == "hello"
    assert await page.eval_on_selector("#f-image", "el => el.value") == BUSYBOX_REF
    await page.screenshot(path=str(shots / "31-new-instance-error.png"), full_page=True)
    await page.fill("#f-cpus", "0.5")
    await page.click("form.create-form button[type=submit]")
    await page.wait_for_url(re.compile(r".*/instances/\d+$"))
    inst_url = page.url
    hello_id = int(inst_url.rsplit("/", 1)[1])
    assert "has been created" in await page.inner_text(".flashes")

    # 3. It becomes running without a reload (dm.js polls the API every 2 s).
    await page.wait_for_selector("h1 [data-inst-status=running]", timeout=40_000)
    assert "Running" in await page.inner_text("h1")
    await page.screenshot(path=str(shots / "32-instance-running.png"), full_page=True)

    # 4. Logs: follow them as they stream; markup in them stays text.
    follow = page.locator("#logs-follow")
    assert await follow.is_visible()
    await follow.click()
    await page.wait_for_function(
        "() => /tick [3-9]/.test(document.getElementById('logs-text').textContent)", timeout=30_000)
    first = await page.inner_text("#logs-text")
    await page.wait_for_function(
        "(n) => (document.getElementById('logs-text').textContent.match(/tick/g) || []).length > n",
        arg=first.count("tick"), timeout=15_000)
    assert "<b>not bold</b>" in await page.inner_text("#logs-text")
    assert await page.locator("#logs-text b").count() == 0
    assert await follow.get_attribute("aria-pressed") == "true"
    await page.screenshot(path=str(shots / "33-logs-following.png"), full_page=True)
    await follow.click()
    await page.wait_for_function("() => document.getElementById('logs-follow').getAttribute('aria-pressed') "
                                 "=== 'false'")

    # Dark theme and Japanese.
    await page.click("a[data-theme-choice='dark']")
    await page.wait_for_url(inst_url)
    await page.screenshot(path=str(shots / "34-instance-dark.png"), full_page=True)
    await page.click("a[hreflang='ja']")
    await page.wait_for_url(inst_url)
    assert "実行中" in await page.inner_text("h1") and "ログ" in await page.inner_text("#logs")
    await page.screenshot(path=str(shots / "35-instance-ja-dark.png"), full_page=True)
    await page.goto(f"{dmd.base}/instances/new")
    await page.screenshot(path=str(shots / "36-new-ja-dark.png"), full_page=True)
    await page.goto(f"{dmd.base}/images")
    await page.screenshot(path=str(shots / "37-images-ja-dark.png"), full_page=True)
    await page.click("a[hreflang='en']")
    await page.click("a[data-theme-choice='light']")
    await page.goto(inst_url)

    # 5. Stop: the page comes back with a message; the badge turns to stopped by itself.
    await page.click("form[action$='/stop'] button")
    await page.wait_for_url(inst_url)
    assert "is stopping" in await page.inner_text(".flashes")
    await page.wait_for_selector("h1 [data-inst-status=stopped]", timeout=30_000)
    assert await page.locator("form[action$='/start'] button").count() == 1
    await page.screenshot(path=str(shots / "38-instance-stopped.png"), full_page=True)

    # The list, on a phone too.
    await page.goto(f"{dmd.base}/instances")
    assert "hello" in await page.inner_text("table.instances-table")
    await page.screenshot(path=str(shots / "39-instances.png"), full_page=True)
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.screenshot(path=str(shots / "40-instances-phone.png"), full_page=True)
    assert await page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0
    await page.goto(f"{dmd.base}/instances/new")
    await page.screenshot(path=str(shots / "41-new-phone.png"), full_page=True)
    assert await page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0
    await page.goto(f"{dmd.base}/images")
    await page.screenshot(path=str(shots / "42-images-phone.png"), full_page=True)
    assert await page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0
    await page.set_viewport_size({"width": 1366, "height": 900})

    # 6. Delete, after the confirmation page; the list shows it go.
    await page.goto(inst_url)
    await page.click("a[href$='/delete']")
    await page.wait_for_url(re.compile(r".*/instances/\d+/delete$"))
    await page.screenshot(path=str(shots / "43-delete-confirm.png"), full_page=True)
    await page.click("form[action$='/delete'] button[type=submit]")
    await page.wait_for_url(f"{dmd.base}/instances")
    assert "is being deleted" in await page.inner_text(".flashes")
    await _deleted(page, "hello")
    await page.reload()
    assert await page.locator("table.instances-table").count() == 0
    assert "No instances yet" in await page.inner_text("main")
    await page.screenshot(path=str(shots / "44-instances-empty.png"), full_page=True)

    # 7. A GPU machine (a fake agent with the GPUs of a real nvidia-smi): the form shows its free
    #    GPUs as boxes to tick; the instance holds the ticked one; deleting frees it.
    await page.goto(f"{dmd.base}/nodes")
    await page.fill("#f-name", "gpu-box")
    await page.click("form[action='/nodes'] button[type=submit]")
    await page.wait_for_url(re.compile(r".*/nodes/\d+$"))
    token = (await page.inner_text("#join-command")).split()[-1]
    async with aiohttp.ClientSession() as s:
        joined = await (await s.post(f"{dmd.base}/api/v1/nodes/join", json={"token": token})).json()
    gpus = a5000_gpus()
    agent = GpuNode(dmd.base, joined["credential"], joined["node_id"], gpus=gpus)
    await agent.start()
    try:
        await page.goto(f"{dmd.base}/instances/new")
        await _reload_until(page, "option[value='cuda:12']")
        gpu_row = f"table.capacity-table tr[data-node-id='{agent.node_id}']"
        assert "2 of 2 free" in await page.inner_text(gpu_row)
        await page.fill("#f-name", "trainer")
        await page.select_option("#f-image", "cuda:12")
        await page.check(f"{gpu_row} input[value='{gpus[1]['uuid']}']")
        await page.screenshot(path=str(shots / "45-new-gpu.png"), full_page=True)
        await page.click("form.create-form button[type=submit]")
        await page.wait_for_url(re.compile(r".*/instances/\d+$"))
        await page.wait_for_selector("h1 [data-inst-status=running]", timeout=30_000)
        assert gpus[1]["uuid"] in await page.inner_text("#gpus")
        await page.screenshot(path=str(shots / "46-instance-gpu.png"), full_page=True)
        await page.click("a[data-theme-choice='dark']")
        await page.goto(f"{dmd.base}/instances/new")
        assert "1 of 2 free" in await page.inner_text(gpu_row)
        await page.screenshot(path=str(shots / "47-new-gpu-dark.png"), full_page=True)
        await page.goto(f"{dmd.base}/instances")
        await page.click("a:has-text('trainer')")
        await page.click("a[href$='/delete']")
        await page.click("form[action$='/delete'] button[type=submit]")
        await page.wait_for_url(f"{dmd.base}/instances")
        await _deleted(page, "trainer")
        await page.goto(f"{dmd.base}/instances/new")
        assert "2 of 2 free" in await page.inner_text(gpu_row)
    finally:
        await agent.close()

    # The only failed loads, each named: the form refused above (shown again with a 409), and
    # "hello"'s own address in the API, which answers 404 once it is gone: that is how dm.js's poll
    # on its page and its row learns of the delete (it may have been gone before a poll asked).
    refused = f"Failed to load resource: the server responded with a status of 409 (Conflict) at {dmd.base}/instances"
    gone = ("Failed to load resource: the server responded with a status of 404 (Not Found) at "
            f"{dmd.base}/api/v1/instances/{hello_id}")
    assert errors.count(refused) == 1 and set(errors) <= {refused, gone}, errors
    await ctx.close()
