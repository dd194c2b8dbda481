from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.e2e.server_process import ServerProcess


@pytest.fixture
def server(tmp_path: pathlib.Path) -> Iterator[ServerProcess]:
    """A fresh server on loopback (open access to the default project), stopped with SIGTERM."""
    proc = ServerProcess(tmp_path / "data").start()
    try:
        yield proc
    finally:
        code = proc.stop()
    assert code == 0, "".join(proc.output)


@pytest.fixture
def keyed_server(tmp_path: pathlib.Path) -> Iterator[ServerProcess]:
    """A server bound to 0.0.0.0: every request needs a key (tests still connect over loopback)."""
    proc = ServerProcess(tmp_path / "data", host="0.0.0.0").start()
    try:
        yield proc
    finally:
        code = proc.stop()
    assert code == 0, "".join(proc.output)


@pytest.fixture
async def client(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        yield http
