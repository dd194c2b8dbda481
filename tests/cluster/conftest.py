from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import pytest

from tests.cluster.harness import Cluster, formed_cluster
from tests.services.postgres import PostgresServer, postgres_dsn, postgres_server  # noqa: F401
from tests.services.redis import RedisServer, redis_server  # noqa: F401


@pytest.fixture
async def cluster(
    tmp_path: pathlib.Path,
    postgres_server: PostgresServer,  # noqa: F811
    postgres_dsn: str,  # noqa: F811
    redis_server: RedisServer,  # noqa: F811
) -> AsyncIterator[Cluster]:
    """Three nodes over a fresh PostgreSQL database and a private Redis, formed into one cluster."""
    async with formed_cluster(tmp_path, postgres_dsn, redis_server.url) as nodes:
        yield nodes
