"""SSH and port maps in a real Chromium against a real `dmd serve --local-node` on the real
Docker Engine: add a key, create an instance with SSH and an extra port through the form, add
a port map from the instance's page, see it on the port maps page, delete it there.

Screenshots land in the test's tmp_path (shots/); look at them when the design changes.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.access.conftest import SSH_OPTIONS, test_images  # noqa: F401 (fixture: builds the images)
from tests.pages.live import Dmd
from tests.pages.live import reload_until as _reload_until
from tests.pages.test_browser import _setup_admin, _watch_console
from tests.runtime.conftest import docker_test_image  # noqa: F401 (fixture: builds the busybox image)
from tests.runtime.images import BUSYBOX_REF

pytestmark = pytest.mark.browser


async def _admin_with_a_key(dmd: Dmd, browser: Any, tmp_path: Path) -> tuple[Any, Any, list[str]]:
    """A browser logged in as the first admin, the local node online, and a key "laptop" added
    through the SSH keys page (its private half at tmp_path/k)."""
    ctx = await browser.new_context(viewport={"width": 1366, "height": 900}, locale="en-US", color_scheme="light")
    page = await ctx.new_page()
    errors = _watch_console(page)
    await _setup_admin(page, dmd)
    await _reload_until(page, "table.nodes-table .badge-online")
    await asyncio.to_thread(subprocess.run, ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "me@laptop",
                                             "-f", str(tmp_path / "k")], check=True, capture_output=True, timeout=60)
    await page.goto(f"{dmd.base}/ssh-keys")
    await page.fill("#f-public_key", (tmp_path / "k.pub").read_text())
    await page.fill("#f-name", "laptop")
    await page.click("form[action='/ssh-keys'] button[type=submit]")
    await page.wait_for_url(f"{dmd.base}/ssh-keys")
    return ctx, page, errors


async def test_port_map_from_the_instance_page(dmd_local: Dmd, browser: Any, tmp_path: Path,
                                               docker_test_image: str) -> None:  # noqa: F811
    dmd = dmd_local
    shots = tmp_path / "shots"
    ctx, page, errors = await _admin_with_a_key(dmd, browser, tmp_path)

    # The create form: SSH on by default, all keys; one extra port.
    await page.goto(f"{dmd.base}/instances/new?image={BUSYBOX_REF}")
    await _reload_until(page, f"option[value='{BUSYBOX_REF}']")
    assert await page.is_checked("input[name=ssh]") and await page.is_checked("input[name=ssh_keys][value=all]")
    await page.fill("#f-name", "shell")
    await page.fill("#f-command", "sleep\n3600")
    await page.fill("#f-port_maps", "8080/tcp")
    await page.locator("#access").screenshot(path=str(shots / "50-new-access.png"))
    await page.click("form.create-form button[type=submit]")
    await page.wait_for_url(re.compile(r".*/instances/\d+$"))
    inst_url = page.url
    await page.wait_for_selector("h1 [data-inst-status=running]", timeout=40_000)
    ssh_text = await page.inner_text("#ssh")
    assert "laptop" in ssh_text and "Which keys go in" in ssh_text

    # Add a port map from the instance's page: back on it, the map listed with its address.
    await page.fill("#f-instance_port-inst", "9000")
    await page.click("#port-maps form.map-form button[type=submit]")
    await page.wait_for_url(f"{inst_url}#port-maps")
    assert "Port 9000/tcp of shell is reachable at 127.0.0.1:" in await page.inner_text(".flashes")
    card = await page.inner_text("#port-maps table")
    assert "9000" in card and "8080" in card and "22" in card
    assert re.search(r"127\.0\.0\.1:\d+", card)
    await page.wait_for_timeout(2500)  # the SSH state settles (dm.js reloads on a change)
    await page.evaluate("window.scrollTo(0, 0)")
    await page.screenshot(path=str(shots / "51-instance-access.png"), full_page=True)

    # The port maps page lists it, with the instance linked.
    await page.goto(f"{dmd.base}/port-maps")
    row = page.locator("table.maps-table tr", has_text="9000")
    assert await row.count() == 1
    assert "shell" in await row.inner_text() and await row.locator("a[href^='/instances/']").count() == 1
    assert await page.locator("table.maps-table tbody tr").count() == 3
    await page.screenshot(path=str(shots / "52-port-maps.png"), full_page=True)
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.screenshot(path=str(shots / "53-port-maps-phone.png"), full_page=True)
    assert await page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0
    await page.goto(inst_url)
    assert await page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0
    await page.screenshot(path=str(shots / "54-instance-phone.png"), full_page=True)
    await page.set_viewport_size({"width": 1366, "height": 900})

    # Delete it there: gone from the list.
    await page.goto(f"{dmd.base}/port-maps")
    await page.locator("table.maps-table tr", has_text="9000").locator("button[type=submit]").click()
    await page.wait_for_url(f"{dmd.base}/port-maps")
    assert "no longer leads to 9000/tcp of shell" in await page.inner_text(".flashes")
    assert await page.locator("table.maps-table tr", has_text="9000").count() == 0

    # Japanese and dark.
    await page.click("a[data-theme-choice='dark']")
    await page.click("a[hreflang='ja']")
    await page.goto(inst_url)
    await page.screenshot(path=str(shots / "55-instance-access-ja-dark.png"), full_page=True)
    await page.click("a[hreflang='en']")
    await page.click("a[data-theme-choice='light']")

    # Clean up: delete the instance.
    await page.goto(inst_url)
    await page.click("a[href$='/delete']")
    await page.click("form[action$='/delete'] button[type=submit]")
    await page.wait_for_url(f"{dmd.base}/instances")
    assert errors == [], errors
    await ctx.close()


async def test_the_shown_ssh_command_logs_in(dmd_local: Dmd, browser: Any, tmp_path: Path,
                                             test_images: tuple[str, str]) -> None:  # noqa: F811
    """The newcomer's step: add a key, create an instance of an image with OpenSSH from the
    form, copy the `ssh` line the instance page shows, and log in with it."""
    openssh, _ = test_images
    dmd = dmd_local
    ctx, page, errors = await _admin_with_a_key(dmd, browser, tmp_path)

    await page.goto(f"{dmd.base}/instances/new?image={openssh}")
    await _reload_until(page, f"option[value='{openssh}']")
    await page.fill("#f-name", "box")
    await page.fill("#f-command", "sleep\ninfinity")
    await page.click("form.create-form button[type=submit]")
    await page.wait_for_url(re.compile(r".*/instances/\d+$"))
    inst_url = page.url
    await _reload_until(page, "[data-ssh-state=ready]", timeout=60)  # the badge a user waits for
    shown = (await page.inner_text("#ssh-command")).strip()
    assert re.fullmatch(r"ssh -p \d+ root@127\.0\.0\.1", shown), shown
    config = await page.inner_text("#ssh-config")
    assert "HostName 127.0.0.1" in config and "User root" in config

    argv = shlex.split(shown)
    login = await asyncio.to_thread(
        subprocess.run, [argv[0], *SSH_OPTIONS, "-i", str(tmp_path / "k"), *argv[1:], "cat /etc/hostname"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert login.returncode == 0, login.stderr
    assert login.stdout.strip() == "box"  # the instance's own hostname: logged in to the right place

    await page.goto(inst_url)
    await page.click("a[href$='/delete']")
    await page.click("form[action$='/delete'] button[type=submit]")
    await page.wait_for_url(f"{dmd.base}/instances")
    assert errors == [], errors
    await ctx.close()
