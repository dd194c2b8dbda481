"""The client against a real Pulse: what is tracked arrives once, and what Pulse refuses is counted."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from pulse_sdk import Client, DeliveryError
from tests.e2e.server_process import ServerProcess
from tests.sdk.conftest import stored_events

THREADS = 8
PER_THREAD = 250


def test_events_from_many_threads_arrive_exactly_once_gzipped(pulse: ServerProcess, service: str) -> None:
    client = Client(pulse.url, service_name=service, gzip=True, flush_at_exit=False)
    start = threading.Barrier(THREADS)

    def producer(thread: int) -> None:
        start.wait()
        for n in range(PER_THREAD):
            client.track("page_view", {"metadata": {"thread": thread, "n": n}}, user_id=f"user-{thread}")

    threads = [threading.Thread(target=producer, args=(t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert client.flush(timeout=30)
    assert client.close()

    events = stored_events(pulse, service)
    seen = Counter((e["payload"]["metadata"]["thread"], e["payload"]["metadata"]["n"]) for e in events)
    assert seen == Counter({(t, n): 1 for t in range(THREADS) for n in range(PER_THREAD)})
    assert {e["userId"] for e in events} == {f"user-{t}" for t in range(THREADS)}
    assert len({e["payload"]["eventId"] for e in events}) == THREADS * PER_THREAD
    stats = client.stats()
    assert (stats.tracked, stats.delivered, stats.duplicates, stats.queued, stats.in_flight) == (2000, 2000, 0, 0, 0)
    assert stats.batches == stats.requests and stats.retries == 0
    assert stats.batches >= THREADS * PER_THREAD // client.max_batch


def test_fields_and_client_time_arrive(pulse: ServerProcess, service: str) -> None:
    with Client(pulse.url, service_name=service, flush_at_exit=False) as client:
        client.track("checkout", {"statusCode": 201, "metadata": {"cart": 3}}, user_id="u-1", session_id="s-1",
                     correlation_id="c-1", timestamp=1_700_000_000_000, event_id="my-own-id")  # fmt: skip
        assert client.flush(timeout=15)
    [event] = stored_events(pulse, service)
    assert (event["name"], event["userId"], event["sessionId"], event["serviceName"]) == ("checkout", "u-1", "s-1", service)
    assert event["payload"]["eventId"] == "my-own-id"
    assert event["payload"]["correlationId"] == "c-1"
    # sentAt lets Pulse correct the client's clock: the stored time is the client's time shifted by
    # (Pulse's receive time - the client's send time), which on one machine is a few ms at most
    assert abs(event["timestamp"] - 1_700_000_000_000) < 5_000


def test_events_pulse_rejects_inside_an_accepted_batch_are_counted(pulse: ServerProcess, service: str) -> None:
    errors: list[DeliveryError] = []
    client = Client(pulse.url, service_name=service, flush_at_exit=False, on_error=errors.append)
    client.track("ok", {"metadata": {"n": 1}})
    client.track("bad", user_id="u" * 201)  # Pulse's limit on ids is 200 characters
    client.track("ok", {"metadata": {"n": 2}})
    assert client.flush(timeout=15) is False  # not everything was delivered
    client.close()
    stats = client.stats()
    assert (stats.delivered, stats.rejected, stats.batches) == (2, 1, 1)
    assert [e["name"] for e in stored_events(pulse, service)] == ["ok", "ok"]
    [error] = errors
    assert error.kind == "rejected" and error.events == 1
    assert "userId" in error.reason and "events[1]" in error.reason


def test_a_batch_pulse_refuses_is_dropped_and_counted_not_retried(pulse: ServerProcess, service: str) -> None:
    errors: list[DeliveryError] = []
    client = Client(pulse.url, service_name=service, flush_at_exit=False, on_error=errors.append, backoff_base=0.01)
    for n in range(3):
        client.track("bad", {"metadata": {"n": n}}, user_id="u" * 201)  # every event invalid: 400
    assert client.flush(timeout=15) is False
    client.close()
    stats = client.stats()
    assert (stats.dropped_refused, stats.requests, stats.retries, stats.delivered) == (3, 1, 0, 0)
    [error] = errors
    assert (error.kind, error.status, error.events) == ("dropped_refused", 400, 3)
    assert "userId" in error.reason
    assert stats.last_error == error.reason
    assert stored_events(pulse, service) == []


def test_the_key_is_sent_and_a_wrong_key_is_refused_once(keyed_pulse: ServerProcess, service: str) -> None:
    with Client(keyed_pulse.url, key=keyed_pulse.public_key, service_name=service, flush_at_exit=False) as good:
        good.track("with_key")
        assert good.flush(timeout=15)
    with Client(keyed_pulse.url, key="pk_not_a_key", service_name=service, flush_at_exit=False) as wrong:
        wrong.track("wrong_key")
        assert wrong.flush(timeout=15) is False
    assert (wrong.stats().dropped_refused, wrong.stats().requests) == (1, 1)
    assert "401" in (wrong.stats().last_error or "")
    assert [e["name"] for e in stored_events(keyed_pulse, service)] == ["with_key"]


def test_track_refuses_what_pulse_could_never_accept(pulse: ServerProcess) -> None:
    client = Client(pulse.url, flush_at_exit=False)
    for name in ("", "x" * 201):
        with pytest.raises(ValueError, match="event_name must be a string of 1 to 200"):
            client.track(name)
    with pytest.raises(ValueError, match="JSON compliant"):  # NaN would make the whole batch invalid JSON
        client.track("nan", {"responseTimeMs": float("nan")})
    with pytest.raises(TypeError, match="not JSON serializable"):
        client.track("object", {"metadata": {"when": object()}})
    assert client.stats().tracked == 0
    client.close()
