from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.e2e.server_process import ServerProcess


@pytest.fixture
async def client(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        yield http
