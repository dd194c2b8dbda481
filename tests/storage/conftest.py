"""Fixtures of the storage suite: every test runs against every backend in BACKENDS.

``open_store()`` opens a store on the same storage each time it is entered, so entering it twice
is a restart; ``store`` is one store that runs for the whole test.

Backends: "sqlite" keeps its file in ``data_dir``; "postgres" gets a fresh database per test from
the session's throwaway server (tests.services.postgres), registered under the test's ``data_dir``
so that ``make_store(backend, data_dir)`` finds it, and runs inside ``trio_asyncio.open_loop()``.
"""

from __future__ import annotations

import trio_asyncio  # first: before anything imports asyncpg

# isort: split
import contextlib
import pathlib
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import trio

from storage.base import Store
from storage.postgres import PostgresStore
from storage.sqlite import SqliteStore
from tests.services.postgres import PostgresServer, postgres_dsn, postgres_server  # noqa: F401 (fixtures)

BACKENDS = ["sqlite", "postgres"]

StoreOpener = Callable[[], contextlib.AbstractAsyncContextManager[Store]]

_DATABASES: dict[pathlib.Path, str] = {}  # data_dir -> DSN of the test's PostgreSQL database


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def data_dir(tmp_path: pathlib.Path, backend: str, request: pytest.FixtureRequest) -> Iterator[pathlib.Path]:
    path = tmp_path / "data"  # does not exist yet: the store creates it
    if backend != "postgres":
        yield path
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    with server.database() as dsn:
        _DATABASES[path] = dsn
        try:
            yield path
        finally:
            del _DATABASES[path]


def make_store(backend: str, data_dir: pathlib.Path) -> Store:
    if backend == "sqlite":
        return SqliteStore(data_dir)
    if backend == "postgres":
        return PostgresStore(_DATABASES[data_dir])
    raise ValueError(f"unknown storage backend {backend!r}")


@contextlib.asynccontextmanager
async def asyncio_loop_for(backend: str) -> AsyncIterator[None]:
    """The asyncio loop (over trio) that the postgres backend runs in; nothing for the others."""
    if backend == "postgres":
        async with trio_asyncio.open_loop():
            yield
    else:
        yield


@pytest.fixture
def open_store(backend: str, data_dir: pathlib.Path) -> StoreOpener:
    @contextlib.asynccontextmanager
    async def opened() -> AsyncIterator[Store]:
        store = make_store(backend, data_dir)
        async with asyncio_loop_for(backend), trio.open_nursery() as nursery:
            await nursery.start(store.run)
            try:
                yield store
            finally:
                nursery.cancel_scope.cancel()  # run() flushes and closes under a shielded deadline

    return opened


@pytest.fixture
async def store(open_store: StoreOpener) -> AsyncIterator[Store]:
    async with open_store() as opened:
        yield opened
