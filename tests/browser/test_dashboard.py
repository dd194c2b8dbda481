"""The live dashboard (GET /dashboard) in real Chromium against a real Pulse process.

Events are posted with httpx, the way any client sends them; every check reads what the page shows.
"""

from __future__ import annotations

import pathlib
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.e2e.server_process import ServerProcess

DEADLINE_MS = 20_000  # generous: the machine is shared; every wait ends as soon as its condition holds
VISIBLE_WITHIN_MS = 1_000  # the issue: an event shows on the dashboard within a second of its ingest
VIEWPORT = {"width": 1280, "height": 800}


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page (own storage, so no key survives from another test) whose console errors and
    uncaught exceptions are collected in ``page.errors``."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.errors = []
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    try:
        yield page
    finally:
        context.close()


def open_dashboard(page: Any, base_url: str) -> None:
    page.goto(base_url + "/dashboard")
    page.wait_for_selector("body[data-stream=live]", timeout=DEADLINE_MS)


def track(base_url: str, name: str, key: str | None = None, user: str | None = None, **payload: Any) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if user:
        headers["X-User-Id"] = user
    answer = httpx.post(f"{base_url}/api/events/track/{name}", json=payload, headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def row(name: str) -> str:
    """The selector of the live table's row of the event named ``name``."""
    return f'#live-rows tr:has(td.name:text-is("{name}"))'


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_dashboard_loads_without_console_errors(page: Any, pulse: ServerProcess) -> None:
    for name in ("before-1", "before-2"):
        track(pulse.url, name, serviceName="svc-before", sessionId="sess-before")
    # a person opening the server's root in a browser lands on the dashboard
    page.goto(pulse.url + "/")
    assert page.url == pulse.url + "/dashboard"
    page.wait_for_selector("body[data-stream=live]", timeout=DEADLINE_MS)
    assert page.text_content("#conn-status") == "Live"
    assert page.is_hidden("#banner")
    # the polled panels answered: the server's health, computed figures in the health panel
    page.wait_for_function("document.querySelector('#health-figures')?.textContent.includes('healthy')",
                           timeout=DEADLINE_MS)
    assert "SSE" in page.text_content("#health-figures")
    page.wait_for_selector("#suggestions-empty:not([hidden]), #suggestion-list li", timeout=DEADLINE_MS)
    page.wait_for_selector("#anomalies-basis:not(:empty)", timeout=DEADLINE_MS)
    # what happened before the page opened: the stored events, the service, the session
    page.wait_for_selector(row("before-1"), timeout=DEADLINE_MS)
    assert page.is_visible(row("before-2"))
    page.wait_for_selector('#session-rows button[data-session="sess-before"]', timeout=DEADLINE_MS)
    assert page.locator('#f-service option[value="svc-before"]').count() == 1
    # the stored total, still right once the stream's first stats message has replaced it
    page.wait_for_function("document.querySelector('#rate-server').textContent !== '\u2014'", timeout=DEADLINE_MS)
    assert page.text_content("#total-events") == "2"
    assert page.errors == []


def test_event_is_visible_within_a_second_of_its_ingest(page: Any, pulse: ServerProcess) -> None:
    open_dashboard(page, pulse.url)
    took_ms = []
    for i in range(3):
        name = unique("dash-probe")
        track(pulse.url, name, serviceName="probe-service", sessionId="probe-session", statusCode=200,
              responseTimeMs=40 + i)
        answered = time.monotonic()  # the ingest answered: the event is durable
        page.wait_for_selector(row(name), state="visible", timeout=VISIBLE_WITHIN_MS)
        took_ms.append((time.monotonic() - answered) * 1000)
    print(f"dashboard: event visible {', '.join(f'{t:.0f}' for t in took_ms)} ms after the ingest answered")
    cells = page.locator(row(name) + " td").all_text_contents()
    assert cells[1:5] == ["probe-service", name, "200", "42"]
    assert page.errors == []


def test_filters_hide_events_that_do_not_match(page: Any, pulse: ServerProcess) -> None:
    open_dashboard(page, pulse.url)
    a, b = unique("alpha"), unique("beta")
    track(pulse.url, a, serviceName="svc-alpha", sessionId="sess-1", user="ann")
    track(pulse.url, b, serviceName="svc-beta", sessionId="sess-2", user="bob")
    page.wait_for_selector(row(a), timeout=DEADLINE_MS)
    page.wait_for_selector(row(b), timeout=DEADLINE_MS)

    page.select_option("#f-service", "svc-alpha")
    page.wait_for_selector(row(b), state="detached", timeout=DEADLINE_MS)
    assert page.is_visible(row(a))
    # a matching event that comes while the filter is set is shown; another is not
    a2, b2 = unique("alpha"), unique("beta")
    track(pulse.url, b2, serviceName="svc-beta")
    track(pulse.url, a2, serviceName="svc-alpha")
    page.wait_for_selector(row(a2), timeout=DEADLINE_MS)
    assert page.locator(row(b2)).count() == 0
    assert set(page.locator("#live-rows tr").evaluate_all("rows => rows.map(r => r.dataset.service)")) == {"svc-alpha"}

    page.select_option("#f-service", "")
    page.fill("#f-session", "sess-2")
    page.wait_for_selector(row(a), state="detached", timeout=DEADLINE_MS)
    assert page.is_visible(row(b))
    assert page.locator("#live-rows tr").count() == 1

    page.fill("#f-session", "")
    page.fill("#f-user", "an")  # "contains": ann, not bob
    page.wait_for_selector(row(b), state="detached", timeout=DEADLINE_MS)
    assert page.is_visible(row(a))
    assert page.locator("#live-rows tr").count() == 1

    page.fill("#f-user", "")
    page.fill("#f-event", "beta")
    page.wait_for_selector(row(b2), timeout=DEADLINE_MS)
    assert page.locator(row(a)).count() == 0 and page.locator(row(a2)).count() == 0

    page.fill("#f-event", "")
    for name in (a, b, a2, b2):
        page.wait_for_selector(row(name), timeout=DEADLINE_MS)
    assert page.errors == []


def test_pause_holds_new_rows_until_resumed(page: Any, pulse: ServerProcess) -> None:
    open_dashboard(page, pulse.url)
    page.click("#pause")
    name = unique("while-paused")
    track(pulse.url, name, serviceName="svc")
    page.wait_for_selector("#paused-count:has-text('1 new while paused')", timeout=DEADLINE_MS)
    assert page.locator(row(name)).count() == 0
    page.click("#pause")
    page.wait_for_selector(row(name), timeout=DEADLINE_MS)
    assert page.text_content("#pause") == "Pause"


def test_service_chart_and_table_show_a_service_after_its_events(page: Any, pulse: ServerProcess) -> None:
    open_dashboard(page, pulse.url)
    for ms in (100, 200, 300, 400, 500):
        track(pulse.url, "chart-call", serviceName="chart-svc", statusCode=500 if ms == 500 else 200,
              responseTimeMs=ms)
    # the volume chart draws the service's line, counting each of its 5 events once
    page.wait_for_selector('#chart-volume path[data-service="chart-svc"][data-total="5"]', timeout=DEADLINE_MS)
    # (events in one 10 s bucket are one point of the latency chart: a dot, its path has no length)
    page.wait_for_selector('#chart-latency path[data-service="chart-svc"]', state="attached", timeout=DEADLINE_MS)
    assert page.is_visible('#chart-legend li[data-service="chart-svc"]')
    # the table has the server's figures for it (refreshed every 10 s)
    table_row = '#service-rows tr[data-service="chart-svc"]'
    # a refresh may land between the posts: wait for the one that saw all five
    expect(page.locator(table_row + " td").first).to_have_text("5", timeout=DEADLINE_MS)
    cells = page.locator(table_row + " td").all_text_contents()
    assert cells[0] == "5"  # events
    assert cells[2] == "300"  # mean response time, ms
    assert cells[3] == "500"  # p95 of the 5 response times seen
    assert cells[4] == "20.0 %"  # error rate
    assert page.errors == []


def test_session_detail_shows_the_sessions_insights(page: Any, pulse: ServerProcess) -> None:
    open_dashboard(page, pulse.url)
    for page_url in ("/", "/pricing", "/checkout"):
        track(pulse.url, "page-view", serviceName="web", sessionId="sess-insight", metadata={"page": page_url})
    page.click('#session-rows button[data-session="sess-insight"]', timeout=DEADLINE_MS)
    page.wait_for_selector("#session-detail h3:text-is('Session sess-insight')", timeout=DEADLINE_MS)
    detail = page.text_content("#session-detail")
    assert "engagement" in detail and "purchase intent" in detail
    # kept current by the session's own stream, once that is connected
    page.wait_for_selector("#session-live:text-is('updating live')", timeout=DEADLINE_MS)
    track(pulse.url, "click", serviceName="web", sessionId="sess-insight")
    page.wait_for_function(
        "[...document.querySelectorAll('#session-detail dt')].find(d => d.textContent === 'events')"
        "?.nextElementSibling.textContent === '4'", timeout=DEADLINE_MS)


def test_stopped_server_shows_the_banner_and_a_new_one_reconnects(page: Any, tmp_path: pathlib.Path) -> None:
    port = free_port()
    first = ServerProcess(tmp_path / "data", extra=["--port", str(port)]).start()
    second = None
    try:
        assert first.url.endswith(f":{port}")
        open_dashboard(page, first.url)
        assert first.stop() == 0
        page.wait_for_selector("#banner:has-text('Disconnected')", state="visible", timeout=DEADLINE_MS)
        assert page.text_content("#conn-status") == "Disconnected"
        # the polled panels say their figures are old
        page.wait_for_selector("#health-stale:has-text('stale')", state="visible", timeout=DEADLINE_MS)

        second = ServerProcess(tmp_path / "data", extra=["--port", str(port)]).start()
        assert second.url == first.url
        page.wait_for_selector("body[data-stream=live]", timeout=DEADLINE_MS)
        assert page.is_hidden("#banner")
        page.wait_for_selector("#health-stale", state="hidden", timeout=DEADLINE_MS)
        name = unique("after-restart")
        track(second.url, name, serviceName="svc")
        page.wait_for_selector(row(name), timeout=DEADLINE_MS)
    finally:
        if first.proc is not None and first.proc.poll() is None:
            first.stop()
        if second is not None:
            assert second.stop() == 0, "".join(second.output)


def test_key_required_server_asks_for_the_secret_key(page: Any, tmp_path: pathlib.Path) -> None:
    server = ServerProcess(tmp_path / "data", host="0.0.0.0").start()
    try:
        page.goto(server.url + "/dashboard")
        page.wait_for_selector("#key-dialog[open]", timeout=DEADLINE_MS)
        assert "missing api key" in page.text_content("#key-reason")
        # a public key may write but not read: refused, with the server's reason
        page.fill("#key-input", server.public_key)
        page.click("#key-submit")
        page.wait_for_selector("#key-reason:has-text('public write key')", timeout=DEADLINE_MS)
        page.wait_for_selector("#key-dialog[open]", timeout=DEADLINE_MS)

        page.fill("#key-input", server.secret_key)
        page.click("#key-submit")
        page.wait_for_selector("body[data-stream=live]", timeout=DEADLINE_MS)
        assert page.is_hidden("#key-dialog")
        assert page.evaluate("localStorage.getItem('pulse.dashboard.secretKey')") == server.secret_key
        name = unique("keyed")
        track(server.url, name, key=server.public_key, serviceName="svc")
        page.wait_for_selector(row(name), timeout=DEADLINE_MS)
        page.wait_for_function("document.querySelector('#health-figures')?.textContent.includes('SSE')",
                               timeout=DEADLINE_MS)
        # the key is remembered: a reload connects without asking
        page.reload()
        page.wait_for_selector("body[data-stream=live]", timeout=DEADLINE_MS)
        assert page.is_hidden("#key-dialog")
    finally:
        assert server.stop() == 0, "".join(server.output)


def test_a_resume_the_server_cannot_replay_is_announced(page: Any, tmp_path: pathlib.Path) -> None:
    """The page reconnects to a server with another store (restored from elsewhere): its last event
    id is unknown there, the server sends a gap message, and the page says events may be missing."""
    port = free_port()
    first = ServerProcess(tmp_path / "first", extra=["--port", str(port)]).start()
    second = None
    try:
        open_dashboard(page, first.url)
        for i in range(3):
            name = f"before-restore-{i}"
            track(first.url, name, serviceName="svc")
            page.wait_for_selector(row(name), timeout=DEADLINE_MS)
        assert first.stop() == 0
        page.wait_for_selector("#banner", state="visible", timeout=DEADLINE_MS)
        second = ServerProcess(tmp_path / "second", extra=["--port", str(port)]).start()
        page.wait_for_selector("body[data-stream=live]", timeout=DEADLINE_MS)
        page.wait_for_selector("#live-note:has-text('may be missing')", state="visible", timeout=DEADLINE_MS)
        assert "unknown_id" in page.text_content("#live-note")
        name = unique("after-restore")
        track(second.url, name, serviceName="svc")
        page.wait_for_selector(row(name), timeout=DEADLINE_MS)
    finally:
        if first.proc is not None and first.proc.poll() is None:
            first.stop()
        if second is not None:
            assert second.stop() == 0, "".join(second.output)


def test_chart_says_when_it_lacks_events_it_could_not_load(page: Any, pulse: ServerProcess) -> None:
    """More events in the last 10 minutes than the page loads at start (1,000): the chart leaves
    out the buckets before the oldest loaded event and says so, rather than drawing too few."""
    for batch in range(2):
        events = [{"eventName": "bulk", "payload": {"serviceName": "bulk-svc"}} for _ in range(600)]
        answer = httpx.post(f"{pulse.url}/api/events/track/batch", json={"batchId": f"b{batch}", "events": events},
                            timeout=30)
        assert answer.status_code == 200, answer.text
    open_dashboard(page, pulse.url)
    page.wait_for_selector("#chart-note:has-text('more than the 1000 events')", state="visible", timeout=DEADLINE_MS)
    drawn = page.get_attribute('#chart-volume path[data-service="bulk-svc"]', "data-total")
    assert drawn is not None and int(drawn) <= 1000
