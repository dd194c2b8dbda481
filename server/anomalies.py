"""GET /api/events/anomalies?from&to&serviceName: the anomalous minutes of a time range.

Judged from the per-minute aggregates (never the event log), so backfilled history is judged like
live traffic. The detector (actors/insights/anomaly.py) first reads HISTORY_MINUTES before
``from`` so the first minute of the range is judged against a settled baseline; only closed
minutes are judged (the current minute is still filling up). docs/anomalies.md explains the
numbers.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Final

import trio

from actors.anomaly_watch import MINUTE_MS, SETTLE_S, TICK_S, AnomalyWatch, series_of, wire
from actors.hub import Hub
from actors.insights.anomaly import HISTORY_MINUTES, METRICS, THRESHOLDS, WARMUP_MINUTES, Finding, detect
from protocol.anomaly import AnomaliesResponse, AnomalyBasis
from protocol.errors import InvalidInput
from protocol.normalize import iso_ms
from server.params import text_param, time_param
from storage.base import Store

DEFAULT_RANGE_MS: Final = 24 * 3_600_000  # without ``from``: the last 24 hours
MAX_RANGE_MS: Final = 31 * 86_400_000
_detect_limiter = trio.CapacityLimiter(1)  # judging is CPU work: one range at a time, off the event loop


async def anomalies(store: Store, project: str, query: dict[str, str], *, now_ms: int | None = None) -> AnomaliesResponse:
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    until = time_param(query, "to")
    until = now if until is None else until
    since = time_param(query, "from")
    since = until - DEFAULT_RANGE_MS if since is None else since
    if since > until:
        raise InvalidInput("from", f"must not be after to ({iso_ms(until)}), got {iso_ms(since)}")
    if until - since > MAX_RANGE_MS:
        raise InvalidInput("from", f"the range from..to may span at most 31 days, got {(until - since) / 86_400_000:.1f} days")
    service = text_param(query, "serviceName")
    first = since // MINUTE_MS
    last = min(until // MINUTE_MS, now // MINUTE_MS - 1)  # closed minutes only
    findings: list[tuple[str, Finding]] = []
    judged = dict.fromkeys(METRICS, 0)
    warming = dict.fromkeys(METRICS, 0)
    services = 0
    # One service at a time: memory holds one service's minutes (44,640 for 31 days), not a project's.
    names = [service] if service is not None else sorted(["", *await store.service_names(project)])
    for name in names if first <= last else []:
        rows = await store.minute_series(
            project, since_ms=(first - HISTORY_MINUTES) * MINUTE_MS, until_ms=last * MINUTE_MS + MINUTE_MS - 1,
            service_name=name,
        )
        if not rows:
            continue
        services += 1
        part = await trio.to_thread.run_sync(
            functools.partial(detect, series_of(rows), since=first, until=last), limiter=_detect_limiter
        )
        findings += part.findings
        for metric in METRICS:
            judged[metric] += part.judged[metric]
            warming[metric] += part.warming[metric]
    return AnomaliesResponse(
        anomalies=[wire(svc, f) for svc, f in findings],
        basedOn=AnomalyBasis(
            from_=iso_ms(first * MINUTE_MS),
            to=iso_ms(max(last, first - 1) * MINUTE_MS),
            services=services,
            minutesJudged=judged,
            minutesWarmingUp=warming,
            warmupMinutes=WARMUP_MINUTES,
            historyMinutes=HISTORY_MINUTES,
            thresholds=dict(THRESHOLDS),
        ),
    )


def watch_from_env(store: Store, hub: Hub) -> AnomalyWatch:
    """The live detector, with PULSE_ANOMALY_SETTLE_S (seconds after a minute closes before it is
    judged, default 5) and PULSE_ANOMALY_TICK_S (how often closed minutes are looked for, default 5)."""
    return AnomalyWatch(store, hub, settle_s=_seconds("PULSE_ANOMALY_SETTLE_S", SETTLE_S),
                        tick_s=_seconds("PULSE_ANOMALY_TICK_S", TICK_S))  # fmt: skip


def _seconds(name: str, default: float) -> float:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {value!r}") from None
