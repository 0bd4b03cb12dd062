"""The matrix runs on a dmd with its SSH gateway on (its routes answer, not 404)."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import AppFactory


@pytest.fixture
async def client(make_client: AppFactory) -> TestClient:  # type: ignore[type-arg]
    return await make_client(ssh_listen="127.0.0.1:0")
