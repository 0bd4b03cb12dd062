"""The newcomer's journey in a real Chromium against a real `dmd serve` process.

Debian's chromium is driven by Playwright (never a downloaded browser). Screenshots land in
the test's tmp_path; they are there to be looked at when the design changes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.pages.live import Dmd

pytestmark = pytest.mark.browser

ADMIN_EMAIL = "admin@example.org"
ADMIN_PASSWORD = "a very long admin password"


def _watch_console(page: Any) -> list[str]:
    """Console errors (a Content-Security-Policy violation shows up here)."""
    errors: list[str] = []

    def console(msg: Any) -> None:
        if msg.type == "error":  # a failed load names its address in the location
            errors.append(f"{msg.text} at {msg.location.get('url', '?')}")

    page.on("console", console)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return errors


async def _nav_texts(page: Any) -> list[str]:
    return [t.strip() for t in await page.locator("nav.mainnav a").all_inner_texts()]


async def _bg(page: Any) -> str:
    return str(await page.evaluate("getComputedStyle(document.body).backgroundColor"))


async def _setup_admin(page: Any, dmd: Dmd) -> None:
    await page.goto(dmd.setup_link)
    await page.fill("#f-email", ADMIN_EMAIL)
    await page.fill("#f-username", "admin")
    await page.fill("#f-password", ADMIN_PASSWORD)
    await page.fill("#f-password2", ADMIN_PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{dmd.base}/nodes")


async def _login(page: Any, dmd: Dmd, email: str, password: str, lands: str = "/nodes") -> None:
    await page.goto(f"{dmd.base}/login")
    await page.fill("#f-email", email)
    await page.fill("#f-password", password)
    await page.click("form[action='/login'] button[type=submit]")
    await page.wait_for_url(f"{dmd.base}{lands}")  # administrators land on the nodes, users on instances


async def _logout(page: Any, dmd: Dmd) -> None:
    await page.click("details.usermenu summary")
    await page.click("details.usermenu form[action='/logout'] button")
    await page.wait_for_url(f"{dmd.base}/login")


async def test_newcomer_journey(dmd: Dmd, browser: Any, tmp_path: Path) -> None:
    shots = tmp_path / "shots"
    ctx = await browser.new_context(viewport={"width": 1280, "height": 860}, locale="en-US",
                                    color_scheme="light")
    page = await ctx.new_page()
    errors = _watch_console(page)

    # 1. The setup link: create the first admin, land logged in.
    await page.goto(dmd.setup_link)
    assert "Create the first administrator" in await page.inner_text("h1")
    await page.screenshot(path=str(shots / "01-setup.png"), full_page=True)
    await _setup_admin(page, dmd)
    assert await _nav_texts(page) == ["Nodes", "Instances", "Images", "SSH keys", "Port maps",
                                      "Users", "GPUs", "Audit"]
    assert "administrator account is ready" in await page.inner_text(".flashes")
    await page.screenshot(path=str(shots / "02-nodes-empty.png"), full_page=True)

    # 2. Account: create a token, see it once.
    await page.click("details.usermenu summary")
    await page.screenshot(path=str(shots / "03-usermenu.png"))
    await page.click("details.usermenu a[href='/account']")
    await page.wait_for_url(f"{dmd.base}/account")
    await page.fill("#f-name", "laptop CLI")
    await page.fill("#f-expires_in_days", "90")
    await page.click("form[action='/account/tokens'] button[type=submit]")
    await page.wait_for_url(re.compile(r".*/account(#new-token)?$"))
    secret = (await page.inner_text("#new-token-value")).strip()
    assert secret.startswith("dm_") and len(secret) > 30
    await page.screenshot(path=str(shots / "04-token-created.png"), full_page=True)
    await page.reload()
    assert await page.locator("#new-token-value").count() == 0
    assert secret not in await page.content()
    assert secret[:10] in await page.inner_text("table")

    # 3. Japanese.
    await page.click("a[hreflang='ja']")
    await page.wait_for_url(f"{dmd.base}/account")
    assert await page.get_attribute("html", "lang") == "ja"
    assert await _nav_texts(page) == ["ノード", "インスタンス", "イメージ", "SSH 鍵", "ポートマップ",
                                      "ユーザー", "GPU", "監査ログ"]
    await page.screenshot(path=str(shots / "05-account-ja.png"), full_page=True)

    # 4. Dark theme: the page background changes.
    light_bg = await _bg(page)
    await page.click("a[data-theme-choice='dark']")
    await page.wait_for_url(f"{dmd.base}/account")
    assert await page.get_attribute("html", "data-theme") == "dark"
    dark_bg = await _bg(page)
    assert dark_bg != light_bg
    await page.screenshot(path=str(shots / "06-account-ja-dark.png"), full_page=True)
    # "Auto" follows the system's preference (dark here, then light).
    await page.click("a[data-theme-choice='auto']")
    await page.wait_for_url(f"{dmd.base}/account")
    assert await _bg(page) == light_bg
    await page.emulate_media(color_scheme="dark")
    assert await _bg(page) == dark_bg
    await page.click("a[hreflang='en']")
    await page.wait_for_url(f"{dmd.base}/account")

    # 5. Create a user on /users.
    await page.click("nav.mainnav a[href='/users']")
    await page.click("a[href='/users/new']")
    await page.wait_for_url(f"{dmd.base}/users/new")
    await page.fill("#f-email", "alice@example.org")
    await page.fill("#f-username", "alice")
    await page.fill("#f-password", "alice's long password")
    await page.fill("#f-password2", "alice's long password")
    await page.fill("#f-gpu_limit", "2")
    await page.screenshot(path=str(shots / "07-user-new-dark.png"), full_page=True)
    await page.click("form[action='/users'] button[type=submit]")
    await page.wait_for_url(f"{dmd.base}/users")
    assert "The user alice has been created" in await page.inner_text(".flashes")
    assert "alice@example.org" in await page.inner_text("table")
    await page.screenshot(path=str(shots / "08-users-dark.png"), full_page=True)
    await page.emulate_media(color_scheme="light")
    await page.screenshot(path=str(shots / "09-users-light.png"), full_page=True)
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.screenshot(path=str(shots / "09-users-phone.png"), full_page=True)
    await page.set_viewport_size({"width": 1280, "height": 860})
    await page.click("table a:text('alice')")
    await page.wait_for_url(re.compile(r".*/users/\d+$"))
    await page.screenshot(path=str(shots / "10-user-edit.png"), full_page=True)
    await page.goto(f"{dmd.base}/audit")
    await page.screenshot(path=str(shots / "10-audit.png"), full_page=True)

    # 6. Log out; log in as alice: no Users in the navigation.
    await _logout(page, dmd)
    assert "You have logged out" in await page.inner_text(".flashes")
    await page.screenshot(path=str(shots / "11-login.png"), full_page=True)
    await page.fill("#f-email", "alice@example.org")
    await page.fill("#f-password", "not her password")
    await page.click("form[action='/login'] button[type=submit]")
    assert "Wrong email or password" in await page.inner_text(".alert-error")
    assert await page.input_value("#f-email") == "alice@example.org"
    assert await page.input_value("#f-password") == ""
    await page.screenshot(path=str(shots / "11-login-failed.png"), full_page=True)
    await _login(page, dmd, "alice@example.org", "alice's long password", lands="/instances")
    nav = await _nav_texts(page)
    assert "Users" not in nav and "Audit" not in nav and "Nodes" in nav
    resp = await page.goto(f"{dmd.base}/users")
    assert resp is not None and resp.status == 403
    await page.screenshot(path=str(shots / "12-forbidden.png"), full_page=True)

    # 7. A phone-sized screen.
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.goto(f"{dmd.base}/account")
    await page.screenshot(path=str(shots / "13-account-phone.png"), full_page=True)
    await page.goto(f"{dmd.base}/instances")
    await page.screenshot(path=str(shots / "14-instances-phone.png"), full_page=True)
    # Nothing sticks out sideways.
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0

    # The failed loads are the 401 (wrong password) and 403 (not an admin) pages asked for above.
    failed = "Failed to load resource: the server responded with a status of"
    assert sorted(set(errors)) == [f"{failed} 401 (Unauthorized) at {dmd.base}/login",
                                   f"{failed} 403 (Forbidden) at {dmd.base}/users"], errors
    await ctx.close()


async def test_without_javascript(dmd: Dmd, browser: Any, tmp_path: Path) -> None:
    ctx = await browser.new_context(java_script_enabled=False, viewport={"width": 1100, "height": 800})
    page = await ctx.new_page()
    await _setup_admin(page, dmd)
    # The user menu is a <details>: it opens without JavaScript too.
    await _logout(page, dmd)
    await _login(page, dmd, ADMIN_EMAIL, ADMIN_PASSWORD)
    await page.goto(f"{dmd.base}/account")
    await page.fill("#f-name", "no-js token")
    await page.click("form[action='/account/tokens'] button[type=submit]")
    await page.wait_for_url(re.compile(r".*/account(#new-token)?$"))
    secret = (await page.inner_text("#new-token-value")).strip()
    assert secret.startswith("dm_")
    # Without JavaScript there is no copy button, only the selectable secret.
    assert not await page.is_visible("button[data-copy]")
    await page.screenshot(path=str(tmp_path / "nojs-token.png"), full_page=True)
    await ctx.close()
