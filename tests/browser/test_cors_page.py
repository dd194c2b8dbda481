"""GET /test-cors.html (seed 004 "CORS Testing"), saved and opened from another origin, in Chromium:
each of its buttons calls Pulse cross-origin and the page reports what came back."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from tests.e2e.server_process import ServerProcess

DEADLINE_MS = 20_000
TESTS = ("single", "batch", "retrieve", "stream")


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(DEADLINE_MS)
    try:
        yield page
    finally:
        context.close()


def open_cors_page(page: Any, pulse: ServerProcess, site: tuple[str, pathlib.Path], **query: str) -> None:
    """Fetch the page from Pulse, serve it from the other origin, and open it pointed at Pulse."""
    base, root = site
    answer = httpx.get(f"{pulse.url}/test-cors.html", timeout=10)
    assert answer.status_code == 200
    (root / "test-cors.html").write_bytes(answer.content)
    page.goto(f"{base}/test-cors.html?" + urlencode({"api": pulse.url, **query}))
    assert "cross-origin" in page.inner_text("#origins")


def run(page: Any, name: str) -> tuple[str, str]:
    """Click a test's button and wait for its result: (status, text)."""
    result = page.locator(f"#result-{name}")
    page.click(f"#test-{name}")
    page.wait_for_function(
        "name => ['ok', 'error'].includes(document.getElementById('result-' + name).dataset.status)", arg=name
    )
    status: str = result.get_attribute("data-status")
    text: str = result.inner_text()
    return status, text


def test_every_button_succeeds_from_another_origin(
    page: Any, pulse: ServerProcess, site: tuple[str, pathlib.Path]
) -> None:
    open_cors_page(page, pulse, site)
    results = {name: run(page, name) for name in TESTS}
    assert {name: status for name, (status, _) in results.items()} == dict.fromkeys(TESTS, "ok"), results
    assert results["single"][1].startswith("\u2713 stored as evt_")
    assert "2 events processed" in results["batch"][1]
    # retrieval ran after single and batch: it finds exactly the three events this page tracked
    assert "3 events of this page's session" in results["retrieve"][1]
    assert "(cors-test-batch, cors-test-batch, cors-test)" in results["retrieve"][1]  # newest first
    assert "received cors-test-stream" in results["stream"][1]
    # and Pulse holds them: the page reported what the server did
    events = httpx.get(f"{pulse.url}/api/events", params={"serviceName": "cors-test"}, timeout=10).json()["events"]
    assert sorted(e["name"] for e in events) == ["cors-test", "cors-test-batch", "cors-test-batch", "cors-test-stream"]
    assert {e["payload"]["metadata"]["pageOrigin"] for e in events} == {site[0]}


def test_run_all_with_a_secret_key_on_a_server_that_needs_keys(
    page: Any, tmp_path: pathlib.Path, site: tuple[str, pathlib.Path]
) -> None:
    pulse = ServerProcess(tmp_path / "keyed", host="0.0.0.0").start()
    try:
        open_cors_page(page, pulse, site)
        # without a key the page reports Pulse's refusal instead of a success
        assert run(page, "single") == ("error", "\u2717 HTTP 401: missing api key: "
                                                 "send Authorization: Bearer <key> or X-API-Key")
        page.fill("#api-key", pulse.secret_key)
        page.click("#run-all")
        for name in TESTS:
            page.wait_for_function(
                "name => document.getElementById('result-' + name).dataset.status === 'ok'", arg=name
            )
        assert "3 events of this page's session" in page.inner_text("#result-retrieve")
    finally:
        assert pulse.stop() == 0


def test_an_unreachable_server_is_reported_as_a_failure(
    page: Any, pulse: ServerProcess, site: tuple[str, pathlib.Path]
) -> None:
    open_cors_page(page, pulse, site)
    assert pulse.stop() == 0
    status, text = run(page, "batch")
    assert status == "error"
    assert "request failed" in text and "CORS refused this origin" in text
