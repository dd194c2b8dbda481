"""Seed 004 (AI Event Tracking System) end to end: the document's own example requests, as written.

Each test sends what the seed shows (or what its client examples would send) to a fresh server and
checks the answer field by field against the seed's response shapes, and that the numbers in the
answers are computed from what was sent.
"""

from __future__ import annotations

import copy
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

# -- the seed's examples, verbatim ---------------------------------------------------------------

AI_EVENT_PAYLOAD: dict[str, Any] = {
    "userAgent": "Mozilla/5.0...",
    "referrer": "https://previous-page.com",
    "sessionId": "session-abc123",
    "userRole": "premium-user",
    "correlationId": "req-12345",
    "statusCode": 200,
    "responseTimeMs": 150,
    "serviceName": "user-service",
    "metadata": {"feature": "authentication", "version": "2.1.0", "customField": "value"},
}

BATCH_TRACK_EVENT_REQUEST: dict[str, Any] = {
    "batchId": "batch-xyz789",
    "events": [
        {
            "eventName": "page-view",
            "payload": {
                "serviceName": "web-analytics",
                "sessionId": "session-123",
                "metadata": {"page": "/dashboard", "loadTime": 1200},
            },
        },
        {
            "eventName": "api-call",
            "payload": {
                "serviceName": "api-gateway",
                "statusCode": 200,
                "responseTimeMs": 85,
                "correlationId": "req-456",
            },
        },
    ],
}

SEED_CORS_ALLOW_HEADERS = (
    "Content-Type, Authorization, X-Requested-With, X-Monitor-Request, X-User-Id, X-Session-Id, "
    "X-Correlation-Id, Accept, Origin, User-Agent, Referer"
)
SEED_CORS_ALLOW_METHODS = "GET, POST, PUT, DELETE, OPTIONS, PATCH"

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000


# -- helpers --------------------------------------------------------------------------------------


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def parse_iso_ms(text: str) -> int:
    """Unix ms of an ISO 8601 string; fails the test when it is not ISO 8601 with a timezone."""
    assert isinstance(text, str), text
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert parsed.tzinfo is not None, f"timestamp without a timezone: {text!r}"
    return round(parsed.timestamp() * 1000)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def assert_suggestion_shape(suggestion: dict[str, Any]) -> None:
    """An AISuggestion as the seed defines it (id and title required, the rest optional)."""
    assert isinstance(suggestion["id"], str) and suggestion["id"]
    assert isinstance(suggestion["title"], str) and suggestion["title"]
    if "score" in suggestion:
        assert is_number(suggestion["score"]) and 0 <= suggestion["score"] <= 1
    if "action" in suggestion:
        assert isinstance(suggestion["action"]["label"], str)
    if "tags" in suggestion:
        assert all(isinstance(tag, str) for tag in suggestion["tags"])


async def track(client: httpx.AsyncClient, name: str, payload: dict[str, Any], *, user: str | None = None,
                headers: dict[str, str] | None = None) -> dict[str, Any]:
    sent = {"X-User-Id": user} if user is not None else {}
    answer = await client.post(f"/api/events/track/{name}", json=payload, headers={**sent, **(headers or {})})
    assert answer.status_code == 200, answer.text
    return answer.json()


async def list_events(client: httpx.AsyncClient, query: str = "") -> dict[str, Any]:
    answer = await client.get(f"/api/events{query}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def by_id(listing: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {event["id"]: event for event in listing["events"]}


def assert_stored_event_shape(event: dict[str, Any]) -> None:
    """StoredEvent: id, name, userId (nullable), serviceName, payload, timestamp as integer unix ms."""
    assert isinstance(event["id"], str) and event["id"]
    assert isinstance(event["name"], str) and event["name"]
    assert "userId" in event and (event["userId"] is None or isinstance(event["userId"], str))
    assert "serviceName" in event
    assert isinstance(event["payload"], dict)
    assert type(event["timestamp"]) is int
    # unix milliseconds, not seconds: after 2020-01-01
    assert event["timestamp"] > 1_577_836_800_000


# -- 1. single event tracking --------------------------------------------------------------------


async def test_track_single_event_with_the_seed_payload(client: httpx.AsyncClient) -> None:
    before = now_ms()
    answer = await client.post(
        "/api/events/track/user-login",
        json=AI_EVENT_PAYLOAD,
        headers={"Content-Type": "application/json", "X-User-Id": "user-123"},
    )
    after = now_ms()
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()

    # TrackEventResponse
    assert body["success"] is True
    assert body["message"] == "Event tracked successfully"
    # the project's first event: no rule has data yet, and nothing is a placeholder (the shape of
    # real suggestions in track answers: tests/e2e/test_suggestions.py)
    assert body["suggestions"] == []
    assert isinstance(body["eventId"], str) and body["eventId"]
    stamped = parse_iso_ms(body["timestamp"])
    assert before - 1 <= stamped <= after + 1, "no timestamp was sent, so the event time is the receive time"

    listing = await list_events(client)
    assert listing["total"] == 1
    [event] = listing["events"]
    assert_stored_event_shape(event)
    assert event["id"] == body["eventId"]
    assert event["name"] == "user-login"
    assert event["userId"] == "user-123"
    assert event["serviceName"] == "user-service"
    assert event["payload"] == AI_EVENT_PAYLOAD
    assert event["timestamp"] == stamped


async def test_track_two_events_get_distinct_ids(client: httpx.AsyncClient) -> None:
    first = await track(client, "user-login", AI_EVENT_PAYLOAD, user="user-123")
    second = await track(client, "user-login", AI_EVENT_PAYLOAD, user="user-123")
    assert first["eventId"] != second["eventId"]
    assert second.get("duplicate", False) is False
    listing = await list_events(client)
    assert {e["id"] for e in listing["events"]} == {first["eventId"], second["eventId"]}


# -- 2. batch tracking ----------------------------------------------------------------------------


async def test_track_batch_with_the_seed_request(client: httpx.AsyncClient) -> None:
    before = now_ms()
    answer = await client.post("/api/events/track/batch", json=BATCH_TRACK_EVENT_REQUEST)
    after = now_ms()
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["success"] is True
    assert body["processedCount"] == 2
    assert body["suggestions"] == []  # the project's first events: no rule has data yet
    assert body["batchId"] == "batch-xyz789"
    assert before - 1 <= parse_iso_ms(body["timestamp"]) <= after + 1

    listing = await list_events(client)
    assert listing["total"] == 2
    stored = {event["name"]: event for event in listing["events"]}
    assert set(stored) == {"page-view", "api-call"}
    for item in BATCH_TRACK_EVENT_REQUEST["events"]:
        event = stored[item["eventName"]]
        assert_stored_event_shape(event)
        assert event["serviceName"] == item["payload"]["serviceName"]
        assert event["payload"] == item["payload"]
        assert event["userId"] is None
        assert before - 1 <= event["timestamp"] <= after + 1
    assert sorted(listing["services"]) == ["api-gateway", "web-analytics"]


async def test_track_batch_without_batch_id_and_without_payloads(client: httpx.AsyncClient) -> None:
    """BatchTrackEventRequest: batchId is optional, and so is each item's payload."""
    answer = await client.post("/api/events/track/batch", json={"events": [{"eventName": "heartbeat"}]})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["success"] is True
    assert body["processedCount"] == 1
    assert "batchId" not in body  # the seed's type is string: omitted, never null
    [event] = (await list_events(client))["events"]
    assert event["name"] == "heartbeat"
    assert "serviceName" not in event  # seed: serviceName?: string
    assert event["payload"] == {}


# -- 3. event retrieval: the seed's example queries ----------------------------------------------


async def test_events_listing_example_queries(client: httpx.AsyncClient) -> None:
    now = now_ms()
    before_cutoff = parse_iso_ms("2025-08-26T12:00:00Z")
    sent = [
        ("user-login", {"serviceName": "user-service", "correlationId": "user-journey-123"}, "user-123", now - 3000),
        ("payment-started", {"serviceName": "payment-service", "correlationId": "user-journey-123"}, "user-123",
         now - 2000),
        ("payment-completed", {"serviceName": "payment-service", "statusCode": 200}, "user-456", now - 1000),
        ("payment-legacy", {"serviceName": "payment-service"}, "user-789", before_cutoff),
        ("page-view", {"serviceName": "web-analytics"}, None, now - 4000),
    ]
    ids: dict[str, str] = {}
    for name, payload, user, stamp in sent:
        ids[name] = (await track(client, name, {**payload, "timestamp": stamp}, user=user))["eventId"]

    # Get recent events for AI training
    recent = await list_events(client, "?limit=1000&from=2025-08-27T00:00:00Z")
    assert {e["name"] for e in recent["events"]} == {"user-login", "payment-started", "payment-completed",
                                                       "page-view"}
    assert recent["total"] == 5
    assert recent["filtered"] == 4
    assert sorted(recent["services"]) == ["payment-service", "user-service", "web-analytics"]
    assert parse_iso_ms(recent["timeRange"]["from"]) == parse_iso_ms("2025-08-27T00:00:00Z")
    assert parse_iso_ms(recent["timeRange"]["to"]) >= now - 1000
    for event in recent["events"]:
        assert_stored_event_shape(event)
        assert event["id"] == ids[event["name"]]
    assert [e["timestamp"] for e in recent["events"]] == sorted((e["timestamp"] for e in recent["events"]),
                                                                reverse=True)

    # Get service-specific events
    payments = await list_events(client, "?serviceName=payment-service&limit=500")
    assert [e["name"] for e in payments["events"]] == ["payment-completed", "payment-started", "payment-legacy"]
    assert all(e["serviceName"] == "payment-service" for e in payments["events"])
    assert payments["filtered"] == 3
    assert payments["total"] == 5
    legacy = next(e for e in payments["events"] if e["name"] == "payment-legacy")
    assert legacy["timestamp"] == before_cutoff
    assert legacy["userId"] == "user-789"

    # Get user journey events
    journey = await list_events(client, "?correlationId=user-journey-123")
    assert [e["name"] for e in journey["events"]] == ["payment-started", "user-login"]
    assert all(e["payload"]["correlationId"] == "user-journey-123" for e in journey["events"])
    assert journey["filtered"] == 2
    assert parse_iso_ms(journey["timeRange"]["from"]) == now - 3000
    assert parse_iso_ms(journey["timeRange"]["to"]) == now - 2000


# -- 4. service analytics -------------------------------------------------------------------------


def minute_start(ms: int) -> int:
    return ms - ms % MINUTE_MS


async def send_known_service_traffic(client: httpx.AsyncClient, base: int) -> list[int]:
    """payment-service: 4 events (3 with a statusCode, 2 of them >= 400; 3 with a response time);
    user-service: 2 events, no errors. Event k is stamped in minute k after ``base`` (a minute start),
    since the server answers time-ranged analytics at minute granularity; returns the timestamps."""
    traffic = [
        ("checkout", {"serviceName": "payment-service", "statusCode": 200, "responseTimeMs": 100}),
        ("checkout", {"serviceName": "payment-service", "statusCode": 500, "responseTimeMs": 300}),
        ("refund", {"serviceName": "payment-service", "statusCode": 404, "responseTimeMs": 200}),
        ("checkout", {"serviceName": "payment-service"}),
        ("user-login", {"serviceName": "user-service", "statusCode": 200, "responseTimeMs": 150}),
        ("profile-update", {"serviceName": "user-service", "statusCode": 201, "responseTimeMs": 50}),
    ]
    stamps = [base + k * MINUTE_MS + 1234 for k in range(len(traffic))]
    for (name, payload), stamp in zip(traffic, stamps, strict=True):
        await track(client, name, {**payload, "timestamp": stamp}, user="user-1")
    return stamps


def assert_service_stats_shape(stats: dict[str, Any]) -> None:
    assert isinstance(stats["serviceName"], str)
    assert type(stats["eventCount"]) is int
    assert type(stats["uniqueEvents"]) is int
    parse_iso_ms(stats["lastSeen"])
    for top in stats["topEvents"]:
        assert isinstance(top["eventName"], str)
        assert type(top["count"]) is int
        assert is_number(top["percentage"])


async def test_services_analytics_are_computed_from_the_events(client: httpx.AsyncClient) -> None:
    stamps = await send_known_service_traffic(client, minute_start(now_ms()) - 10 * MINUTE_MS)

    answer = await client.get("/api/events/services")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    services = {s["serviceName"]: s for s in body["services"]}
    assert set(services) == {"payment-service", "user-service"}
    for stats in services.values():
        assert_service_stats_shape(stats)

    payment = services["payment-service"]
    assert payment["eventCount"] == 4
    assert payment["uniqueEvents"] == 2
    assert payment["avgResponseTime"] == pytest.approx(200.0, abs=0.05)  # (100 + 300 + 200) / 3
    assert payment["errorRate"] == pytest.approx(200 / 3, abs=0.05)  # 2 of 3 with a statusCode are >= 400
    assert parse_iso_ms(payment["lastSeen"]) == stamps[3]
    assert payment["topEvents"][0] == {"eventName": "checkout", "count": 3, "percentage": pytest.approx(75.0)}
    assert payment["topEvents"][1] == {"eventName": "refund", "count": 1, "percentage": pytest.approx(25.0)}

    user = services["user-service"]
    assert user["eventCount"] == 2
    assert user["uniqueEvents"] == 2
    assert user["avgResponseTime"] == pytest.approx(100.0, abs=0.05)
    assert user["errorRate"] == pytest.approx(0.0)
    assert parse_iso_ms(user["lastSeen"]) == stamps[5]
    assert {(t["eventName"], t["count"]) for t in user["topEvents"]} == {("user-login", 1), ("profile-update", 1)}
    assert all(t["percentage"] == pytest.approx(50.0) for t in user["topEvents"])

    summary = body["summary"]
    assert summary["totalServices"] == 2
    assert summary["totalEvents"] == 6
    assert summary["avgResponseTime"] == pytest.approx(160.0, abs=0.05)  # 800 ms over 5 events
    assert summary["overallErrorRate"] == pytest.approx(40.0, abs=0.05)  # 2 of 5 with a statusCode


async def test_services_analytics_filters_by_service_and_time(client: httpx.AsyncClient) -> None:
    base = minute_start(now_ms()) - 10 * MINUTE_MS
    await send_known_service_traffic(client, base)

    only = (await client.get("/api/events/services", params={"serviceName": "user-service"})).json()
    assert [s["serviceName"] for s in only["services"]] == ["user-service"]
    assert only["summary"]["totalServices"] == 1
    assert only["summary"]["totalEvents"] == 2

    # from the start of event 2's minute: the refund onwards
    recent = (await client.get("/api/events/services", params={"from": iso(base + 2 * MINUTE_MS)})).json()
    services = {s["serviceName"]: s for s in recent["services"]}
    assert services["payment-service"]["eventCount"] == 2
    assert services["payment-service"]["errorRate"] == pytest.approx(100.0)  # the 404; the other has no status
    assert recent["summary"]["totalEvents"] == 4

    # to the end of event 1's minute: only the first two payment events (unix ms works too)
    early = (await client.get("/api/events/services", params={"to": str(base + 2 * MINUTE_MS - 1)})).json()
    assert [(s["serviceName"], s["eventCount"]) for s in early["services"]] == [("payment-service", 2)]
    assert early["services"][0]["errorRate"] == pytest.approx(50.0)
    assert early["services"][0]["avgResponseTime"] == pytest.approx(200.0)


# -- 5. statistics --------------------------------------------------------------------------------


async def test_statistics_are_computed_from_the_events(client: httpx.AsyncClient) -> None:
    now = now_ms()
    two_days_ago = now - 2 * DAY_MS
    sent = [
        ("page-view", "web-analytics", two_days_ago, 200, 80),
        ("page-view", "web-analytics", two_days_ago + 1000, 200, 120),
        ("page-view", "web-analytics", now - 1000, 503, 400),
        ("api-call", "api-gateway", now - 900, 200, 50),
        ("api-call", "api-gateway", now - 800, 200, 70),
        ("purchase-completed", "payment-service", now - 700, 200, 300),
    ]
    for name, service, stamp, status, rt in sent:
        await track(client, name, {"serviceName": service, "timestamp": stamp, "statusCode": status,
                                   "responseTimeMs": rt})

    answer = await client.get("/api/events/statistics")
    assert answer.status_code == 200, answer.text
    stats = answer.json()
    assert stats["totalEventCount"] == 6
    assert stats["totalUniqueEvents"] == 3
    assert stats["totalServices"] == 3

    day = lambda ms: datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")  # noqa: E731
    expected_days: dict[str, int] = {}
    for _, _, stamp, _, _ in sent:
        expected_days[day(stamp)] = expected_days.get(day(stamp), 0) + 1
    assert {d["date"]: d["count"] for d in stats["perDay"]} == expected_days
    assert [d["date"] for d in stats["perDay"]] == sorted(expected_days)

    top = [(t["eventName"], t["count"]) for t in stats["topEvents"]]
    assert top == [("page-view", 3), ("api-call", 2), ("purchase-completed", 1)]
    assert [t["percentage"] for t in stats["topEvents"]] == [pytest.approx(50.0), pytest.approx(33.3, abs=0.05),
                                                            pytest.approx(16.7, abs=0.05)]

    breakdown = {s["serviceName"]: s for s in stats["serviceBreakdown"]}
    assert set(breakdown) == {"web-analytics", "api-gateway", "payment-service"}
    for service in breakdown.values():
        assert_service_stats_shape(service)
    web = breakdown["web-analytics"]
    assert web["eventCount"] == 3
    assert web["uniqueEvents"] == 1
    assert web["avgResponseTime"] == pytest.approx(200.0, abs=0.05)
    assert web["errorRate"] == pytest.approx(100 / 3, abs=0.05)
    assert parse_iso_ms(web["lastSeen"]) == now - 1000
    assert breakdown["api-gateway"]["avgResponseTime"] == pytest.approx(60.0, abs=0.05)
    assert breakdown["api-gateway"]["errorRate"] == pytest.approx(0.0)


# -- 8. suggestions --------------------------------------------------------------------------------


async def test_suggestions_context_counts_the_last_day(client: httpx.AsyncClient) -> None:
    now = now_ms()
    # 20 timed payments in the last day at 900-999 ms: enough for the slow-service rule (docs/suggestions.md)
    stamps = [now - 1000 * (i + 1) for i in range(20)] + [now - 2 * DAY_MS]
    for i, stamp in enumerate(stamps):
        await track(client, "payment-completed", {"serviceName": "payment-service",
                                                  "responseTimeMs": 900 + (i * 37) % 100, "timestamp": stamp})
    await track(client, "page-view", {"serviceName": "web-analytics"})

    answer = await client.get("/api/events/suggestions",
                              params={"serviceName": "payment-service", "eventName": "payment-completed"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [s["id"] for s in body["suggestions"]] == ["sug-slow-payment-service"]
    for suggestion in body["suggestions"]:
        assert_suggestion_shape(suggestion)
        assert type(suggestion["basedOn"]["sampleSize"]) is int
    assert body["suggestions"][0]["basedOn"]["sampleSize"] == 20  # the last day's timed events only
    context = body["context"]
    assert context["serviceName"] == "payment-service"
    assert context["timeRange"] == "last-24h"
    assert context["totalEvents"] == 20  # the two-day-old event and the other service are not counted

    everything = (await client.get("/api/events/suggestions")).json()
    assert everything["context"]["totalEvents"] == 21
    assert everything["context"]["timeRange"] == "last-24h"


# -- CORS: the seed's curl examples ---------------------------------------------------------------


def header_list(value: str) -> set[str]:
    return {part.strip().lower() for part in value.split(",") if part.strip()}


async def test_cors_preflight_curl_example(client: httpx.AsyncClient) -> None:
    answer = await client.options(
        "/api/events/track/test-event",
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Content-Type",
        },
    )
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == "*"
    assert header_list(SEED_CORS_ALLOW_METHODS) <= header_list(answer.headers["access-control-allow-methods"])
    assert header_list(SEED_CORS_ALLOW_HEADERS) <= header_list(answer.headers["access-control-allow-headers"])
    assert answer.headers["access-control-max-age"] == "86400"
    assert answer.headers.get("access-control-allow-credentials", "false") == "false"
    # a preflight is not an event
    assert (await list_events(client))["total"] == 0


async def test_cors_actual_request_curl_example(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        "/api/events/track/test-event",
        content=b'{"serviceName":"test","metadata":{"test":true}}',
        headers={"Content-Type": "application/json", "Origin": "http://localhost:3000"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == "*"
    assert "origin" in header_list(answer.headers.get("vary", ""))
    event_id = answer.json()["eventId"]

    listing = await client.get("/api/events", headers={"Origin": "http://localhost:3000"})
    assert listing.headers["access-control-allow-origin"] == "*"
    [event] = listing.json()["events"]
    assert event["id"] == event_id
    assert event["name"] == "test-event"
    assert event["serviceName"] == "test"
    assert event["payload"] == {"serviceName": "test", "metadata": {"test": True}}


# -- client examples' request shapes --------------------------------------------------------------


async def test_react_hook_enriched_payload(client: httpx.AsyncClient) -> None:
    """useEventTracker.track(): the payload spread, then serviceName, sessionId, userAgent, referrer,
    timestamp: Date.now() and metadata with url, path and userRole; X-User-Id from localStorage."""
    clicked_at = now_ms() - 250  # Date.now() on the browser, a moment before the request
    payload = {"metadata": {"component": "UserDashboard", "loadTime": 1234.5600000023842}}
    enriched = {
        **payload,
        "serviceName": "web-analytics",
        "sessionId": "anonymous",
        "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36",
        "referrer": "",
        "timestamp": clicked_at,
        "metadata": {
            **payload["metadata"],
            "url": "http://localhost:3000/dashboard?tab=1",
            "path": "/dashboard",
            "userRole": "guest",
        },
    }
    result = await track(client, "page-view", enriched, user="anonymous",
                         headers={"Content-Type": "application/json"})
    assert result["success"] is True
    assert parse_iso_ms(result["timestamp"]) == clicked_at

    # handleApiCall: a request-start/success pair sharing a correlationId
    correlation = f"api-{clicked_at}"
    await track(client, "api-request-start", {**enriched, "correlationId": correlation,
                                              "metadata": {"endpoint": "/api/user/profile", "method": "GET"}},
                user="anonymous")
    await track(client, "api-request-success", {**enriched, "correlationId": correlation, "statusCode": 200,
                                                "responseTimeMs": 42, "metadata": {"endpoint": "/api/user/profile"}},
                user="anonymous")

    # trackBatch(): batchId `batch-${Date.now()}`, no X-User-Id header
    batch = {
        "batchId": f"batch-{clicked_at}",
        "events": [
            {"eventName": "user-interaction", "payload": {"metadata": {"action": "dashboard-refresh"},
                                                          "serviceName": "web-analytics", "sessionId": "anonymous"}},
            {"eventName": "user-interaction", "payload": {"metadata": {"action": "load-profile"},
                                                          "serviceName": "web-analytics", "sessionId": "anonymous"}},
        ],
    }
    answer = await client.post("/api/events/track/batch", json=batch)
    assert answer.status_code == 200, answer.text
    assert answer.json()["batchId"] == f"batch-{clicked_at}"
    assert answer.json()["processedCount"] == 2

    listing = await list_events(client)
    assert listing["total"] == 5
    page_view = next(e for e in listing["events"] if e["name"] == "page-view")
    assert page_view["id"] == result["eventId"]
    assert page_view["timestamp"] == clicked_at
    assert page_view["userId"] == "anonymous"
    assert page_view["serviceName"] == "web-analytics"
    assert page_view["payload"] == enriched

    journey = await list_events(client, f"?correlationId={correlation}")
    assert [e["name"] for e in journey["events"]] == ["api-request-success", "api-request-start"]
    services = (await client.get("/api/events/services")).json()["services"]
    [web] = services
    assert web["eventCount"] == 5
    assert web["avgResponseTime"] == pytest.approx(42.0)
    assert web["errorRate"] == pytest.approx(0.0)


async def test_vanilla_tracker_payloads(client: httpx.AsyncClient) -> None:
    """The vanilla EventTracker: serviceName, sessionId 'session-<ms>-<random>', userAgent, referrer,
    metadata with url and timestamp; X-User-Id 'anonymous' unless stored."""
    session = f"session-{now_ms()}-k3j9x2m1q"
    base = {"serviceName": "web-analytics", "sessionId": session, "userAgent": "Mozilla/5.0 (X11; Linux x86_64)",
            "referrer": "https://www.google.com/"}
    page_view = {**base, "metadata": {"title": "Shop", "loadTime": 812, "url": "http://localhost:3000/",
                                      "timestamp": now_ms()}}
    click = {**base, "metadata": {"element": "button", "text": "Buy now", "id": "", "className": "btn btn-primary",
                                  "href": "", "url": "http://localhost:3000/", "timestamp": now_ms()}}
    submit = {**base, "metadata": {"formId": "signup", "action": "http://localhost:3000/signup", "method": "post",
                                   "url": "http://localhost:3000/", "timestamp": now_ms()}}
    sent = {"page-view": page_view, "element-click": click, "form-submit": submit}
    ids = {}
    for name, payload in sent.items():
        ids[name] = (await track(client, name, payload, user="anonymous"))["eventId"]

    listing = await list_events(client, "?userId=anonymous&serviceName=web-analytics")
    assert listing["filtered"] == 3
    for event in listing["events"]:
        assert event["id"] == ids[event["name"]]
        assert event["payload"] == sent[event["name"]]
        assert event["userId"] == "anonymous"


async def test_express_and_fastapi_backend_payloads(client: httpx.AsyncClient) -> None:
    """Backend trackers: userId in the payload, X-User-Id = req.user.id || payload.userId || 'system';
    FastAPI sends userAgent/referrer as null when the request had none, and a float responseTimeMs."""
    express_meta = {"serverTimestamp": now_ms(), "nodeVersion": "v20.11.0", "environment": "development"}
    attempt = {"userId": "jane@example.com", "serviceName": "api-gateway", "metadata": {
        "source": "api", "validation": "pending", **express_meta}}
    received = {"correlationId": "req-1724681445123-abc123xyz", "serviceName": "api-gateway",
                "userAgent": "curl/8.4.0", "metadata": {"method": "POST", "path": "/api/users", "query": {},
                                                       "ip": "::1", "userAgent": "curl/8.4.0", **express_meta}}
    fastapi_sent = {"correlationId": "req-1724681445-4242", "statusCode": 201, "responseTimeMs": 12.345678,
                    "serviceName": "python-api", "userAgent": None, "referrer": None,
                    "metadata": {"method": "POST", "path": "/users/", "serverTimestamp": now_ms(),
                                 "pythonVersion": "3.11", "environment": "development", "clientIP": None}}
    fastapi_created = {"userId": "user-123", "serviceName": "python-api",
                       "metadata": {"source": "python-api", "serverTimestamp": now_ms(), "pythonVersion": "3.11",
                                    "environment": "development"}}

    ids = {
        "user-creation-attempt": (await track(client, "user-creation-attempt", attempt,
                                              user="jane@example.com"))["eventId"],
        "api-request-received": (await track(client, "api-request-received", received, user="system"))["eventId"],
        "api-response-sent": (await track(client, "api-response-sent", fastapi_sent, user="system"))["eventId"],
        "user-created": (await track(client, "user-created", fastapi_created, user="user-123"))["eventId"],
    }
    events = by_id(await list_events(client))
    assert set(events) == set(ids.values())
    attempt_event = events[ids["user-creation-attempt"]]
    assert attempt_event["userId"] == "jane@example.com"
    assert attempt_event["payload"] == attempt
    assert events[ids["api-request-received"]]["userId"] == "system"
    response_event = events[ids["api-response-sent"]]
    assert response_event["userId"] == "system"
    assert response_event["serviceName"] == "python-api"
    assert response_event["payload"] == fastapi_sent
    assert events[ids["user-created"]]["userId"] == "user-123"

    system = await list_events(client, "?userId=system")
    assert {e["name"] for e in system["events"]} == {"api-request-received", "api-response-sent"}
    python = {s["serviceName"]: s for s in (await client.get("/api/events/services")).json()["services"]}
    assert python["python-api"]["avgResponseTime"] == pytest.approx(12.3, abs=0.05)
    assert python["python-api"]["errorRate"] == pytest.approx(0.0)
    assert "avgResponseTime" not in python["api-gateway"] or python["api-gateway"]["avgResponseTime"] is None


async def test_user_id_in_payload_is_used_without_header(client: httpx.AsyncClient) -> None:
    """The Express tracker falls back to payload.userId; a client that sends only that gets it stored."""
    payload = copy.deepcopy(AI_EVENT_PAYLOAD) | {"userId": "user-777"}
    result = await track(client, "user-login", payload)
    [event] = (await list_events(client, "?userId=user-777"))["events"]
    assert event["id"] == result["eventId"]
    assert event["userId"] == "user-777"
