"""Seed 004 read APIs: events query, per-service analytics, statistics, suggestions context.

Counts and rates come from the store's incremental aggregates (never a scan of the log); only the
event listing itself reads the log, through indexes, a page at a time.
"""

from __future__ import annotations

from protocol.normalize import iso_ms
from protocol.tracking import (
    DayCountOut,
    EventCountOut,
    EventsQueryResponse,
    EventStatistics,
    ServicesResponse,
    ServicesSummary,
    ServiceStats,
    SuggestionsResponse,
    TimeRange,
)
from protocol.views import stored_event
from server.params import decode_cursor, encode_cursor, int_param, text_param, time_param
from server.suggestions import SuggestionCache
from server.suggestions import answer as suggestions_answer
from storage.base import MAX_PAGE, EventCount, EventFilter, ServiceAggregate, Store

DEFAULT_LIMIT = 100


def _pct(part: int, whole: int) -> float:
    return round(part * 100 / whole, 1) if whole else 0.0


def service_stats(agg: ServiceAggregate) -> ServiceStats:
    return ServiceStats(
        serviceName=agg.service_name,
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


async def query_events(store: Store, project: str, query: dict[str, str]) -> EventsQueryResponse:
    flt = event_filter(project, query)
    since, until = flt.since_ms, flt.until_ms
    limit = int_param(query, "limit", DEFAULT_LIMIT, low=1, high=MAX_PAGE, clamp=True)
    page = await store.query_events(flt, limit=limit, cursor=decode_cursor(query.get("cursor")))
    total = await store.count_events(project)
    services = await store.service_names(project)
    stamps = [e.timestamp for e in page.events]
    low = since if since is not None else (min(stamps) if stamps else None)
    high = until if until is not None else (max(stamps) if stamps else None)
    return EventsQueryResponse(
        events=[stored_event(e) for e in page.events],
        total=total,
        filtered=page.filtered,
        services=services,
        timeRange=TimeRange(from_=iso_ms(low) if low is not None else None, to=iso_ms(high) if high is not None else None),
        nextCursor=encode_cursor(page.next_cursor) if page.next_cursor else None,
    )


def _summary(aggs: list[ServiceAggregate]) -> ServicesSummary:
    with_rt = sum(a.with_response_time for a in aggs)
    with_status = sum(a.with_status for a in aggs)
    return ServicesSummary(
        totalServices=sum(1 for a in aggs if a.service_name is not None),
        totalEvents=sum(a.event_count for a in aggs),
        avgResponseTime=round(sum(a.response_time_sum for a in aggs) / with_rt, 1) if with_rt else None,
        overallErrorRate=round(sum(a.errors for a in aggs) * 100 / with_status, 2) if with_status else None,
    )


async def services(store: Store, project: str, query: dict[str, str]) -> ServicesResponse:
    aggs = await store.service_stats(
        project,
        since_ms=time_param(query, "from"),
        until_ms=time_param(query, "to"),
        service_name=text_param(query, "serviceName"),
    )
    return ServicesResponse(services=[service_stats(a) for a in aggs], summary=_summary(aggs))


async def statistics(store: Store, project: str, query: dict[str, str]) -> EventStatistics:
    since, until = time_param(query, "from"), time_param(query, "to")
    aggs = await store.service_stats(project, since_ms=since, until_ms=until)
    total = sum(a.event_count for a in aggs)
    names = await store.top_events(project, since_ms=since, until_ms=until, limit=1_000_000)
    days = await store.per_day(project, since_ms=since, until_ms=until)
    limit = int_param(query, "limit", 10, low=1, high=1000, clamp=True)
    return EventStatistics(
        totalEventCount=total,
        totalUniqueEvents=len(names),
        totalServices=sum(1 for a in aggs if a.service_name is not None),
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
