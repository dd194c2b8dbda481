"""Pulse slow or down: track never waits, the queue keeps the newest events, close() keeps its deadline."""

from __future__ import annotations

import threading
import time

from pulse_sdk import Client, Stats
from tests.sdk.http_stubs import Script, closed_port, ok_answer, stub, wait_until

CLOSE_SLACK_S = 3.0  # close() returns at its deadline; this only absorbs a loaded machine's scheduling


def _accounted(stats: Stats) -> int:
    return (stats.delivered + stats.rejected + stats.dropped_queue_full + stats.dropped_refused
            + stats.dropped_retries_exhausted + stats.dropped_at_close)  # fmt: skip


def test_a_full_queue_drops_the_oldest_events_while_the_sender_is_stuck() -> None:
    script = Script([ok_answer(1)], gate=threading.Event())
    with stub(script) as url:
        client = Client(url, flush_at_exit=False, max_batch=1, max_queue=100)
        client.track("first", {"metadata": {"n": -1}})
        script.wait_for(1)  # the sender is now waiting for an answer that the gate holds back
        # every one of these returns while the only request is still unanswered: track never waits
        for n in range(1000):
            assert client.track("e", {"metadata": {"n": n}})
        stats = client.stats()
        assert (stats.tracked, stats.queued, stats.in_flight, stats.dropped_queue_full) == (1001, 100, 1, 900)
        assert script.gate is not None
        script.gate.set()
        assert client.flush(timeout=30) is False  # 900 of the events queued before it were dropped
        client.close()
    kept = [event["payload"]["metadata"]["n"] for event in script.events()]
    assert kept == [-1, *range(900, 1000)]  # the first (in flight) and the newest 100
    stats = client.stats()
    assert stats.delivered == 101 and _accounted(stats) == stats.tracked


def test_pulse_down_track_returns_and_close_keeps_its_deadline() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    client = Client(url, flush_at_exit=False, max_batch=10, max_queue=50, flush_interval=0.01,
                    max_retries=1000, backoff_base=0.05, backoff_max=0.2)  # fmt: skip
    for n in range(500):
        assert client.track("e", {"metadata": {"n": n}})
    wait_until(lambda: client.stats().retries >= 3, what="the sender to retry the refused connection")
    assert "cannot reach" in (client.stats().last_error or "")
    started = time.monotonic()
    assert client.close(timeout=1.0) is False
    assert time.monotonic() - started < 1.0 + CLOSE_SLACK_S
    # close() returned at its deadline; a batch the sender was still posting settles right after
    wait_until(lambda: client.stats().in_flight == 0, what="the last batch to settle")
    stats = client.stats()
    assert stats.delivered == 0 and stats.dropped_queue_full >= 500 - 50 - 10
    assert stats.dropped_at_close > 0 and _accounted(stats) == stats.tracked == 500
    assert client.track("after") is False and client.stats().dropped_closed == 1


def test_close_keeps_its_deadline_while_a_request_hangs() -> None:
    script = Script([ok_answer(1)], gate=threading.Event())
    with stub(script) as url:
        client = Client(url, flush_at_exit=False, max_batch=1, timeout=30.0)
        client.track("stuck")
        client.track("queued")
        script.wait_for(1)
        started = time.monotonic()
        assert client.close(timeout=0.5) is False
        assert time.monotonic() - started < 0.5 + CLOSE_SLACK_S
        assert client.stats().dropped_at_close == 1  # "queued"; "stuck" is still in flight
        assert script.gate is not None
        script.gate.set()  # let the stub finish
        wait_until(lambda: client.stats().in_flight == 0, what="the in-flight batch to settle")
    assert client.stats().delivered == 1
