"""Health and monitoring say what is measured.

The rules that turn readings into states are pure functions of the readings (server/health.py),
tested here by construction; the servers below show the routes use them, on real sockets: a Redis
URL that points at a closed port, a SQLite writer blocked by another connection's write lock, open
streams counted against the right maximum, a throughput that is not the ingestion rate.
"""

from __future__ import annotations

import pathlib
import socket
import sqlite3
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from actors.metrics import RATE_WINDOW_S, Metrics, RateWindow
from actors.runtime import MAILBOX_SIZE, ActorStats
from server.health import (
    DEGRADED,
    DRAINING,
    HEALTHY,
    MAILBOX_PRESSURE,
    OK,
    PROBE_TIMEOUT_S,
    UNHEALTHY,
    Check,
    assess,
    database_check,
    ingestion_check,
    mailbox_limit,
    message_queue_check,
    processing_check,
    websocket_check,
)
from storage.sqlite import DB_FILE
from tests.e2e.server_process import ServerProcess, serving
from tests.e2e.sse_client import SSEClient
from tests.e2e.ws_client import Client

HEALTH = "/api/v1/behavioral/health"
PERFORMANCE = "/api/v1/behavioral/monitoring/performance"


def actor_stats(*, depth_max: int = 0, stopped: int = 0) -> ActorStats:
    return ActorStats(
        live_actors={"session": 1}, live_total=1, mailbox_depth_total=depth_max, mailbox_depth_max=depth_max,
        messages_handled=0, restarts=0, crashes=0, passivations=0, stopped=stopped,
    )  # fmt: skip


# the rules, by construction ----------------------------------------------------------------------
def test_mailbox_pressure_degrades_real_time_processing() -> None:
    limit = mailbox_limit(MAILBOX_SIZE)
    assert limit == 52  # ceil(0.8 * 64): the first depth at or above MAILBOX_PRESSURE of the mailbox
    assert (limit - 1) / MAILBOX_SIZE < MAILBOX_PRESSURE <= limit / MAILBOX_SIZE
    assert processing_check(actor_stats(depth_max=limit - 1)) == OK
    saturated = processing_check(actor_stats(depth_max=limit))
    assert saturated.state == DEGRADED
    assert saturated.reason is not None and f"{limit} of {MAILBOX_SIZE}" in saturated.reason
    assert processing_check(actor_stats(depth_max=MAILBOX_SIZE)).state == DEGRADED
    assert processing_check(actor_stats(depth_max=3, stopped=1)).state == DEGRADED
    assert processing_check(actor_stats(depth_max=7), mailbox_size=10) == OK  # measured against its own size
    assert processing_check(actor_stats(depth_max=8), mailbox_size=10).state == DEGRADED


def test_status_is_the_worst_component_with_reasons() -> None:
    healthy = {name: OK for name in ("a", "b")}
    assert assess(healthy) == (HEALTHY, {"a": HEALTHY, "b": HEALTHY}, {})
    degraded = assess({**healthy, "c": Check(DEGRADED, "slow")})
    assert degraded.status == DEGRADED and degraded.reasons == {"c": "slow"}
    assert assess({**healthy, "c": Check(DRAINING, "stopping")}).status == DEGRADED
    worst = assess({"a": Check(DEGRADED, "slow"), "b": Check(UNHEALTHY, "down")})
    assert worst.status == UNHEALTHY and worst.reasons == {"a": "slow", "b": "down"}


def test_bus_state_counts_only_when_redis_is_configured() -> None:
    assert message_queue_check(None, None) == OK  # one node: no Redis to be down
    assert message_queue_check(True, None) == OK
    down = message_queue_check(False, "connection refused")
    assert down.state == DEGRADED and down.reason is not None and "connection refused" in down.reason


def test_database_state_from_its_read_and_write_probes() -> None:
    failed = Check(UNHEALTHY, "write failed: disk full")
    assert database_check(OK, OK, writes_probed=True, within_s=2) == OK
    assert database_check(OK, None, writes_probed=False, within_s=2) == OK  # a store without a writer queue
    assert database_check(None, OK, writes_probed=True, within_s=2).state == UNHEALTHY  # no read in time
    assert database_check(OK, failed, writes_probed=True, within_s=2) == failed
    assert database_check(None, failed, writes_probed=True, within_s=2) == failed  # the read was cut short
    slow = database_check(OK, None, writes_probed=True, within_s=2)
    assert slow.state == DEGRADED and slow.reason is not None and "commit" in slow.reason
    assert ingestion_check(failed, draining=False).state == UNHEALTHY
    assert ingestion_check(slow, draining=False).state == DEGRADED
    assert ingestion_check(OK, draining=True).state == DRAINING
    assert websocket_check(9, 10) == OK and websocket_check(10, 10).state == DEGRADED


def test_rates_average_over_the_time_measured() -> None:
    window = RateWindow(started=100.0)
    window.add(30, now=105.5)
    assert window.per_second(now=110.0) == 3.0  # 30 events in the 10 s since start, not 30 / 60
    window.add(30, now=150.0)
    assert window.per_second(now=160.0 + 0.5) == 1.0  # a full window: 60 events / 60 s
    assert window.per_second(now=100.0 + 2 * RATE_WINDOW_S + 10) == 0.0
    metrics = Metrics()
    metrics.count_response(200, 1.0)
    metrics.count_response(503, 1.0)
    assert metrics.response_rate.per_second() == 2.0  # within the first second: 2 answers / 1 s
    assert metrics.ingest_rate.per_second() == 0.0


# the routes, on real servers ---------------------------------------------------------------------
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed: connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def server_without_redis(tmp_path: pathlib.Path) -> Iterator[ServerProcess]:
    with serving(tmp_path / "data", extra=["--redis-url", f"redis://127.0.0.1:{closed_port()}"]) as proc:
        yield proc


async def test_a_bus_that_is_down_degrades_status_on_both_routes(server_without_redis: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server_without_redis.url, timeout=10) as http:
        answer = await http.get(HEALTH)
        performance = (await http.get(PERFORMANCE)).json()
    assert answer.status_code == 200, answer.text  # degraded, not down: ingestion goes on
    body = answer.json()
    assert body["components"]["messageQueue"] == DEGRADED
    assert body["components"]["database"] == HEALTHY
    assert body["status"] == DEGRADED
    assert "redis is not connected" in body["reasons"]["messageQueue"]
    assert body["details"]["redis"]["connected"] is False
    assert performance["status"] == DEGRADED  # the same verdict, not "no crashed actors"
    assert set(performance["reasons"]) == {"messageQueue"}


async def test_a_blocked_writer_is_not_a_healthy_database(server: ServerProcess) -> None:
    """Another connection holds SQLite's write lock: reads still answer, commits cannot happen."""
    async with httpx.AsyncClient(base_url=server.url, timeout=PROBE_TIMEOUT_S + 10) as http:
        assert (await http.get(HEALTH)).json()["status"] == HEALTHY
        lock = sqlite3.connect(server.data_dir / DB_FILE, isolation_level=None)
        try:
            lock.execute("BEGIN IMMEDIATE")
            answer = await http.get(HEALTH)
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        after = (await http.get(HEALTH)).json()
    body = answer.json()
    assert body["components"]["database"] == DEGRADED, body
    assert body["components"]["eventIngestion"] == DEGRADED
    assert body["status"] == DEGRADED
    assert "commit" in body["reasons"]["database"]
    assert after["status"] == HEALTHY, after  # the writer commits again once the lock is gone


async def test_the_health_route_reports_the_mailbox_rule_it_applies(client: httpx.AsyncClient) -> None:
    body = (await client.get(HEALTH)).json()
    processing = body["details"]["realTimeProcessing"]
    assert processing == {
        "mailboxDepthMax": 0, "mailboxSize": MAILBOX_SIZE, "degradedFromDepth": mailbox_limit(), "stoppedActors": 0,
    }  # fmt: skip
    assert body["components"]["realTimeProcessing"] == HEALTHY
    assert "reasons" in body and body["reasons"] == {}


@pytest.fixture
def one_socket_server(tmp_path: pathlib.Path) -> Iterator[ServerProcess]:
    with serving(tmp_path / "data", extra=["--max-websockets", "1"]) as proc:
        yield proc


async def test_capacity_counts_websockets_against_the_websocket_limit(one_socket_server: ServerProcess) -> None:
    url = one_socket_server.url
    async with httpx.AsyncClient(base_url=url, timeout=10) as http, SSEClient(f"{url}/api/events/stream") as sse:
        assert sse.status == 200
        ws = await Client.connect(url, "/api/events/ws")
        try:
            assert (await ws.json())["type"] == "connected"  # sent once the socket is counted
            performance = (await http.get(PERFORMANCE)).json()
            health = (await http.get(HEALTH)).json()
        finally:
            await ws.aclose()
    capacity = performance["capacity"]
    assert (capacity["current"], capacity["maximum"], capacity["utilization"]) == (1, 1, 1.0)  # the SSE stream is not a WebSocket
    assert "WebSockets" in capacity["counts"]
    assert performance["connections"] == {"websockets": 1, "sse": 1, "refused": 0}
    assert health["components"]["webSocketConnections"] == DEGRADED  # a second socket would be refused
    assert "--max-websockets" in health["reasons"]["webSocketConnections"]


async def test_throughput_is_answers_per_second_not_the_ingestion_rate(client: httpx.AsyncClient) -> None:
    for _ in range(5):
        assert (await client.get("/openapi.json")).status_code == 200
    body: dict[str, Any] = (await client.get(PERFORMANCE)).json()
    metrics = body["metrics"]
    assert metrics["eventIngestionRate"] == 0  # no event was sent
    assert metrics["throughput"] > 0  # but requests were answered
    assert body["requests"]["total"] >= 5
    assert type(body["queues"]["storeWriter"]) is int  # the writer's queue, measured
    assert "throughput" in body["units"]
