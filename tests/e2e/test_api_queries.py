"""GET /api/events: every filter, limits, cursor pagination, total vs filtered, bad parameters.

Two servers serve the module: ``small`` holds six known events (for filters), ``large`` holds 2,500
events with distinct timestamps, sent in shuffled order (for limits and pagination). Both are only
read by the tests that use them.
"""

from __future__ import annotations

import pathlib
import random
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.e2e.server_process import ServerProcess

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
LARGE_COUNT = 2500


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def parse_iso_ms(text: str) -> int:
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


@dataclass
class Dataset:
    server: ServerProcess
    now: int  # when the dataset was sent
    stamps: dict[str, int]  # event name -> timestamp


def start(tmp_path_factory: pytest.TempPathFactory, name: str) -> ServerProcess:
    return ServerProcess(pathlib.Path(tmp_path_factory.mktemp(name)) / "data").start()


def stop(proc: ServerProcess) -> None:
    code = proc.stop()
    assert code == 0, "".join(proc.output)


# name, service, user, correlation id, age
SMALL = [
    ("user-login", "user-service", "u1", "c1", 1 * HOUR_MS),
    ("User-Logout", "user-service", "u1", "c1", 2 * HOUR_MS),
    ("page-view", "web-analytics", "u2", "c2", 3 * HOUR_MS),
    ("api-call", "api-gateway", "u2", None, 30 * HOUR_MS),
    ("payment-completed", "payment-service", "u3", "c3", 50 * HOUR_MS),
    ("login-failed", "user-service", "u3", None, 10 * DAY_MS),
]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dataset]:
    proc = start(tmp_path_factory, "small")
    try:
        now = now_ms()
        stamps = {}
        with httpx.Client(base_url=proc.url, timeout=10) as http:
            for name, service, user, correlation, age in SMALL:
                payload: dict[str, Any] = {"serviceName": service, "timestamp": now - age}
                if correlation:
                    payload["correlationId"] = correlation
                answer = http.post(f"/api/events/track/{name}", json=payload, headers={"X-User-Id": user})
                assert answer.status_code == 200, answer.text
                stamps[name] = now - age
        yield Dataset(proc, now, stamps)
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dataset]:
    """Event i has timestamp base + i and metadata.i = i; odd and even i in two services."""
    proc = start(tmp_path_factory, "large")
    try:
        now = now_ms()
        base = now - HOUR_MS
        order = list(range(LARGE_COUNT))
        random.Random(4).shuffle(order)
        with httpx.Client(base_url=proc.url, timeout=30) as http:
            for first in range(0, LARGE_COUNT, 1000):
                events = [{"eventName": "tick", "payload": {"serviceName": "even" if i % 2 == 0 else "odd",
                                                            "timestamp": base + i, "metadata": {"i": i}}}
                          for i in order[first:first + 1000]]
                answer = http.post("/api/events/track/batch", json={"events": events})
                assert answer.status_code == 200, answer.text
                assert answer.json()["processedCount"] == len(events)
        yield Dataset(proc, now, {})
    finally:
        stop(proc)


@pytest.fixture
async def small_http(small: Dataset) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=small.server.url, timeout=10) as http:
        yield http


@pytest.fixture
async def large_http(large: Dataset) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=large.server.url, timeout=30) as http:
        yield http


async def query(http: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    answer = await http.get("/api/events", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def names(http: httpx.AsyncClient, **params: Any) -> list[str]:
    return [e["name"] for e in (await query(http, **params))["events"]]


def assert_bad_param(answer: httpx.Response, name: str) -> None:
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["success"] is False
    assert body["error"]["field"] == name
    assert body["error"]["reason"]


# -- filters ---------------------------------------------------------------------------------------


async def test_no_filter_lists_everything_newest_first(small_http: httpx.AsyncClient) -> None:
    assert await names(small_http) == [name for name, *_ in SMALL]


async def test_type_is_a_case_insensitive_partial_match(small_http: httpx.AsyncClient) -> None:
    assert await names(small_http, type="LOGIN") == ["user-login", "login-failed"]
    assert await names(small_http, type="log") == ["user-login", "User-Logout", "login-failed"]
    assert await names(small_http, type="logout") == ["User-Logout"]
    assert await names(small_http, type="nothing-like-it") == []


async def test_service_user_correlation_and_event_name_filters(small_http: httpx.AsyncClient) -> None:
    assert await names(small_http, serviceName="user-service") == ["user-login", "User-Logout", "login-failed"]
    assert await names(small_http, serviceName="user") == []  # exact, not partial
    assert await names(small_http, userId="u2") == ["page-view", "api-call"]
    assert await names(small_http, correlationId="c1") == ["user-login", "User-Logout"]
    assert await names(small_http, eventName="user-login") == ["user-login"]  # exact: not login-failed
    assert await names(small_http, eventName="login") == []
    # filters combine
    assert await names(small_http, serviceName="user-service", userId="u3") == ["login-failed"]
    assert await names(small_http, type="log", correlationId="c1", userId="u1") == ["user-login", "User-Logout"]
    for event in (await query(small_http, userId="u1"))["events"]:
        assert event["userId"] == "u1"


async def test_time_range_as_iso_unix_ms_and_relative(small: Dataset, small_http: httpx.AsyncClient) -> None:
    now = small.now
    recent = ["user-login", "User-Logout", "page-view"]
    assert await names(small_http, **{"from": iso(now - 4 * HOUR_MS)}) == recent
    assert await names(small_http, **{"from": str(now - 4 * HOUR_MS)}) == recent
    assert await names(small_http, **{"from": "24h"}) == recent
    assert await names(small_http, **{"from": "7d"}) == recent + ["api-call", "payment-completed"]
    assert await names(small_http, to=iso(now - 24 * HOUR_MS)) == ["api-call", "payment-completed", "login-failed"]
    between = {"from": iso(now - 60 * HOUR_MS), "to": str(now - 2 * HOUR_MS)}
    assert await names(small_http, **between) == ["User-Logout", "page-view", "api-call", "payment-completed"]
    # both bounds are inclusive, to the millisecond
    exact = small.stamps["page-view"]
    assert await names(small_http, **{"from": str(exact), "to": str(exact)}) == ["page-view"]
    assert await names(small_http, **{"from": str(exact + 1), "to": str(exact + 1)}) == []


async def test_total_filtered_services_and_time_range(small: Dataset, small_http: httpx.AsyncClient) -> None:
    body = await query(small_http, serviceName="user-service", limit=1)
    assert [e["name"] for e in body["events"]] == ["user-login"]
    assert body["total"] == 6  # every event of the project
    assert body["filtered"] == 3  # every match, on all pages
    assert sorted(body["services"]) == ["api-gateway", "payment-service", "user-service", "web-analytics"]
    assert body["nextCursor"]

    since = small.now - 4 * HOUR_MS
    bounded = await query(small_http, **{"from": iso(since)})
    assert parse_iso_ms(bounded["timeRange"]["from"]) == since
    assert parse_iso_ms(bounded["timeRange"]["to"]) == small.stamps["user-login"]

    unbounded = await query(small_http, userId="u2")
    assert parse_iso_ms(unbounded["timeRange"]["from"]) == small.stamps["api-call"]
    assert parse_iso_ms(unbounded["timeRange"]["to"]) == small.stamps["page-view"]

    nothing = await query(small_http, userId="nobody")
    assert nothing["events"] == []
    assert nothing["filtered"] == 0
    assert nothing["total"] == 6
    assert nothing["nextCursor"] is None


async def test_bad_parameters_are_400_naming_them(small_http: httpx.AsyncClient) -> None:
    assert_bad_param(await small_http.get("/api/events", params={"limit": "abc"}), "limit")
    assert_bad_param(await small_http.get("/api/events", params={"limit": "1.5"}), "limit")
    assert_bad_param(await small_http.get("/api/events", params={"cursor": "not-a-cursor!!"}), "cursor")
    assert_bad_param(await small_http.get("/api/events", params={"cursor": "e30"}), "cursor")  # base64 of {}
    assert_bad_param(await small_http.get("/api/events", params={"from": "last tuesday"}), "from")
    assert_bad_param(await small_http.get("/api/events", params={"to": "2025-13-45"}), "to")
    assert_bad_param(await small_http.get("/api/events", params={"serviceName": "s" * 201}), "serviceName")


# -- limits and pagination -------------------------------------------------------------------------


async def test_limit_defaults_to_100_and_goes_up_to_100000(large_http: httpx.AsyncClient) -> None:
    default = await query(large_http)
    assert len(default["events"]) == 100
    assert [e["payload"]["metadata"]["i"] for e in default["events"]] == list(range(2499, 2399, -1))
    assert default["total"] == LARGE_COUNT
    assert default["filtered"] == LARGE_COUNT
    assert default["nextCursor"]

    everything = await query(large_http, limit=5000)  # streamed past one page (tests/e2e/test_seed_clients.py)
    assert len(everything["events"]) == LARGE_COUNT
    assert len((await query(large_http, limit=1000))["events"]) == 1000
    assert len((await query(large_http, limit=7))["events"]) == 7


async def walk(http: httpx.AsyncClient, **params: Any) -> tuple[list[int], int]:
    """Follow nextCursor to the end; returns metadata.i of every event in order, and the page count."""
    seen: list[int] = []
    pages = 0
    cursor = None
    while True:
        page = await query(http, **params, **({"cursor": cursor} if cursor else {}))
        pages += 1
        assert pages <= 10, "pagination does not end"
        seen += [e["payload"]["metadata"]["i"] for e in page["events"]]
        cursor = page["nextCursor"]
        if not cursor:
            return seen, pages


async def test_cursor_pagination_visits_every_event_once_newest_first(large_http: httpx.AsyncClient) -> None:
    seen, pages = await walk(large_http, limit=1000)
    assert pages == 3
    assert len(seen) == LARGE_COUNT
    assert seen == list(range(LARGE_COUNT - 1, -1, -1))  # each exactly once, newest first


async def test_cursor_pagination_with_a_filter(large_http: httpx.AsyncClient) -> None:
    seen, pages = await walk(large_http, serviceName="odd", limit=1000)
    assert pages == 2
    assert seen == list(range(LARGE_COUNT - 1, 0, -2))
    first = await query(large_http, serviceName="odd", limit=1000)
    assert first["filtered"] == LARGE_COUNT // 2
    assert first["total"] == LARGE_COUNT


async def test_cursor_pages_do_not_shift_when_new_events_arrive(client: httpx.AsyncClient) -> None:
    """Events ingested between two page requests (newer than everything) neither repeat nor hide
    events of the walk that was under way."""
    base = now_ms() - HOUR_MS
    events = [{"eventName": "tick", "payload": {"timestamp": base + i, "metadata": {"i": i}}} for i in range(30)]
    assert (await client.post("/api/events/track/batch", json={"events": events})).status_code == 200

    first = await query(client, limit=10)
    seen = [e["payload"]["metadata"]["i"] for e in first["events"]]
    late = [{"eventName": "tick", "payload": {"metadata": {"i": 100 + i}}} for i in range(5)]
    assert (await client.post("/api/events/track/batch", json={"events": late})).status_code == 200
    cursor = first["nextCursor"]
    while cursor:
        page = await query(client, limit=10, cursor=cursor)
        seen += [e["payload"]["metadata"]["i"] for e in page["events"]]
        cursor = page["nextCursor"]
    assert seen == list(range(29, -1, -1))
    assert (await query(client, limit=1))["total"] == 35
