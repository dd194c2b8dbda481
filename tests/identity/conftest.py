"""Fixtures of the identity tests: the storage suite's (every backend: SQLite, PostgreSQL) for the
identity store tests, an HTTP client on a real server for the end-to-end ones, and a three-node
cluster (PostgreSQL and Redis) for the cross-node one."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.cluster.conftest import cluster  # noqa: F401 (fixture)
from tests.e2e.server_process import ServerProcess
from tests.services.postgres import postgres_dsn  # noqa: F401 (fixture)
from tests.services.redis import redis_server  # noqa: F401 (fixture)
from tests.storage.conftest import (  # noqa: F401 (fixtures)
    backend,
    data_dir,
    open_store,
    postgres_server,
    store,
)


@pytest.fixture
async def client(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        yield http
