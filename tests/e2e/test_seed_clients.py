"""The seeds' own client code, as written, against a real server (issue 12, item 7).

Seed 004's AI-consumption functions (TemporalAnalyzer.analyzePatterns: ``limit=10000``,
analyzeUserJourneys: ``limit=50000``, analyzeServicePerformance: the top-level fields of
``/api/events/services?serviceName=X``), its types (no null where they say ``string``), the SSE
``stats`` message, seed 000's health ``metrics.uptime``, and an ISO time pasted into a URL with
its ``+`` unencoded. One server serves the module; each test writes into a project of its own, so
every figure it checks is computed from exactly what it sent.
"""

from __future__ import annotations

import json
import pathlib
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
import pytest
import trio

from protocol.record import SOURCE_EVENTS, Event
from server.event_listing import events_response
from server.uptime import availability
from storage.base import MAX_PAGE, Cursor, EventPage, Lifetime, LifetimeHistory, StoreUnavailable
from tests.e2e.server_process import ServerProcess, serving
from tests.e2e.sse_client import SSEClient

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
MANY = 2_600  # more than two pages of MAX_PAGE


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso_ms(text: str) -> int:
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


@pytest.fixture(scope="module")
def pulse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = pathlib.Path(tmp_path_factory.mktemp("seed-clients")) / "data"
    with serving(data, env={"PULSE_SSE_STATS_INTERVAL": "0.2"}) as proc:
        yield proc


@pytest.fixture
async def http(pulse: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a new project of its own (its secret key on every request)."""
    async with httpx.AsyncClient(base_url=pulse.url, timeout=30) as admin:
        answer = await admin.post("/api/admin/projects", json={"name": f"p{time.time_ns()}"})
        assert answer.status_code == 201, answer.text
        key = answer.json()["secretKey"]
    async with httpx.AsyncClient(base_url=pulse.url, timeout=60, headers={"Authorization": f"Bearer {key}"}) as client:
        yield client


async def send(http: httpx.AsyncClient, events: list[dict[str, Any]]) -> None:
    for first in range(0, len(events), 1000):
        answer = await http.post("/api/events/track/batch", json={"events": events[first : first + 1000]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["processedCount"] == len(events[first : first + 1000])


async def many_events(http: httpx.AsyncClient) -> tuple[int, list[int]]:
    """MANY events over the last hour, one per ms apart; returns (base, metadata.i newest first)."""
    base = now_ms() - HOUR_MS
    await send(http, [{"eventName": "tick", "payload": {"serviceName": "svc", "userId": f"u{i % 7}",
                                                        "timestamp": base + i, "metadata": {"i": i}}}
                      for i in range(MANY)])  # fmt: skip
    return base, list(range(MANY - 1, -1, -1))


def nulls_under(value: Any, key: str) -> list[Any]:
    """Every ``key`` anywhere in a JSON value whose value is null."""
    found: list[Any] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if k == key and v is None:
                found.append(value)
            found += nulls_under(v, key)
    elif isinstance(value, list):
        for item in value:
            found += nulls_under(item, key)
    return found


# -- GET /api/events with the seed's large limits ------------------------------------------------
async def test_analyze_patterns_limit_10000_returns_every_event(http: httpx.AsyncClient) -> None:
    """TemporalAnalyzer.analyzePatterns: ``/api/events?from=${start}&limit=10000``, one JSON document."""
    _, newest_first = await many_events(http)
    start = iso(now_ms() - 7 * DAY_MS)
    async with http.stream("GET", f"/api/events?from={start}&limit=10000") as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("application/json")
        assert "content-length" not in answer.headers  # streamed: more than one page
        body = json.loads(await answer.aread())
    assert [e["payload"]["metadata"]["i"] for e in body["events"]] == newest_first
    assert (body["total"], body["filtered"], body["services"]) == (MANY, MANY, ["svc"])
    assert body["nextCursor"] is None
    assert parse_iso_ms(body["timeRange"]["from"]) == parse_iso_ms(start)
    assert parse_iso_ms(body["timeRange"]["to"]) == body["events"][0]["timestamp"]  # no ``to``: the newest


async def test_analyze_user_journeys_limit_50000_and_relative_from(http: httpx.AsyncClient) -> None:
    """analyzeUserJourneys: ``/api/events?from=${timeRange}&limit=50000`` with timeRange = '7d'."""
    _, newest_first = await many_events(http)
    body = (await http.get("/api/events?from=7d&limit=50000")).json()
    assert [e["payload"]["metadata"]["i"] for e in body["events"]] == newest_first
    journeys: dict[str, int] = {}
    for event in body["events"]:  # the seed's groupEventsByUser
        journeys[event["userId"]] = journeys.get(event["userId"], 0) + 1
    assert journeys == {f"u{u}": len(range(u, MANY, 7)) for u in range(7)}


async def test_a_large_limit_is_the_same_document_as_the_pages(http: httpx.AsyncClient) -> None:
    """Streamed or not, the answer is the one the pages give, and its cursor continues it."""
    await many_events(http)
    paged: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = (await http.get("/api/events", params={"limit": 1000, **({"cursor": cursor} if cursor else {})})).json()
        paged += page["events"]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    whole = (await http.get("/api/events?limit=100000")).json()
    assert whole["events"] == paged
    part = (await http.get("/api/events?limit=1500")).json()  # streamed, cut by the limit
    assert part["events"] == paged[:1500]
    assert part["nextCursor"]
    rest = (await http.get("/api/events", params={"limit": 5000, "cursor": part["nextCursor"]})).json()
    assert rest["events"] == paged[1500:]
    assert rest["nextCursor"] is None
    exact = (await http.get(f"/api/events?limit={MANY}")).json()  # the limit is the whole match
    assert exact["events"] == paged
    assert exact["nextCursor"] is None
    small = (await http.get("/api/events?limit=3")).json()  # one page: as before
    assert small["events"] == paged[:3]
    assert set(small) == {"events", "total", "filtered", "services", "timeRange", "nextCursor"}


@pytest.mark.parametrize("limit", ["100001", "0", "-5", "ten"])
async def test_limits_outside_1_to_100000_are_a_400_naming_the_maximum(http: httpx.AsyncClient, limit: str) -> None:
    answer = await http.get(f"/api/events?limit={limit}")
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["field"] == "limit"
    if limit != "ten":
        assert "100000" in error["reason"]


async def test_an_error_after_the_first_byte_never_makes_a_complete_document() -> None:
    """The store fails on the second page: the body ends with the error, never with a ``]}``
    that would make the part sent parse as the whole answer (the edge then drops the connection)."""

    class FailingStore:
        """A full first page with more after it (so the answer streams), then an outage."""

        def __init__(self) -> None:
            stamp = now_ms()
            self.page = [
                Event(id=f"evt_{i}", project="p", name="tick", source=SOURCE_EVENTS, timestamp=stamp - i,
                      received_at=stamp, payload=msgspec.Raw(b"{}"), seq=MAX_PAGE + 10 - i)
                for i in range(MAX_PAGE)
            ]  # fmt: skip

        async def query_events(self, flt: Any, *, limit: int, cursor: Any) -> EventPage:
            last = self.page[-1]
            return EventPage(events=self.page, filtered=5000, next_cursor=Cursor(last.timestamp, last.seq))

        async def count_events(self, project: str) -> int:
            return 5000

        async def service_names(self, project: str, *, name_unknown: bool = False) -> list[str]:
            return []

        async def query_events_descending(self, flt: Any, *, limit: int, before: Any) -> list[Event]:
            raise StoreUnavailable("the database went away")

    store = FailingStore()
    response = await events_response(store, "p", {"limit": "5000"})  # type: ignore[arg-type]
    assert response.status_code == 200
    sent = b""
    with pytest.raises(StoreUnavailable):
        async with response.response as body:  # type: ignore[attr-defined]
            async for chunk in body:
                sent += chunk
    assert sent.startswith(b'{"events":[')
    with pytest.raises(json.JSONDecodeError):
        json.loads(sent)


# -- GET /api/events/services?serviceName=X: analyzeServicePerformance ---------------------------
async def test_analyze_service_performance_reads_top_level_figures(http: httpx.AsyncClient) -> None:
    start = (now_ms() - 5 * HOUR_MS) // MINUTE_MS * MINUTE_MS  # a whole minute: buckets start there
    # (minutes after start, statusCode, responseTimeMs)
    spec = [(10, 200, 100.0), (20, 500, 300.0), (70, 200, 50.0), (75, None, None), (150, 404, 10.0)]
    await send(http, [{"eventName": f"call-{i}", "payload": {"serviceName": "payments", "timestamp": start + m * MINUTE_MS,
                       **({"statusCode": st} if st else {}), **({"responseTimeMs": rt} if rt else {})}}
                      for i, (m, st, rt) in enumerate(spec)])  # fmt: skip
    await send(http, [{"eventName": "other", "payload": {"serviceName": "search", "timestamp": start + 5 * MINUTE_MS,
                                                         "responseTimeMs": 999}}])  # fmt: skip
    query = f"/api/events/services?serviceName=payments&from={iso(start)}&to={iso(start + 3 * HOUR_MS - 1)}"
    body = (await http.get(query)).json()
    assert body["eventCount"] == 5
    assert body["avgResponseTime"] == pytest.approx((100 + 300 + 50 + 10) / 4, abs=0.05)
    assert body["errorRate"] == pytest.approx(2 * 100 / 4, abs=0.005)  # 500 and 404 of 4 with a status
    assert sorted(body["responseTimes"]) == [10.0, 50.0, 100.0, 300.0]
    assert body["historicalVolumes"] == [2, 2, 1]  # hours 0, 1, 2 of the range
    assert body["historicalResponseTimes"] == [200.0, 50.0, 10.0]
    assert body["historicalErrorRates"] == [50.0, 0.0, 100.0]
    assert body["history"]["intervalMs"] == HOUR_MS
    assert [parse_iso_ms(b["start"]) for b in body["history"]["buckets"]] == [start, start + HOUR_MS, start + 2 * HOUR_MS]
    # beside the services and summary of today
    assert [s["serviceName"] for s in body["services"]] == ["payments"]
    assert body["summary"]["totalEvents"] == 5

    # the seed's request as written: ``from=${timeRange}`` with timeRange = '24h'
    seed = (await http.get("/api/events/services?serviceName=payments&from=24h")).json()
    assert seed["eventCount"] == 5
    assert sum(seed["historicalVolumes"]) == 5
    assert len(seed["historicalVolumes"]) in (24, 25)  # 24 h and the minute of "now", in hours
    throughput = seed["eventCount"] / 24  # the seed's eventCount / getHoursInRange
    assert throughput > 0
    # without serviceName: the answer of before, no top-level figures
    assert set((await http.get("/api/events/services")).json()) == {"services", "summary"}


# -- no null where the seed says string ----------------------------------------------------------
async def test_events_without_a_service_are_unknown_everywhere(pulse: ServerProcess, http: httpx.AsyncClient) -> None:
    answer = await http.post("/api/events/track/batch", json={"events": [
        {"eventName": "anonymous", "payload": {"statusCode": 500, "responseTimeMs": 20}},
        {"eventName": "anonymous"},
        {"eventName": "login", "payload": {"serviceName": "auth"}},
    ]})  # fmt: skip
    assert answer.status_code == 200
    assert "batchId" not in answer.json()  # none sent: omitted, never null

    services = (await http.get("/api/events/services")).json()
    assert not nulls_under(services, "serviceName")
    assert {s["serviceName"]: s["eventCount"] for s in services["services"]} == {"unknown": 2, "auth": 1}
    assert services["summary"]["totalServices"] == 2
    assert services["summary"]["totalEvents"] == 3
    unknown = (await http.get("/api/events/services?serviceName=unknown")).json()
    assert (unknown["eventCount"], unknown["errorRate"], unknown["avgResponseTime"]) == (2, 100.0, 20.0)

    statistics = (await http.get("/api/events/statistics")).json()
    assert not nulls_under(statistics, "serviceName")
    assert statistics["totalServices"] == 2
    assert sorted(s["serviceName"] for s in statistics["serviceBreakdown"]) == ["auth", "unknown"]

    listing = (await http.get("/api/events")).json()
    assert sorted(listing["services"]) == ["auth", "unknown"]
    for event in listing["events"]:
        assert event.get("serviceName", "unknown") in ("auth", "unknown")
        assert "serviceName" in event or event["name"] == "anonymous"  # StoredEvent.serviceName?: omitted
    selected = (await http.get("/api/events?serviceName=unknown")).json()
    assert sorted(e["name"] for e in selected["events"]) == ["anonymous", "anonymous"]
    assert selected["filtered"] == 2
    nothing = (await http.get("/api/events?type=no-such-event")).json()
    assert nothing["timeRange"] == {}  # no bound and nothing matched: omitted, never null

    async with SSEClient(f"{pulse.url}/api/events/stream", headers=dict(http.headers)) as sse:
        with trio.fail_after(10):
            _, stats = await sse.next_of_type("stats")
    data = stats["data"]
    assert not nulls_under(data, "serviceName")
    assert (data["totalEventCount"], data["totalServices"]) == (3, 2)
    assert {s["serviceName"]: s["eventCount"] for s in data["services"]} == {"unknown": 2, "auth": 1}
    assert None not in data.values()


async def test_batch_answers_leave_out_a_batch_id_never_sent(http: httpx.AsyncClient) -> None:
    behavioral = await http.post("/api/v1/behavioral/batch", json=[{"eventType": "page_view", "sessionId": "s-1"}])
    assert behavioral.status_code == 200, behavioral.text
    assert "batchId" not in behavioral.json()
    named = await http.post("/api/events/track/batch", json={"batchId": "b-1", "events": [{"eventName": "login"}]})
    assert named.json()["batchId"] == "b-1"
    named = await http.post("/api/v1/behavioral/batch", json={"batchId": "b-2", "events": [{"eventType": "click"}]})
    assert named.json()["batchId"] == "b-2"


# -- health: metrics.uptime ----------------------------------------------------------------------
async def test_health_reports_uptime_as_a_percentage(http: httpx.AsyncClient) -> None:
    metrics = (await http.get("/api/v1/behavioral/health")).json()["metrics"]
    assert 0 <= metrics["uptime"] <= 100
    window = metrics["uptimeWindow"]
    length = parse_iso_ms(window["to"]) - parse_iso_ms(window["from"])
    assert metrics["uptime"] == pytest.approx(window["runningSeconds"] * 1000 * 100 / length, abs=0.01)
    assert metrics["uptimeSeconds"] > 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["clean-stop", "kill-9"])
async def test_uptime_counts_the_time_a_server_was_down(tmp_path: pathlib.Path, sig: int) -> None:
    """Started, stopped, down for 2 s, started again on the same data: the time down is missing
    from the running time and the restart is counted. A clean stop records when it stopped; after
    kill -9 the dead process counts as up only until its last heartbeat, never until the restart."""
    data = tmp_path / "data"
    first = ServerProcess(data).start()
    await trio.sleep(1.0)
    assert first.stop(sig) == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
    await trio.sleep(2.0)
    restarting = now_ms()
    second = ServerProcess(data).start()  # its start is recorded after this call
    try:
        async with httpx.AsyncClient(base_url=second.url, timeout=10) as http:
            metrics = (await http.get("/api/v1/behavioral/health")).json()["metrics"]
        answered = now_ms()
    finally:
        assert second.stop() == 0
    window = metrics["uptimeWindow"]
    length = parse_iso_ms(window["to"]) - parse_iso_ms(window["from"])
    running = window["runningSeconds"] * 1000
    assert length - running >= 2000, metrics  # at least the 2 s between the two processes
    assert window["restarts"] == 1
    assert 0 < metrics["uptime"] < 100
    assert metrics["uptime"] == pytest.approx(running * 100 / length, abs=0.01)
    db = sqlite3.connect(data / "pulse.db")
    try:
        (dead, beats), _ = db.execute("SELECT stopped_ms, last_seen_ms - started_ms FROM lifetimes ORDER BY started_ms")
    finally:
        db.close()
    if sig == signal.SIGTERM:
        assert dead is not None  # its clean stop was recorded
        assert running >= 1000  # its second (and more) counts
    else:
        assert dead is None  # no stop recorded: it counts until its last heartbeat, not until the restart
        assert running <= answered - restarting + beats


def test_availability_from_lifetimes() -> None:
    """kill -9 leaves a lifetime at its last heartbeat: up until then, down afterwards; the
    process asking runs until now; overlapping lifetimes (nodes) count once."""
    now = 10 * HOUR_MS
    crashed = Lifetime(id="a", node="n", started_ms=0, last_seen_ms=2 * HOUR_MS, stopped_ms=None)
    clean = Lifetime(id="b", node="n", started_ms=3 * HOUR_MS, last_seen_ms=5 * HOUR_MS, stopped_ms=5 * HOUR_MS)
    other_node = Lifetime(id="c", node="m", started_ms=4 * HOUR_MS, last_seen_ms=6 * HOUR_MS, stopped_ms=None)
    asking = Lifetime(id="d", node="n", started_ms=8 * HOUR_MS, last_seen_ms=9 * HOUR_MS, stopped_ms=None)
    history = LifetimeHistory(0, [crashed, clean, other_node, asking])
    up = availability(history, now, current="d")
    assert (up.window_start_ms, up.window_end_ms) == (0, now)
    assert up.running_ms == (2 + 3 + 2) * HOUR_MS  # 0-2 h, 3-6 h (two nodes), 8-10 h
    assert up.percent == 70.0
    assert up.restarts == 3
    # asked by another process, "d" is known only until its last heartbeat
    assert availability(history, now, current="x").running_ms == (2 + 3 + 1) * HOUR_MS
    # the first start long ago: the window is the last 24 h
    later = 40 * HOUR_MS
    running = Lifetime(id="e", node="n", started_ms=HOUR_MS, last_seen_ms=later - 1_000, stopped_ms=None)
    assert availability(LifetimeHistory(0, [running]), later, current="e").percent == 100.0
    stale = Lifetime(id="f", node="m", started_ms=20 * HOUR_MS, last_seen_ms=30 * HOUR_MS, stopped_ms=None)
    gone = availability(LifetimeHistory(0, [stale]), later)
    assert (gone.window_start_ms, gone.running_ms, gone.restarts) == (16 * HOUR_MS, 10 * HOUR_MS, 1)
    assert gone.percent == round(10 * 100 / 24, 3)
    assert availability(LifetimeHistory(None, []), now).percent == 0.0


# -- an ISO time with its "+" unencoded ----------------------------------------------------------
@pytest.mark.parametrize(("raw", "expected"), [
    ("2025-08-27T00:00:00+00:00", "2025-08-27T00:00:00.000Z"),
    ("2025-08-27T02:00:00+02:00", "2025-08-27T00:00:00.000Z"),
    ("2025-08-27T05:30:00.000+0530", "2025-08-27T00:00:00.000Z"),
])  # fmt: skip
async def test_an_unencoded_plus_in_a_time_is_accepted(http: httpx.AsyncClient, raw: str, expected: str) -> None:
    answer = await http.get(f"/api/events?from={raw}")  # as pasted: "+" reaches the server as a space
    assert answer.status_code == 200, answer.text
    assert answer.json()["timeRange"]["from"] == expected
    services = await http.get(f"/api/events/services?from={raw}&to={raw}")
    assert services.status_code == 200, services.text
