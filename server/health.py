"""Health and performance reports: each component's real state and the measured figures.

Nothing here is a constant dressed as a measurement: every number is read from the running
process (metrics, actor system, hub, store) at the time of the request.
"""

from __future__ import annotations

import time
from typing import Any, Final

import trio

from protocol.normalize import iso_ms
from server.context import Pulse
from storage.base import StoreError

PING_TIMEOUT_S: Final = 2.0
MAILBOX_PRESSURE: Final = 0.8  # share of actor mailbox capacity in use that counts as degraded


async def _database(pulse: Pulse) -> str:
    try:
        with trio.fail_after(PING_TIMEOUT_S):
            await pulse.store.ping()
    except (StoreError, trio.TooSlowError):
        return "unhealthy"
    return "healthy"


async def health(pulse: Pulse) -> dict[str, Any]:
    metrics = pulse.metrics
    database = await _database(pulse)
    actor_stats = pulse.actors.stats()
    sockets = metrics.open_websockets
    components = {
        "eventIngestion": "unhealthy" if database == "unhealthy" else ("draining" if pulse.draining else "healthy"),
        "realTimeProcessing": "degraded" if actor_stats.stopped else "healthy",
        "webSocketConnections": "degraded" if sockets >= pulse.settings.max_websockets else "healthy",
        "database": database,
        # Redis down: ingestion and local streams go on, cross-node delivery waits: degraded
        "messageQueue": "healthy" if pulse.bus is None or pulse.bus.connected else "degraded",
    }
    states = set(components.values())
    status = "unhealthy" if "unhealthy" in states else ("degraded" if states - {"healthy"} else "healthy")
    return {
        "status": status,
        "timestamp": iso_ms(time.time_ns() // 1_000_000),
        "components": components,
        "metrics": {
            "uptimeSeconds": round(time.time() - pulse.started_at, 3),
            "responseTime": metrics.responses.mean(),
            "errorRate": metrics.error_rate(),
        },
        "details": _details(pulse, database),
    }


def _details(pulse: Pulse, database: str) -> dict[str, Any]:
    settings = pulse.settings
    details: dict[str, Any] = {"node": pulse.node_id, "storage": settings.storage_name, "database": database}
    if not settings.database_url:
        details["dataDir"] = str(settings.data_dir)
    bus = pulse.bus
    if bus is None:
        details["messageQueue"] = "local (one node)"
        return details
    details["messageQueue"] = "redis"
    details["redis"] = {
        "connected": bus.connected,
        "lastError": bus.last_error,
        "liveNodes": list(bus.live_nodes()),
        **_struct_dict(bus.stats()),
    }
    details["cluster"] = pulse.router.stats()
    return details


async def performance(pulse: Pulse) -> dict[str, Any]:
    metrics = pulse.metrics
    actor_stats = pulse.actors.stats()
    connections = metrics.open_websockets + metrics.open_sse
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
            "throughput": metrics.ingest_rate.per_second(),
        },
        "status": "healthy" if not actor_stats.stopped else "degraded",
        "capacity": {
            "current": connections,
            "maximum": maximum,
            "utilization": round(connections / maximum, 6) if maximum else 0.0,
        },
        "connections": {"websockets": metrics.open_websockets, "sse": metrics.open_sse, "refused": metrics.ws_refused},
        "actors": _struct_dict(actor_stats),
        "queues": {"subscribers": pulse.hub.subscriber_count(), "storeWriter": _writer_depth(pulse)},
        "events": {
            "stored": metrics.events_stored,
            "duplicates": metrics.events_duplicate,
            "rejected": metrics.events_rejected,
            "processingFailures": metrics.processing_failures,
        },
        "requests": {"total": metrics.requests, "4xx": metrics.responses_4xx, "5xx": metrics.responses_5xx},
        "drops": dict(metrics.drops),
        "units": {"latency": "ms", "rate": "events/s over the last 60 s"},
    }


def _writer_depth(pulse: Pulse) -> int | None:
    depth = getattr(pulse.store, "queue_depth", None)
    return depth() if callable(depth) else None


def _struct_dict(value: Any) -> Any:
    import msgspec

    return msgspec.to_builtins(value)
