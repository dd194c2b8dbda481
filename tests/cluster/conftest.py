from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import pytest

from tests.cluster.harness import Cluster
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
    nodes = Cluster(tmp_path, postgres_dsn, redis_server.url).start()
    try:
        await nodes.wait_formed()
        yield nodes
    finally:
        codes = nodes.stop()
        print(nodes.output())  # shown by pytest when the test fails
        assert all(code == 0 for code in codes), nodes.output()
