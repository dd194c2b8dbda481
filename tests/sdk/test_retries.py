"""Retries over real sockets: a lost answer, Retry-After, refusals that are final, and giving up."""

from __future__ import annotations

import json
from email.utils import formatdate

import pytest

from pulse_sdk import Client
from pulse_sdk.retry import backoff_delay, is_retryable, parse_retry_after
from tests.e2e.server_process import ServerProcess
from tests.sdk.conftest import stored_events
from tests.sdk.http_stubs import Script, losing_proxy, ok_answer, stub


def _error(status: int, reason: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"success": False, "error": {"code": "x", "field": "$.events", "reason": reason}}).encode()
    return status, {"Content-Type": "application/json", **(headers or {})}, body


def test_a_batch_retried_after_its_answer_was_lost_is_stored_once(pulse: ServerProcess, service: str) -> None:
    with losing_proxy(pulse.url, lose_first=1) as (url, log):
        client = Client(url, service_name=service, flush_at_exit=False, backoff_base=0.01)
        for n in range(20):
            client.track("signup", {"metadata": {"n": n}})
        assert client.flush(timeout=30)
        client.close()
    assert (log.forwarded, log.answers_lost) == (2, 1)  # Pulse saw the same batch twice
    stats = client.stats()
    assert (stats.requests, stats.retries, stats.delivered, stats.duplicates) == (2, 1, 20, 20)
    events = stored_events(pulse, service)
    assert sorted(e["payload"]["metadata"]["n"] for e in events) == list(range(20))


def test_retry_after_is_honoured_then_the_batch_is_delivered() -> None:
    script = Script([_error(503, "overloaded", {"Retry-After": "1"}), ok_answer(2)])
    with stub(script) as url:
        # with this backoff a retry that ignored Retry-After would come back within ~10 ms
        client = Client(url, flush_at_exit=False, backoff_base=0.001, backoff_max=0.01)
        client.track("a")
        client.track("b")
        assert client.flush(timeout=30)
        client.close()
        first, second = script.wait_for(2)
    assert second.at - first.at >= 0.95
    assert second.body["events"] == first.body["events"]  # the same events, same eventIds
    assert second.body["batchId"] == first.body["batchId"]
    assert second.body["sentAt"] >= first.body["sentAt"] + 950  # sentAt is the time of each attempt
    assert first.headers["content-encoding"] == "gzip" and first.path == "/api/events/track/batch"
    assert (client.stats().retries, client.stats().delivered) == (1, 2)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_a_final_refusal_is_dropped_after_one_request(status: int) -> None:
    script = Script([_error(status, "nope"), ok_answer(1)])
    with stub(script) as url:
        client = Client(url, flush_at_exit=False, backoff_base=0.001)
        client.track("x")
        assert client.flush(timeout=15) is False
        client.close()
        assert len(script.received) == 1
    stats = client.stats()
    assert (stats.dropped_refused, stats.requests, stats.delivered) == (1, 1, 0)
    assert stats.last_error == f"HTTP {status}: $.events: nope"


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_answers_are_retried_until_delivered(status: int) -> None:
    script = Script([_error(status, "later"), _error(status, "later"), ok_answer(1)])
    with stub(script) as url:
        client = Client(url, flush_at_exit=False, backoff_base=0.001, backoff_max=0.01)
        client.track("x")
        assert client.flush(timeout=15)
        client.close()
        assert len(script.received) == 3
    assert (client.stats().retries, client.stats().delivered) == (2, 1)


def test_retries_end_after_max_retries_and_the_batch_is_counted() -> None:
    script = Script([_error(500, "broken")])
    with stub(script) as url:
        client = Client(url, flush_at_exit=False, max_retries=2, backoff_base=0.001, backoff_max=0.01)
        client.track("x")
        client.track("y")
        assert client.flush(timeout=15) is False
        client.close()
        assert len(script.received) == 3
    stats = client.stats()
    assert (stats.dropped_retries_exhausted, stats.requests, stats.retries) == (2, 3, 2)
    assert stats.last_error == "3 attempts; last: HTTP 500: $.events: broken"


def test_retry_after_forms() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after("3", now=now) == 3.0
    assert parse_retry_after(" 0 ", now=now) == 0.0
    assert parse_retry_after(formatdate(now + 7, usegmt=True), now=now) == pytest.approx(7.0)
    assert parse_retry_after(formatdate(now - 60, usegmt=True), now=now) == 0.0  # a past date: now
    for unusable in (None, "", "soon", "-1", "nan", "inf"):
        assert parse_retry_after(unusable, now=now) is None


def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    for attempt, ceiling in ((0, 0.5), (1, 1.0), (3, 4.0), (10, 30.0), (500, 30.0)):
        delays = [backoff_delay(attempt, base=0.5, cap=30.0) for _ in range(500)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 2  # spread over the range, not a constant
    assert [is_retryable(s) for s in (None, 408, 429, 500, 503, 400, 401, 404, 413)] == [True] * 5 + [False] * 4
