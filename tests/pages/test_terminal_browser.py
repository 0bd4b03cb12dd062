"""The browser terminal and files in a real Chromium against a real `dmd serve --local-node` on
the real Docker Engine: open a terminal on a busybox instance and compute in its shell, follow
the window's size (`stty size`), UTF-8 both ways, copy and paste (also a paste larger than a
frame), a second terminal beside the first, the message when the shell ends and Reconnect; upload
a file and read it in the shell; download a folder as tar through the page's form; missing paths;
the message when the instance stops, and when a reconnection is refused.

And who may not: a second (plain) user sees no instance page (so no terminal) and their cookie
opens no WebSocket (403); another site's Origin and a missing CSRF token are refused (403) with
the owner's own cookie.

Screenshots land in the test's tmp_path (shots/).
"""

from __future__ import annotations

import asyncio
import io
import re
import secrets
import tarfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.pages.live import Dmd
from tests.pages.live import reload_until as _reload_until
from tests.pages.test_browser import _setup_admin, _watch_console
from tests.runtime.conftest import docker_test_image  # noqa: F401 (fixture: builds the busybox image)
from tests.runtime.images import BUSYBOX_REF

pytestmark = pytest.mark.browser

UNICODE = "héllo 日本語 ✓"
BOB_EMAIL, BOB_PASSWORD = "bob@example.org", "bob's long enough password"
VENDOR = Path(__file__).resolve().parents[2] / "web" / "static" / "vendor" / "xterm" / "xterm.js"


def screen(n: int = 0) -> str:
    """JavaScript: the text on terminal n's screen (xterm's DOM renderer: one div per row)."""
    return f"() => [...document.querySelectorAll('#terminals .term')[{n}].querySelectorAll('.xterm-rows > div')]" \
           ".map((r) => r.textContent.replace(/\\u00a0/g, ' ')).join('\\n')"


async def wait_text(page: Any, pattern: str, n: int = 0, timeout: float = 20.0) -> str:
    """Wait until terminal n's screen matches the regular expression; returns the screen."""
    deadline = time.monotonic() + timeout
    while True:
        text = await page.evaluate(screen(n))
        if re.search(pattern, text):
            return str(text)
        assert time.monotonic() < deadline, f"{pattern!r} never appeared on terminal {n}:\n{text}"
        await asyncio.sleep(0.2)


async def run(page: Any, line: str, n: int = 0) -> None:
    await page.locator("#terminals .term").nth(n).locator(".xterm-helper-textarea").focus()
    await page.keyboard.type(line)
    await page.keyboard.press("Enter")


async def stty_size(page: Any, n: int = 0) -> tuple[int, int]:
    """(rows, cols) as the shell's terminal has them, asked with a marker to find the answer."""
    mark = secrets.token_hex(3)
    await run(page, f"echo {mark}-$(stty size | tr ' ' x)-end", n)
    text = await wait_text(page, rf"{mark}-\d+x\d+-end", n)
    rows, cols = re.findall(rf"{mark}-(\d+)x(\d+)-end", text)[-1]
    return int(rows), int(cols)


def tar_members(data: bytes) -> dict[str, bytes | None]:
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        return {m.name.rstrip("/"): t.extractfile(m).read() if m.isfile() else None  # type: ignore[union-attr]
                for m in t.getmembers()}


async def csrf_of(ctx: Any) -> str:
    return next(c["value"] for c in await ctx.cookies() if c["name"] == "dm_csrf")


async def ws_status(dmd: Dmd, ctx: Any, iid: int, *, origin: str | None, csrf: str | None) -> int:
    """The HTTP status of a WebSocket handshake to the terminal with the context's cookies
    (101 when it opened)."""
    cookies = "; ".join(f"{c['name']}={c['value']}" for c in await ctx.cookies())
    headers = {"Cookie": cookies, **({"Origin": origin} if origin else {})}
    url = f"{dmd.base.replace('http', 'ws', 1)}/instances/{iid}/terminal/ws" + (f"?csrf={csrf}" if csrf else "")
    async with aiohttp.ClientSession() as s:
        try:
            ws = await s.ws_connect(url, headers=headers)
        except aiohttp.WSServerHandshakeError as e:
            return e.status
        await ws.close()
        return 101


async def test_terminal_and_files(dmd_local: Dmd, browser: Any, tmp_path: Path, docker_test_image: str) -> None:  # noqa: F811
    assert VENDOR.exists(), "web/static/vendor/xterm is missing: `make vendor` (make run and make test do it)"
    dmd = dmd_local
    shots = tmp_path / "shots"
    ctx = await browser.new_context(viewport={"width": 1366, "height": 900}, locale="en-US", color_scheme="light")
    await ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=dmd.base)
    page = await ctx.new_page()
    errors = _watch_console(page)
    await _setup_admin(page, dmd)
    await _reload_until(page, "table.nodes-table .badge-online")
    csrf = {"X-CSRF-Token": await csrf_of(ctx)}

    # An instance (busybox, a shell's worth of tools) and a second, plain user.
    r = await page.request.post(f"{dmd.base}/api/v1/instances", headers=csrf, data={
        "name": "term", "image": BUSYBOX_REF, "command": ["sleep", "3600"], "cpus": 0.5, "memory_mb": 64,
        "ssh": False})
    assert r.status == 201, await r.text()
    iid = (await r.json())["id"]
    r = await page.request.post(f"{dmd.base}/api/v1/users", headers=csrf, data={
        "email": BOB_EMAIL, "username": "bob", "password": BOB_PASSWORD})
    assert r.status == 201, await r.text()
    inst_url = f"{dmd.base}/instances/{iid}"
    await page.goto(inst_url)
    await _reload_until(page, "h1 [data-inst-status=running]", timeout=60)

    # 1. A terminal: the shell computes; the terminal fills its box.
    await page.click("#term-open")
    await page.wait_for_selector("#terminals .term[data-state=open]", timeout=20_000)
    await run(page, "echo dm-$((6*7))")
    await wait_text(page, r"(?m)^dm-42\s*$")
    await page.screenshot(path=str(shots / "50-terminal.png"), full_page=True)

    # 2. Its size follows the window (fit addon -> resize control -> the exec's TTY).
    rows, cols = await stty_size(page)
    shown_rows = await page.locator("#terminals .term >> nth=0").locator(".xterm-rows > div").count()
    assert rows == shown_rows and cols > 100, (rows, cols, shown_rows)
    await page.set_viewport_size({"width": 800, "height": 900})
    deadline = time.monotonic() + 15
    while (now := await stty_size(page)) == (rows, cols):
        assert time.monotonic() < deadline, "stty size did not follow the window"
        await asyncio.sleep(0.3)
    assert now[1] < cols and now[0] == rows, (now, rows, cols)
    await page.set_viewport_size({"width": 1366, "height": 900})

    # 3. UTF-8 both ways; a paste (Ctrl+Shift+V) is input like typing.
    await run(page, f"echo '{UNICODE}' | wc -c")
    await wait_text(page, rf"(?m)^\s*{len(UNICODE.encode()) + 1}\s*$")  # bytes: what was typed went as UTF-8
    await run(page, f"echo '{UNICODE}'")
    await wait_text(page, rf"(?m)^{UNICODE}\s*$")
    await page.evaluate("navigator.clipboard.writeText('echo pasted-$((3*3))')")
    await page.locator("#terminals .term >> nth=0").locator(".xterm-helper-textarea").focus()
    await page.keyboard.press("Control+Shift+V")
    await page.keyboard.press("Enter")
    await wait_text(page, r"(?m)^pasted-9\s*$")
    # Copy: a double-click selects a word (xterm's selection), Ctrl+Shift+C puts it on the clipboard.
    await page.evaluate("navigator.clipboard.writeText('')")
    row = page.locator("#terminals .term >> nth=0").locator(".xterm-rows > div", has_text="pasted-9").first
    await row.evaluate("(el) => el.scrollIntoView({block: 'center'})")  # clear of the sticky top bar
    box = await row.bounding_box()
    assert box is not None
    await page.mouse.dblclick(box["x"] + 12, box["y"] + box["height"] / 2)  # on the screen layer above the rows
    await page.keyboard.press("Control+Shift+C")
    deadline = time.monotonic() + 5
    while (copied := await page.evaluate("navigator.clipboard.readText()")) != "pasted-9":
        assert time.monotonic() < deadline, repr(copied)
        await asyncio.sleep(0.1)

    # A paste larger than a frame may be (64 KiB) goes out in pieces, all of it.
    await page.evaluate("navigator.clipboard.writeText(('p'.repeat(99) + '\\n').repeat(1000))")
    await run(page, "cat > /tmp/pasted")
    await page.keyboard.press("Control+Shift+V")
    await page.keyboard.press("Control+D")
    await run(page, "echo size-$(wc -c < /tmp/pasted)")
    await wait_text(page, r"(?m)^size-100000\s*$", timeout=40)
    await page.keyboard.type("clear\n")

    # 4. A second terminal beside the first: its own shell.
    await page.click("#term-open")
    await page.wait_for_selector("#terminals .term:nth-child(2)[data-state=open]", timeout=20_000)
    await run(page, "echo second-$((1+1))", 1)
    await wait_text(page, r"(?m)^second-2\s*$", 1)
    assert "second-2" not in await page.evaluate(screen(0))
    await page.screenshot(path=str(shots / "51-two-terminals.png"), full_page=True)

    # 5. The shell ends: the terminal says so; Reconnect opens a new one.
    await run(page, "exit 3", 1)
    await wait_text(page, r"\[session ended: .*3\)?\]", 1)
    second = page.locator("#terminals .term >> nth=1")
    assert await second.get_attribute("data-state") == "ended"
    await second.locator(".term-reconnect").click()
    await page.wait_for_selector("#terminals .term:nth-child(2)[data-state=open]", timeout=20_000)
    await run(page, "echo again-$((2*2))", 1)
    await wait_text(page, r"(?m)^again-4\s*$", 1)
    await second.locator(".term-close").click()
    assert await page.locator("#terminals .term").count() == 1

    # 6. Upload a file (its name and content UTF-8), then read it in the shell.
    content = f"uploaded {secrets.token_hex(8)} ünïcode\n"
    upload = tmp_path / "nötes.txt"
    upload.write_text(content * 3000)  # more than one chunk
    await page.set_input_files("#f-upload-file", str(upload))
    await page.fill("#f-dir-upload", "/tmp")
    await page.click("#upload-form button[type=submit]")
    await page.wait_for_selector("#upload-status[data-result]", timeout=20_000)
    assert await page.get_attribute("#upload-status", "data-result") == "ok", await page.inner_text("#upload-status")
    assert "/tmp/nötes.txt" in await page.inner_text("#upload-status")
    await run(page, "md5sum /tmp/nötes.txt; wc -c < /tmp/nötes.txt")
    import hashlib

    body = content.encode() * 3000
    await wait_text(page, rf"(?m)^{hashlib.md5(body).hexdigest()}\s+/tmp/nötes.txt")  # noqa: S324 - a checksum
    await wait_text(page, rf"(?m)^\s*{len(body)}\s*$")

    # 7. Download a folder as tar through the form; its members are what the shell made.
    await run(page, "mkdir -p /tmp/dl/sub && echo one > /tmp/dl/a.txt && echo twö > /tmp/dl/sub/b.txt && echo made")
    await wait_text(page, r"(?m)^made\s*$")
    await page.fill("#f-path-download", "/tmp/dl")
    async with page.expect_download() as info:
        await page.click("#download-form button[type=submit]")
    download = await info.value
    assert download.suggested_filename == "dl.tar"
    members = tar_members(Path(await download.path()).read_bytes())
    assert members == {"dl": None, "dl/a.txt": b"one\n", "dl/sub": None, "dl/sub/b.txt": "twö\n".encode()}, members
    # What is not there: a 404 naming it, both ways.
    r = await page.request.get(f"{inst_url}/files?path=/tmp/no-such-thing")
    assert r.status == 404 and "/tmp/no-such-thing" in await r.text()
    r = await page.request.post(f"{inst_url}/files?dir=/no/such/dir&name=x", data=b"x", headers=csrf)
    assert r.status == 404 and "/no/such/dir" in (await r.json())["error"]["message"], await r.text()

    # 8. Who may not: bob has no page for it and his cookie opens no terminal; another site's
    #    Origin and a missing CSRF token are refused with the owner's cookie.
    bob_ctx = await browser.new_context(locale="en-US")
    bob = await bob_ctx.new_page()
    await bob.goto(f"{dmd.base}/login")
    await bob.fill("#f-email", BOB_EMAIL)
    await bob.fill("#f-password", BOB_PASSWORD)
    await bob.click("form[action='/login'] button[type=submit]")
    await bob.wait_for_load_state()
    r = await bob.goto(inst_url)
    assert r is not None and r.status == 404 and await bob.locator("#terminal").count() == 0
    assert await ws_status(dmd, bob_ctx, iid, origin=dmd.base, csrf=await csrf_of(bob_ctx)) == 403
    owner_csrf = await csrf_of(ctx)
    assert await ws_status(dmd, ctx, iid, origin="http://evil.example", csrf=owner_csrf) == 403
    assert await ws_status(dmd, ctx, iid, origin=dmd.base, csrf=None) == 403
    assert await ws_status(dmd, ctx, iid, origin=dmd.base, csrf=owner_csrf) == 101  # the same, all in order
    r = await bob.request.get(f"{inst_url}/files?path=/tmp/dl")
    assert r.status == 403
    r = await bob.request.post(f"{inst_url}/files?dir=/tmp&name=x", data=b"x",
                               headers={"X-CSRF-Token": await csrf_of(bob_ctx)})
    assert r.status == 403
    await bob_ctx.close()

    # 9. The instance stops: the open terminal says its session ended (the page stays).
    r = await page.request.post(f"{dmd.base}/api/v1/instances/{iid}/stop", headers=csrf)
    assert r.ok, await r.text()
    await wait_text(page, r"\[session ended: instance term was stopped\]", timeout=40)
    await page.screenshot(path=str(shots / "52-terminal-ended.png"), full_page=True)
    assert await page.locator("#terminals .term .term-reconnect").is_visible()
    # Reconnecting to a stopped instance is refused before the upgrade; the terminal says so.
    await page.click("#terminals .term .term-reconnect")
    await wait_text(page, r"\[session ended: the connection was lost or refused\]")
    # No Content-Security-Policy violation, no script error: only the browser's own line about the
    # refused reconnection (its status, which scripts cannot read: 409, the instance is stopped).
    refused = [e for e in errors if e.startswith("WebSocket connection to ") and "response code: 409" in e]
    assert len(refused) == 1 and errors == refused, errors
    await ctx.close()
