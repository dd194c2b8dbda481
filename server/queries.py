"""Seed 004 read APIs: events query, per-service analytics, statistics, suggestions context.

Counts and rates come from the store's incremental aggregates (never a scan of the log); only the
event listing (server/event_listing.py) and a service's recent response times read the log, through
indexes, a page at a time.

Events sent without a serviceName are reported as the service ``unknown`` (storage.base
UNKNOWN_SERVICE, the seed's own fallback), counted in totalServices like any other, and selected by
``serviceName=unknown``; no answer carries a null service name.
"""

from __future__ import annotations

import time
from typing import Final

from protocol.normalize import iso_ms
from protocol.tracking import (
    DayCountOut,
    EventCountOut,
    EventStatistics,
    HistoryBucket,
    ServiceHistory,
    ServicesResponse,
    ServicesSummary,
    ServiceStats,
    SuggestionsResponse,
)
from server.params import int_param, text_param, time_param
from server.suggestions import SuggestionCache
from server.suggestions import answer as suggestions_answer
from storage.aggregates import MINUTE_MS, service_keys
from storage.base import (
    MAX_PAGE,
    UNKNOWN_SERVICE,
    EventCount,
    EventFilter,
    SeriesRow,
    ServiceAggregate,
    Store,
)

DEFAULT_LIMIT: Final = 100
# services?serviceName=X: the per-bucket history covers the range (the last DEFAULT_HISTORY_MS
# without ``from``), in hours; a range of more than MAX_HISTORY_BUCKETS hours gets wider buckets
# (whole hours) so that the series stays at most that long.
DEFAULT_HISTORY_MS: Final = 24 * 3_600_000
HOUR_MINUTES: Final = 60
MAX_HISTORY_BUCKETS: Final = 24 * 93
RESPONSE_SAMPLE: Final = MAX_PAGE  # the latest events of the service read for ``responseTimes``


def _pct(part: int, whole: int) -> float:
    return round(part * 100 / whole, 1) if whole else 0.0


def service_stats(agg: ServiceAggregate) -> ServiceStats:
    return ServiceStats(
        serviceName=agg.service_name if agg.service_name is not None else UNKNOWN_SERVICE,
        eventCount=agg.event_count,
        uniqueEvents=agg.unique_events,
        lastSeen=iso_ms(agg.last_seen_ms),
        topEvents=[
            EventCountOut(eventName=e.name, count=e.count, percentage=_pct(e.count, agg.event_count))
            for e in agg.top_events
        ],
        avgResponseTime=round(agg.response_time_sum / agg.with_response_time, 1) if agg.with_response_time else None,
        errorRate=round(agg.errors * 100 / agg.with_status, 2) if agg.with_status else None,
    )


def _top(events: list[EventCount], total: int) -> list[EventCountOut]:
    return [EventCountOut(eventName=e.name, count=e.count, percentage=_pct(e.count, total)) for e in events]


def event_filter(project: str, query: dict[str, str]) -> EventFilter:
    """The filters of GET /api/events (and of its export, server/export.py)."""
    return EventFilter(
        project=project,
        since_ms=time_param(query, "from"),
        until_ms=time_param(query, "to"),
        name_contains=text_param(query, "type"),
        event_name=text_param(query, "eventName"),
        service_name=text_param(query, "serviceName"),
        user_id=text_param(query, "userId"),
        session_id=text_param(query, "sessionId"),
        correlation_id=text_param(query, "correlationId"),
    )


def _summary(aggs: list[ServiceAggregate]) -> ServicesSummary:
    with_rt = sum(a.with_response_time for a in aggs)
    with_status = sum(a.with_status for a in aggs)
    return ServicesSummary(
        totalServices=len(aggs),
        totalEvents=sum(a.event_count for a in aggs),
        avgResponseTime=round(sum(a.response_time_sum for a in aggs) / with_rt, 1) if with_rt else None,
        overallErrorRate=round(sum(a.errors for a in aggs) * 100 / with_status, 2) if with_status else None,
    )


async def services(store: Store, project: str, query: dict[str, str]) -> ServicesResponse:
    since, until = time_param(query, "from"), time_param(query, "to")
    name = text_param(query, "serviceName")
    aggs = await store.service_stats(project, since_ms=since, until_ms=until, service_name=name, name_unknown=True)
    answer = ServicesResponse(services=[service_stats(a) for a in aggs], summary=_summary(aggs))
    if name is not None:
        await _one_service(store, project, name, since, until, aggs, answer)
    return answer


async def _one_service(
    store: Store, project: str, name: str, since: int | None, until: int | None,
    aggs: list[ServiceAggregate], answer: ServicesResponse,
) -> None:
    """Seed 004's analyzeServicePerformance reads one service's figures at the top level: the
    service's own (as in ``services``), a recent sample of its response times, and its history."""
    answer.serviceName = name
    answer.eventCount = sum(a.event_count for a in aggs)
    if aggs:
        stats = service_stats(aggs[0])
        if stats.avgResponseTime is not None:
            answer.avgResponseTime = stats.avgResponseTime
        if stats.errorRate is not None:
            answer.errorRate = stats.errorRate
    flt = EventFilter(project=project, since_ms=since, until_ms=until, service_name=name)
    latest = await store.query_events_descending(flt, limit=RESPONSE_SAMPLE, before=None)
    answer.responseTimes = [e.response_time_ms for e in reversed(latest) if e.response_time_ms is not None]
    answer.responseTimesSampleSize = len(latest)
    end = until if until is not None else time.time_ns() // 1_000_000
    start = since if since is not None else end - DEFAULT_HISTORY_MS
    history = await _history(store, project, name, start, end)
    answer.history = history
    answer.historicalVolumes = [b.eventCount for b in history.buckets]
    answer.historicalResponseTimes = [b.avgResponseTime for b in history.buckets if b.avgResponseTime is not None]
    answer.historicalErrorRates = [b.errorRate for b in history.buckets if b.errorRate is not None]


async def _history(store: Store, project: str, name: str, start: int, end: int) -> ServiceHistory:
    """Buckets of whole hours from the minute of ``start`` through the minute of ``end``, every
    bucket present (0 events where none); response time and error rate where some event had them."""
    first, last = start // MINUTE_MS, max(start, end) // MINUTE_MS
    minutes = last - first + 1
    hours = -(-minutes // HOUR_MINUTES)
    width = HOUR_MINUTES * -(-hours // MAX_HISTORY_BUCKETS)  # whole hours per bucket
    keys = service_keys(name, name_unknown=True) or [name]
    rows = await store.service_series(project, keys, since_ms=start, until_ms=end, bucket_minutes=width)
    by_bucket: dict[int, SeriesRow] = {row.bucket: row for row in rows}
    buckets = []
    for i in range(-(-minutes // width)):
        row = by_bucket.get(i)
        bucket = HistoryBucket(start=iso_ms((first + i * width) * MINUTE_MS), eventCount=row.count if row else 0)
        if row is not None and row.with_rt:
            bucket.avgResponseTime = round(row.rt_sum / row.with_rt, 1)
        if row is not None and row.with_status:
            bucket.errorRate = round(row.errors * 100 / row.with_status, 2)
        buckets.append(bucket)
    return ServiceHistory(
        from_=iso_ms(first * MINUTE_MS), to=iso_ms((last + 1) * MINUTE_MS - 1), intervalMs=width * MINUTE_MS,
        buckets=buckets,
    )


async def statistics(store: Store, project: str, query: dict[str, str]) -> EventStatistics:
    since, until = time_param(query, "from"), time_param(query, "to")
    aggs = await store.service_stats(project, since_ms=since, until_ms=until, name_unknown=True)
    total = sum(a.event_count for a in aggs)
    names = await store.top_events(project, since_ms=since, until_ms=until, limit=1_000_000)
    days = await store.per_day(project, since_ms=since, until_ms=until)
    limit = int_param(query, "limit", 10, low=1, high=1000, clamp=True)
    return EventStatistics(
        totalEventCount=total,
        totalUniqueEvents=len(names),
        totalServices=len(aggs),
        perDay=[DayCountOut(date=d.date, count=d.count) for d in days],
        topEvents=_top(names[:limit], total),
        serviceBreakdown=[service_stats(a) for a in aggs],
    )


async def suggestions(
    store: Store, project: str, query: dict[str, str], cache: SuggestionCache | None = None
) -> SuggestionsResponse:
    """Suggestions from live statistics (server/suggestions.py, docs/suggestions.md), with the
    context computed from the same aggregates; ``cache`` is the server's (a throwaway one without)."""
    return await suggestions_answer(cache if cache is not None else SuggestionCache(store), project, query)
