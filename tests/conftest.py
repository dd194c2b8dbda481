"""Fixtures every test package may use: a real ``pulse serve`` process on loopback."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from tests.e2e.server_process import ServerProcess, serving


@pytest.fixture
def server(tmp_path: pathlib.Path) -> Iterator[ServerProcess]:
    """A fresh server on loopback (open access to the default project), stopped with SIGTERM."""
    with serving(tmp_path / "data") as proc:
        yield proc


@pytest.fixture
def keyed_server(tmp_path: pathlib.Path) -> Iterator[ServerProcess]:
    """A server bound to 0.0.0.0: every request needs a key (tests still connect over loopback)."""
    with serving(tmp_path / "data", host="0.0.0.0") as proc:
        yield proc
