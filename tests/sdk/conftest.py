"""Fixtures for the SDK tests: one real Pulse for the package (every test tracks under its own
service name, so tests never see each other's events), and reading back what Pulse stored."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.server_process import ServerProcess, serving


@pytest.fixture(scope="package")
def pulse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serving(tmp_path_factory.mktemp("sdk") / "data") as proc:
        yield proc


@pytest.fixture(scope="package")
def keyed_pulse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Bound to 0.0.0.0, so every request needs a key (the tests connect over loopback)."""
    with serving(tmp_path_factory.mktemp("sdk-keyed") / "data", host="0.0.0.0") as proc:
        yield proc


@pytest.fixture
def service() -> str:
    """A service name no other test uses."""
    return f"sdk-test-{uuid.uuid4().hex[:12]}"


def stored_events(server: ServerProcess, service: str, **filters: str) -> list[dict[str, Any]]:
    """Every event Pulse stored for ``service`` (GET /api/events, all pages)."""
    events: list[dict[str, Any]] = []
    query = {"serviceName": service, "limit": "1000", **filters}
    headers = {"Authorization": f"Bearer {server.secret_key}"}
    while True:
        url = f"{server.url}/api/events?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            page = json.load(response)
        events.extend(page["events"])
        if not page.get("nextCursor"):
            return events
        query["cursor"] = page["nextCursor"]
