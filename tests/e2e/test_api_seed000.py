"""Seed 000 (Real-Time Behavioral Tracking API) end to end: ingestion, batch, health, performance.

The event ingestion example is sent exactly as the seed writes it, including the literal
``Authorization: Bearer {token}`` header: on a loopback bind an unknown key acts on the default
project, so the example works as written.
"""

from __future__ import annotations

import copy
import time
from datetime import datetime
from typing import Any

import httpx

from tests.e2e.server_process import ServerProcess

SEED_EVENT: dict[str, Any] = {
    "sessionId": "session_123",
    "userId": "user_456",
    "deviceType": "mobile",
    "eventType": "page_view",
    "eventData": {
        "url": "/product/123",
        "referrer": "https://google.com",
        "timestamp": 1703123456789,
        "viewport": {"width": 375, "height": 812},
        "performance": {"loadTime": 1250, "renderTime": 850, "interactionTime": 200},
    },
    "elementContext": {
        "element": "button",
        "elementId": "cta-primary",
        "className": "btn-primary",
        "text": "Get Started",
        "position": {"x": 187, "y": 400},
    },
    "interactionContext": {
        "interaction": "click",
        "duration": 150,
        "force": 0.8,
        "previousElement": "input_email",
        "nextElement": None,
    },
}

SEED_HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer {token}"}
COMPONENTS = ("eventIngestion", "realTimeProcessing", "webSocketConnections", "database", "messageQueue")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_iso_ms(text: str) -> int:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert parsed.tzinfo is not None, text
    return round(parsed.timestamp() * 1000)


def behavioral_event(index: int, **extra: Any) -> dict[str, Any]:
    """A seed-shaped event, varied by ``index`` (click events in one session)."""
    event = copy.deepcopy(SEED_EVENT)
    event["eventType"] = "click"
    event["eventData"]["url"] = f"/product/{index}"
    event["eventData"]["timestamp"] = 1703123456789 + index
    return event | extra


async def ingest(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    answer = await client.post("/api/v1/behavioral/events", json=body, headers=SEED_HEADERS)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def stored_events(client: httpx.AsyncClient, query: str = "") -> list[dict[str, Any]]:
    answer = await client.get(f"/api/events{query}")
    assert answer.status_code == 200, answer.text
    return answer.json()["events"]


def assert_ingest_response(body: dict[str, Any]) -> None:
    """The seed's Response: eventId, processed, processingTime (ms), triggers."""
    assert isinstance(body["eventId"], str) and body["eventId"]
    assert body["processed"] is True
    assert is_number(body["processingTime"]) and body["processingTime"] >= 0
    assert body["triggers"] == []


async def test_ingest_the_seed_example_as_written(client: httpx.AsyncClient) -> None:
    answer = await client.post("/api/v1/behavioral/events", json=SEED_EVENT, headers=SEED_HEADERS)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert_ingest_response(body)

    [event] = await stored_events(client)
    assert event["id"] == body["eventId"]
    assert event["name"] == "page_view"
    assert event["userId"] == "user_456"
    assert event["payload"] == SEED_EVENT
    # the client's time is eventData.timestamp, in the past, so it is kept as sent
    assert event["timestamp"] == 1703123456789

    # the session and the user are queryable
    assert [e["id"] for e in await stored_events(client, "?userId=user_456")] == [body["eventId"]]
    assert [e["id"] for e in await stored_events(client, "?type=page_view")] == [body["eventId"]]


async def test_ingest_without_authorization_header_on_loopback(client: httpx.AsyncClient) -> None:
    answer = await client.post("/api/v1/behavioral/events", json={"eventType": "scroll", "sessionId": "s-1"})
    assert answer.status_code == 200, answer.text
    assert_ingest_response(answer.json())
    assert [e["name"] for e in await stored_events(client)] == ["scroll"]


async def test_batch_with_events_object_and_bare_array(client: httpx.AsyncClient) -> None:
    wrapped = [behavioral_event(i) for i in range(3)]
    answer = await client.post("/api/v1/behavioral/batch", json={"events": wrapped}, headers=SEED_HEADERS)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["processed"] == 3
    assert body["triggers"] == []
    assert is_number(body["processingTime"])
    assert body.get("rejected", []) == []
    first_ids = [r["eventId"] for r in body["results"]]
    assert [r["index"] for r in body["results"]] == [0, 1, 2]
    assert len(set(first_ids)) == 3

    bare = [behavioral_event(i) for i in range(3, 5)]
    answer = await client.post("/api/v1/behavioral/batch", json=bare, headers=SEED_HEADERS)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["processed"] == 2
    second_ids = [r["eventId"] for r in body["results"]]

    events = await stored_events(client)
    assert {e["id"] for e in events} == set(first_ids + second_ids)
    by_id = {e["id"]: e for e in events}
    for event_id, sent in zip(first_ids + second_ids, wrapped + bare, strict=True):
        assert by_id[event_id]["payload"] == sent
        assert by_id[event_id]["timestamp"] == sent["eventData"]["timestamp"]
        assert by_id[event_id]["name"] == "click"
    # newest first
    assert [e["payload"]["eventData"]["url"] for e in events] == [f"/product/{i}" for i in range(4, -1, -1)]


async def test_health_reports_every_component(client: httpx.AsyncClient) -> None:
    before = now_ms()
    answer = await client.get("/api/v1/behavioral/health")
    after = now_ms()
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "healthy"
    assert before - 1000 <= parse_iso_ms(body["timestamp"]) <= after + 1000
    assert set(COMPONENTS) <= set(body["components"])
    for component in COMPONENTS:
        assert body["components"][component] == "healthy", component
    assert isinstance(body["metrics"], dict)


async def test_performance_reflects_activity(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        idle = (await client.get("/api/v1/behavioral/monitoring/performance")).json()
        assert idle["metrics"]["processingLatency"]["p50"] is None  # nothing processed yet
        assert idle["metrics"]["eventIngestionRate"] == 0

        for i in range(5):
            assert_ingest_response(await ingest(client, behavioral_event(i)))
        batch = await client.post("/api/v1/behavioral/batch", json=[behavioral_event(i) for i in range(5, 8)])
        assert batch.status_code == 200
        await client.post("/api/events/track/page-view", json={"serviceName": "web-analytics"})
        bad = await client.post("/api/v1/behavioral/events", json={"sessionId": "no-event-type"})
        assert bad.status_code == 400

        answer = await client.get("/api/v1/behavioral/monitoring/performance")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    metrics = body["metrics"]
    assert is_number(metrics["eventIngestionRate"]) and metrics["eventIngestionRate"] > 0
    latency = metrics["processingLatency"]
    assert all(is_number(latency[p]) for p in ("p50", "p95", "p99")), latency
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
    api = metrics["apiResponseTime"]
    assert all(is_number(api[k]) for k in ("average", "median", "max")), api
    assert 0 < api["median"] <= api["max"]
    assert api["average"] <= api["max"]
    assert metrics["errorRate"] == 0  # the 400 was the client's mistake, not a server error
    assert is_number(metrics["throughput"]) and metrics["throughput"] > 0
    assert body["status"] == "healthy"

    capacity = body["capacity"]
    assert type(capacity["current"]) is int and capacity["current"] == 0  # no stream is open
    assert type(capacity["maximum"]) is int and capacity["maximum"] > 0
    assert capacity["utilization"] == 0

    assert body["events"]["stored"] == 9
    assert body["events"]["duplicates"] == 0
    assert body["events"]["rejected"] == 1
