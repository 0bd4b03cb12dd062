"""Helpers for page tests: read the CSRF field from a page, log in through the login form."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import PASSWORD, add_user

_CSRF_RE = re.compile(r'name="csrf_token" value="([^"]*)"')


def csrf_of(html: str) -> str:
    m = _CSRF_RE.search(html)
    assert m, "the page has no csrf_token field"
    return m.group(1)


async def get_csrf(client: TestClient, path: str) -> str:  # type: ignore[type-arg]
    r = await client.get(path)
    assert r.status == 200, (path, r.status)
    return csrf_of(await r.text())


async def page_login(client: TestClient, email: str, password: str = PASSWORD,  # type: ignore[type-arg]
                     next_path: str | None = None) -> Any:
    """Log in through the form; returns the 303 response."""
    token = await get_csrf(client, "/login")
    data = {"csrf_token": token, "email": email, "password": password}
    if next_path is not None:
        data["next"] = next_path
    r = await client.post("/login", data=data, allow_redirects=False)
    assert r.status == 303, await r.text()
    return r


async def post_form(client: TestClient, path: str, data: dict[str, str], *,  # type: ignore[type-arg]
                    csrf_from: str = "/account") -> Any:
    """POST a logged-in form, with the CSRF token read from a page (no redirect followed)."""
    token = await get_csrf(client, csrf_from)
    return await client.post(path, data={"csrf_token": token, **data}, allow_redirects=False)


@pytest.fixture
async def admin_client(client: TestClient) -> TestClient:  # type: ignore[type-arg]
    """The client, logged in through the pages as admin@example.org."""
    await add_user(client, "admin@example.org", role="admin", username="admin")
    await page_login(client, "admin@example.org")
    return client


@pytest.fixture
async def user_client(client: TestClient) -> TestClient:  # type: ignore[type-arg]
    """The client, logged in as the plain user alice (an admin exists too)."""
    await add_user(client, "admin@example.org", role="admin", username="admin")
    await add_user(client, "alice@example.org", username="alice")
    await page_login(client, "alice@example.org")
    return client


@pytest.fixture
async def dmd(tmp_path):  # type: ignore[no-untyped-def]
    """A real `dmd serve` (see tests/pages/live.py)."""
    from tests.pages.live import running_dmd

    async with running_dmd(tmp_path) as d:
        yield d


@pytest.fixture
async def dmd_local(tmp_path):  # type: ignore[no-untyped-def]
    """A real `dmd serve --local-node` on the local Docker Engine."""
    from tests.pages.live import running_dmd

    async with running_dmd(tmp_path, "--local-node") as d:
        yield d


@pytest.fixture
async def browser():  # type: ignore[no-untyped-def]
    """Debian's Chromium through Playwright."""
    from tests.pages.live import chromium

    async with chromium() as b:
        yield b
