"""A real ``pulse serve`` process for the Segment and PostHog SDKs, and a way to read what it stored.

The SDKs are synchronous (requests), so these tests are plain ``def`` tests with a sync httpx client.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.server_process import ServerProcess, serving


@pytest.fixture(params=["pulse", "hypercorn"])
def either_edge(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[ServerProcess]:
    """A loopback server on the native edge, then on stock hypercorn (the ASGI front): both route here."""
    with serving(tmp_path / "data", extra=["--edge", request.param]) as proc:
        yield proc


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


def stored_events(pulse: ServerProcess, **params: str) -> list[dict[str, Any]]:
    """The events /api/events lists, oldest first. The intake answers only once events are durable,
    so whatever an SDK saw accepted is there. Read with the secret key, so keyed servers work too."""
    answer = httpx.get(f"{pulse.url}/api/events", params={"limit": "500", **params},
                       headers={"Authorization": f"Bearer {pulse.secret_key}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    return sorted(answer.json()["events"], key=lambda event: event["seq"])

