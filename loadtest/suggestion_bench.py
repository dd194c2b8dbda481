"""What the suggestion cache adds to a track answer: ``python -m loadtest.suggestion_bench``.

Times ``SuggestionCache.for_event`` / ``for_batch`` (the whole per-request work of suggestions in
the track routes) for a project without findings and one with findings, and the extra encoding of
an answer that carries one suggestion. No server, no store: the cache is filled by hand.
"""

from __future__ import annotations

import timeit
from collections.abc import Callable
from typing import Any

import msgspec

from actors.insights.suggestions import Windows, suggest
from protocol.record import SOURCE_EVENTS, Event
from protocol.tracking import AISuggestion, TrackEventResponse
from server.suggestions import Computed, SuggestionCache
from storage.base import EventCount, ServiceAggregate


def _service(name: str, event: str, n: int, *, mean_ms: float = 0.0, errors: int = 0) -> ServiceAggregate:
    return ServiceAggregate(
        service_name=name, event_count=n, unique_events=1, with_status=n, errors=errors,
        with_response_time=n if mean_ms else 0, response_time_sum=n * mean_ms, last_seen_ms=0,
        top_events=[EventCount(event, n)],
    )


def _per_call(fn: Callable[[], Any], number: int) -> float:
    fn()
    return min(timeit.repeat(fn, number=number, repeat=5)) / number


def main() -> None:
    cache = SuggestionCache(store=None)  # type: ignore[arg-type]  # never read: the entries are set by hand
    cache._entries["quiet"] = Computed([], Windows(day=[]), 0, 0.0)
    day = [_service("payment-service", "payment-completed", 120, mean_ms=900.0),
           _service("checkout", "checkout-submitted", 400, errors=40)]
    windows = Windows(day=day, samples={"payment-service": [850.0 + (i * 37) % 100 for i in range(120)]})
    cache._entries["busy"] = Computed(suggest(windows), windows, 0, 0.0)
    print("per track answer (SuggestionCache.for_event):")
    for label, project, service, name in [
        ("project without findings", "quiet", "user-service", "user-login"),
        ("findings, none about the event", "busy", "user-service", "user-login"),
        ("findings about the event", "busy", "payment-service", "payment-completed"),
    ]:
        seconds = _per_call(lambda: cache.for_event(project, service, name), 1_000_000)  # noqa: B023
        print(f"  {label:34} {seconds * 1e9:6.0f} ns")
    events = [Event(id=f"e{i}", project="busy", name="api-call", source=SOURCE_EVENTS, timestamp=0, received_at=0,
                    payload=msgspec.Raw(b"{}"), service_name=f"svc{i % 5}") for i in range(100)]
    print("per 100-event batch (SuggestionCache.for_batch):")
    for project in ("quiet", "busy"):
        seconds = _per_call(lambda: cache.for_batch(project, iter(events)), 20_000)  # noqa: B023
        print(f"  {project:34} {seconds * 1e6:6.2f} µs ({seconds * 1e9 / 100:.0f} ns per event)")
    encoder = msgspec.json.Encoder()
    one: list[AISuggestion] = cache.for_event("busy", "payment-service", "payment-completed")[:1]
    print("encoding a track answer:")
    for label, suggestions in [("no suggestion", []), ("one suggestion", one)]:
        answer = TrackEventResponse(success=True, message="Event tracked successfully", suggestions=suggestions,
                                    eventId="evt_0123456789", timestamp="2026-12-02T00:00:00.000Z")
        seconds = _per_call(lambda: encoder.encode(answer), 200_000)  # noqa: B023
        print(f"  {label:34} {seconds * 1e9:6.0f} ns, {len(encoder.encode(answer))} bytes")


if __name__ == "__main__":
    main()
