"""Fixtures of the storage suite: every test runs against every backend in BACKENDS.

``open_store()`` opens a store on the same storage each time it is entered, so entering it twice
is a restart; ``store`` is one store that runs for the whole test.
"""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import AsyncIterator, Callable

import pytest
import trio

from storage.base import Store
from storage.sqlite import SqliteStore

BACKENDS = ["sqlite"]  # "postgres" joins once that backend exists

StoreOpener = Callable[[], contextlib.AbstractAsyncContextManager[Store]]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def data_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "data"  # does not exist yet: the store creates it


def make_store(backend: str, data_dir: pathlib.Path) -> Store:
    if backend == "sqlite":
        return SqliteStore(data_dir)
    raise ValueError(f"unknown storage backend {backend!r}")


@pytest.fixture
def open_store(backend: str, data_dir: pathlib.Path) -> StoreOpener:
    @contextlib.asynccontextmanager
    async def opened() -> AsyncIterator[Store]:
        store = make_store(backend, data_dir)
        async with trio.open_nursery() as nursery:
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
