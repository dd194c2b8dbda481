"""Health and performance reports: each component's real state and the measured figures.

Nothing here is a constant dressed as a measurement: every number is read from the running
process (metrics, actor system, hub, store, bus) at the time of the request. The rules that turn
readings into states are pure functions (``*_check`` and ``assess``), tested by construction in
tests/e2e/test_health_truth.py; the routes only gather the readings.

- database: a read (``ping``) and, for the group-commit stores, an empty write through the writer's
  queue and one commit, under one deadline. An error in either, or no read within the deadline, is
  unhealthy; a commit slower than the deadline (queue backed up, lock held elsewhere) is degraded.
- messageQueue: with Redis configured, degraded while the link is down (ingestion and local
  streams go on, cross-node delivery waits); without Redis, healthy (one node, in process).
- realTimeProcessing: degraded while an actor's mailbox is MAILBOX_PRESSURE full, or actors are
  stopped after repeated crashes.
- webSocketConnections: degraded at --max-websockets (new sockets are refused).
- eventIngestion: follows the database (nothing is acknowledged that is not durable); "draining"
  at shutdown.
- status: the worst component ("draining" counts as degraded); the route answers 503 when
  unhealthy. ``reasons`` says, per component that is not healthy, why.

``metrics.uptime`` (seed 000) is availability in percent over the last 24 h (or since the first
start recorded, if later), from the process lifetimes in the store (server/uptime.py);
``metrics.uptimeWindow`` says over which window and how much running time it found. When the store
cannot be read it is left out (the database component says why). ``uptimeSeconds`` is this
process's own age.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, NamedTuple

import msgspec
import trio

from actors.runtime import MAILBOX_SIZE, ActorStats
from protocol.normalize import iso_ms
from server.context import Pulse
from server.uptime import uptime_figures
from storage.base import Store, StoreError
from storage.write_queue import WriteQueueFront

PROBE_TIMEOUT_S: Final = 2.0  # one deadline for the database's read and write probes together
# realTimeProcessing is degraded from this share of an actor's mailbox in use. A full mailbox makes
# ingestion wait for room and then refuse with 503 (actors/pipeline.py _wait_for_room); at 80% the
# actor is a few batches behind and live state lags ingestion: the warning before the refusals.
MAILBOX_PRESSURE: Final = 0.8

HEALTHY: Final = "healthy"
DEGRADED: Final = "degraded"
UNHEALTHY: Final = "unhealthy"
DRAINING: Final = "draining"
_SEVERITY: Final = {HEALTHY: 0, DRAINING: 1, DEGRADED: 1, UNHEALTHY: 2}
_STATUS_OF_SEVERITY: Final = (HEALTHY, DEGRADED, UNHEALTHY)


class Check(NamedTuple):
    """One component's state and, when it is not healthy, why."""

    state: str
    reason: str | None = None


OK: Final = Check(HEALTHY)


class Assessment(NamedTuple):
    status: str
    components: dict[str, str]
    reasons: dict[str, str]  # component -> why it is not healthy


# the rules (pure) --------------------------------------------------------------------------------
def mailbox_limit(mailbox_size: int = MAILBOX_SIZE) -> int:
    """The mailbox depth from which realTimeProcessing is degraded."""
    return max(1, math.ceil(MAILBOX_PRESSURE * mailbox_size))


def processing_check(stats: ActorStats, mailbox_size: int = MAILBOX_SIZE) -> Check:
    limit = mailbox_limit(mailbox_size)
    problems = []
    if stats.mailbox_depth_max >= limit:
        problems.append(
            f"an actor's mailbox holds {stats.mailbox_depth_max} of {mailbox_size} messages "
            f"(degraded from {limit}): live state lags ingestion"
        )
    if stats.stopped:
        problems.append(f"{stats.stopped} actor(s) stopped after repeated crashes")
    return Check(DEGRADED, "; ".join(problems)) if problems else OK


def message_queue_check(connected: bool | None, last_error: str | None) -> Check:
    """``connected`` is None when no Redis is configured (one node: the queue is in process)."""
    if connected is None or connected:
        return OK
    return Check(
        DEGRADED,
        f"redis is not connected ({last_error or 'no error recorded'}): "
        "ingestion and local streams go on, cross-node delivery waits",
    )


def websocket_check(open_sockets: int, maximum: int) -> Check:
    if open_sockets >= maximum:
        return Check(DEGRADED, f"{open_sockets} of {maximum} WebSockets open (--max-websockets): new ones are refused")
    return OK


def ingestion_check(database: Check, draining: bool) -> Check:
    if database.state == UNHEALTHY:
        return Check(UNHEALTHY, "the database cannot store events: ingestion answers 503")
    if draining:
        return Check(DRAINING, "shutting down: new streams are refused, open ones told to reconnect")
    if database.state == DEGRADED:
        return Check(DEGRADED, "commits are slow: ingestion waits for them")
    return OK


def database_check(read: Check | None, write: Check | None, *, writes_probed: bool, within_s: float) -> Check:
    """The database's state from its probes; None for a probe that did not finish within ``within_s``
    (or was cut short because the other one failed)."""
    for probe in (read, write):
        if probe is not None and probe.state != HEALTHY:
            return probe
    if read is None:
        return Check(UNHEALTHY, f"no read answered within {within_s:g} s")
    if writes_probed and write is None:
        return Check(DEGRADED, f"no commit within {within_s:g} s: the writer is behind or blocked")
    return OK


def assess(checks: dict[str, Check]) -> Assessment:
    worst = max((_SEVERITY[check.state] for check in checks.values()), default=0)
    return Assessment(
        status=_STATUS_OF_SEVERITY[worst],
        components={name: check.state for name, check in checks.items()},
        reasons={name: check.reason for name, check in checks.items() if check.reason},
    )


# the readings ------------------------------------------------------------------------------------
async def probe_database(store: Store, within_s: float = PROBE_TIMEOUT_S) -> Check:
    """A read and (group-commit stores) an empty commit, side by side, under one deadline."""
    results: dict[str, Check] = {}

    async def probe(name: str, call: Callable[[], Awaitable[None]], probes: trio.Nursery) -> None:
        try:
            await call()
        except StoreError as exc:
            results[name] = Check(UNHEALTHY, f"{name} failed: {exc}")
            probes.cancel_scope.cancel()  # unhealthy already: no need to wait for the other probe
        else:
            results[name] = OK

    writes_probed = isinstance(store, WriteQueueFront)
    with trio.move_on_after(within_s):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(probe, "read", store.ping, nursery)
            if isinstance(store, WriteQueueFront):
                nursery.start_soon(probe, "write", store.probe_writer, nursery)
    return database_check(results.get("read"), results.get("write"), writes_probed=writes_probed, within_s=within_s)


async def component_checks(pulse: Pulse, actor_stats: ActorStats) -> dict[str, Check]:
    database = await probe_database(pulse.store)
    bus = pulse.bus
    return {
        "eventIngestion": ingestion_check(database, pulse.draining),
        "realTimeProcessing": processing_check(actor_stats),
        "webSocketConnections": websocket_check(pulse.metrics.open_websockets, pulse.settings.max_websockets),
        "database": database,
        "messageQueue": message_queue_check(None if bus is None else bus.connected, None if bus is None else bus.last_error),
    }


# the answers -------------------------------------------------------------------------------------
async def health(pulse: Pulse) -> dict[str, Any]:
    metrics = pulse.metrics
    actor_stats = pulse.actors.stats()
    checks = await component_checks(pulse, actor_stats)
    verdict = assess(checks)
    figures: dict[str, Any] = {}
    if checks["database"].state != UNHEALTHY:
        with trio.move_on_after(PROBE_TIMEOUT_S):
            try:
                up = await uptime_figures(pulse.store)
            except StoreError:
                pass  # left out: the database component already says what is wrong
            else:
                figures["uptime"] = up.percent
                figures["uptimeWindow"] = {
                    "from": iso_ms(up.window_start_ms),
                    "to": iso_ms(up.window_end_ms),
                    "runningSeconds": round(up.running_ms / 1000, 3),
                    "restarts": up.restarts,
                }
    return {
        "status": verdict.status,
        "timestamp": iso_ms(time.time_ns() // 1_000_000),
        "components": verdict.components,
        "reasons": verdict.reasons,
        "metrics": {
            **figures,
            "uptimeSeconds": round(time.time() - pulse.started_at, 3),
            "responseTime": metrics.responses.mean(),  # ms, mean of every HTTP answer since start
            "errorRate": metrics.error_rate(),
        },
        "details": _details(pulse, checks["database"].state, actor_stats),
    }


def _details(pulse: Pulse, database: str, actor_stats: ActorStats) -> dict[str, Any]:
    settings = pulse.settings
    details: dict[str, Any] = {"node": pulse.node_id, "storage": settings.storage_name, "database": database}
    if not settings.database_url:
        details["dataDir"] = str(settings.data_dir)
    details["realTimeProcessing"] = {
        "mailboxDepthMax": actor_stats.mailbox_depth_max,
        "mailboxSize": MAILBOX_SIZE,
        "degradedFromDepth": mailbox_limit(),
        "stoppedActors": actor_stats.stopped,
    }
    details["webSockets"] = {"open": pulse.metrics.open_websockets, "maximum": settings.max_websockets}
    bus = pulse.bus
    if bus is None:
        details["messageQueue"] = "local (one node)"
        return details
    details["messageQueue"] = "redis"
    details["redis"] = {
        "connected": bus.connected,
        "lastError": bus.last_error,
        "liveNodes": list(bus.live_nodes()),
        **msgspec.to_builtins(bus.stats()),
    }
    details["cluster"] = pulse.router.stats()
    return details


async def performance(pulse: Pulse) -> dict[str, Any]:
    metrics = pulse.metrics
    actor_stats = pulse.actors.stats()
    verdict = assess(await component_checks(pulse, actor_stats))
    websockets = metrics.open_websockets
    maximum = pulse.settings.max_websockets
    processing = metrics.processing
    responses = metrics.responses
    return {
        "metrics": {
            "eventIngestionRate": metrics.ingest_rate.per_second(),
            "processingLatency": {
                "p50": processing.percentile(50),
                "p95": processing.percentile(95),
                "p99": processing.percentile(99),
            },
            "apiResponseTime": {
                "average": responses.mean(),
                "median": responses.percentile(50),
                "max": round(responses.max, 3) if responses.total else None,
            },
            "errorRate": metrics.error_rate(),
            "throughput": metrics.response_rate.per_second(),
        },
        "status": verdict.status,
        "reasons": verdict.reasons,
        "capacity": {
            "current": websockets,
            "maximum": maximum,
            "utilization": round(websockets / maximum, 6) if maximum else 0.0,
            "counts": "open WebSockets of this process, refused past --max-websockets",
        },
        "connections": {"websockets": websockets, "sse": metrics.open_sse, "refused": metrics.ws_refused},
        "actors": msgspec.to_builtins(actor_stats),
        "queues": {"subscribers": pulse.hub.subscriber_count(), "storeWriter": _writer_depth(pulse.store)},
        "events": {
            "stored": metrics.events_stored,
            "duplicates": metrics.events_duplicate,
            "rejected": metrics.events_rejected,
            "processingFailures": metrics.processing_failures,
        },
        "requests": {"total": metrics.requests, "4xx": metrics.responses_4xx, "5xx": metrics.responses_5xx},
        "drops": dict(metrics.drops),
        "retention": pulse.retention.view() if pulse.retention is not None else None,
        "deletions": pulse.deletions.view() if pulse.deletions is not None else None,
        "units": {
            "latency": "ms",
            "eventIngestionRate": "events accepted (stored or duplicate) per second over the last 60 s, or since start if shorter",
            "throughput": "HTTP answers per second over the last 60 s, or since start if shorter (streams not counted)",
            "errorRate": "share of HTTP answers that were 5xx, since start",
        },
    }


def _writer_depth(store: Store) -> int | None:
    """Writes waiting for the store's writer; None for a store without a write queue."""
    return store.queue_depth() if isinstance(store, WriteQueueFront) else None
