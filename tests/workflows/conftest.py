"""The workflow suite runs its storage tests on every backend, with the storage suite's fixtures."""

from __future__ import annotations

import trio_asyncio  # noqa: F401 (first: before anything imports asyncpg)

# isort: split
from tests.services.postgres import postgres_dsn, postgres_server  # noqa: F401 (fixtures)
from tests.storage.conftest import backend, data_dir, open_store, store  # noqa: F401 (fixtures)
