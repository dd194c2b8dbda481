"""The storage suite's fixtures (every backend: SQLite, PostgreSQL) for the approval store tests."""

from __future__ import annotations

from tests.storage.conftest import (  # noqa: F401 (fixtures)
    backend,
    data_dir,
    open_store,
    postgres_server,
    store,
)
