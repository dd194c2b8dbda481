"""GET /api/events/anomalies and the live ``anomaly`` stream message, against a real server process.

Traffic is backfilled with seed 004's payload ``timestamp`` (the minutes are in the past), so the
per-minute aggregates hold a known history with one injected response-time spike.
"""

from __future__ import annotations

import math
import pathlib
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import trio

from tests.e2e.server_process import ServerProcess, serving
from tests.e2e.sse_client import SSEClient

MINUTE_MS = 60_000
PER_MINUTE = 12
SPIKE_AT = 80  # minute index of the injected response-time spike in the 120-minute route history


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@pytest.fixture
def server(tmp_path: pathlib.Path) -> Iterator[ServerProcess]:
    """A fresh server whose live detector looks for closed minutes every 0.2 s, 1 s after they close."""
    with serving(tmp_path / "data", env={"PULSE_ANOMALY_SETTLE_S": "1", "PULSE_ANOMALY_TICK_S": "0.2"}) as proc:
        yield proc


@pytest.fixture
async def client(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        yield http


def minute_events(service: str, minute: int, *, rt_factor: float = 1.0) -> list[dict[str, Any]]:
    """PER_MINUTE events spread over one minute: response times around 100 ms, a 500 now and then."""
    events = []
    for j in range(PER_MINUTE):
        rt = (100 + 15 * math.sin(minute * 1.3 + j * 0.7)) * rt_factor
        status = 500 if (minute * PER_MINUTE + j) % 37 == 0 else 200
        events.append({"eventName": "api-call", "payload": {
            "serviceName": service, "statusCode": status, "responseTimeMs": round(rt, 1),
            "timestamp": minute * MINUTE_MS + j * (MINUTE_MS // PER_MINUTE), "correlationId": f"{minute}-{j}"}})  # fmt: skip
    return events


async def backfill(client: httpx.AsyncClient, events: list[dict[str, Any]]) -> None:
    for i in range(0, len(events), 1000):
        answer = await client.post("/api/events/track/batch", json={"events": events[i : i + 1000]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["processedCount"] == len(events[i : i + 1000]), answer.text


async def test_backfilled_history_is_judged_and_the_spike_found(client: httpx.AsyncClient) -> None:
    first = time.time_ns() // 1_000_000 // MINUTE_MS - 130
    events = []
    for i in range(120):
        events += minute_events("orders", first + i, rt_factor=4.0 if i == SPIKE_AT else 1.0)
    await backfill(client, events)
    last_ms = (first + 119) * MINUTE_MS + MINUTE_MS - 1
    answer = await client.get("/api/events/anomalies", params={"from": iso(first * MINUTE_MS), "to": str(last_ms)})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    [anomaly] = body["anomalies"]
    spike_rt = sum(e["payload"]["responseTimeMs"] for e in minute_events("orders", first + SPIKE_AT, rt_factor=4.0))
    assert anomaly["serviceName"] == "orders" and anomaly["metric"] == "responseTime"
    assert anomaly["minute"] == iso((first + SPIKE_AT) * MINUTE_MS)
    assert anomaly["value"] == pytest.approx(spike_rt / PER_MINUTE, rel=1e-3)
    assert 90 < anomaly["expected"] < 110 and anomaly["score"] >= 2.0
    assert set(anomaly) == {"serviceName", "metric", "minute", "value", "expected", "score"}
    based = body["basedOn"]
    assert based["from"] == iso(first * MINUTE_MS) and based["to"] == iso((first + 119) * MINUTE_MS)
    assert based["services"] == 1 and based["warmupMinutes"] == 20 and based["historyMinutes"] == 180
    # the range starts with the service: its first 20 minutes warm the baselines up
    assert based["minutesWarmingUp"] == {"responseTime": 20, "errorRate": 20, "volume": 20}
    assert based["minutesJudged"] == {"responseTime": 100, "errorRate": 100, "volume": 100}
    assert based["thresholds"] == {"responseTime": 2.0, "errorRate": 3.0, "volume": 2.5}

    # a later range is judged against the history before it (read as warm-up): the same spike
    later = await client.get("/api/events/anomalies", params={
        "from": iso((first + 60) * MINUTE_MS), "to": str(last_ms), "serviceName": "orders"})  # fmt: skip
    assert later.status_code == 200, later.text
    assert later.json()["anomalies"] == [anomaly]
    assert later.json()["basedOn"]["minutesJudged"]["responseTime"] == 60
    other = await client.get("/api/events/anomalies", params={"from": iso(first * MINUTE_MS), "serviceName": "nope"})
    assert other.json()["anomalies"] == [] and other.json()["basedOn"]["services"] == 0


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"from": "yesterday-ish"}, "from"),
        ({"to": "not a time"}, "to"),
        ({"from": "40d"}, "from"),  # beyond the 31-day cap
        ({"from": "2024-01-02T00:00:00Z", "to": "2024-01-01T00:00:00Z"}, "from"),
    ],
)
async def test_bad_parameters_are_400_naming_them(client: httpx.AsyncClient, query: dict[str, str], field: str) -> None:
    answer = await client.get("/api/events/anomalies", params=query)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == field


async def test_default_range_is_the_last_day(client: httpx.AsyncClient) -> None:
    answer = await client.get("/api/events/anomalies")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["anomalies"] == []
    span = datetime.fromisoformat(body["basedOn"]["to"]) - datetime.fromisoformat(body["basedOn"]["from"])
    assert 23.9 <= span.total_seconds() / 3600 <= 24


@pytest.mark.parametrize("path", ["/api/events/stream", "/api/v1/behavioral/stream"])
async def test_live_subscriber_receives_the_anomaly_of_the_minute_that_closed(
    server: ServerProcess, client: httpx.AsyncClient, path: str
) -> None:
    """Both stream families: seed 004's event stream and seed 000's behavioral stream (with its
    default subscriptions) get the ``anomaly`` message."""
    # Everything below must happen inside one minute (the detector judges the newest closed minute
    # when the project gets its first subscriber): start at least 15 s before the minute ends.
    now = time.time()
    if now % 60 > 45:
        await trio.sleep(60 - now % 60 + 0.1)
    current = time.time_ns() // 1_000_000 // MINUTE_MS
    events = []
    for minute in range(current - 61, current):  # the last closed minute is 4x slower
        events += minute_events("live-svc", minute, rt_factor=4.0 if minute == current - 1 else 1.0)
    await backfill(client, events)
    async with SSEClient(f"{server.url}{path}") as sse:
        assert sse.status == 200
        with trio.fail_after(15):
            _, message = await sse.next_of_type("anomaly")
    assert message["serviceName"] == "live-svc" and message["metric"] == "responseTime"
    assert message["minute"] == iso((current - 1) * MINUTE_MS)
    assert message["value"] > 3 * message["expected"] and message["score"] >= 2.0
