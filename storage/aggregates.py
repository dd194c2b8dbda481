"""Statistics buckets shared by every backend: folding events into per-minute buckets and rolling
them up into days and totals at write time, and planning which buckets answer a time range.

A time range is answered by whole UTC days strictly inside it plus the minutes of the partial days
at its two edges, so a year-long range reads ~365 day buckets, not 500k minutes (see the backends'
modules for the SQL that reads them).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import Any, Final, NamedTuple, TypeVar

from protocol.record import Event
from storage.base import UNKNOWN_SERVICE, EventCount, ServiceAggregate

MINUTE_MS: Final = 60_000
MINUTES_PER_DAY: Final = 1_440
EPOCH: Final = datetime.date(1970, 1, 1)
# Stand-ins for "unbounded", so that every range query is one fixed, prepared SQL string.
_LOWEST: Final = -(2**62)
_HIGHEST: Final = 2**62

# count, with_status, errors, with_rt, rt_sum, last_seen
Bucket = list[float]
MinuteKey = tuple[str, int, str, str]  # project, minute, service ('' for None), name
_K = TypeVar("_K", bound=tuple[object, ...])


# Write side -------------------------------------------------------------------------------------
def fold_minutes(events: Iterable[Event]) -> dict[MinuteKey, Bucket]:
    """Fold newly stored events into per-minute buckets (one upsert per bucket, not per event)."""
    buckets: dict[MinuteKey, Bucket] = {}
    for ev in events:
        ts = ev.timestamp
        key = (ev.project, ts // MINUTE_MS, ev.service_name or "", ev.name)
        b = buckets.get(key)
        if b is None:
            b = buckets[key] = [0, 0, 0, 0, 0.0, ts]
        b[0] += 1
        status = ev.status_code
        if status is not None:
            b[1] += 1
            if status >= 400:
                b[2] += 1
        rt = ev.response_time_ms
        if rt is not None:
            b[3] += 1
            b[4] += rt
        if ts > b[5]:
            b[5] = ts
    return buckets


def _merge(into: Bucket, b: Bucket) -> None:
    into[0] += b[0]
    into[1] += b[1]
    into[2] += b[2]
    into[3] += b[3]
    into[4] += b[4]
    if b[5] > into[5]:
        into[5] = b[5]


def _add(table: dict[_K, Bucket], key: _K, b: Bucket) -> None:
    into = table.get(key)
    if into is None:
        table[key] = list(b)
    else:
        _merge(into, b)


def rollup(minutes: dict[MinuteKey, Bucket]) -> tuple[list[tuple[object, ...]], ...]:
    """Parameters for UPSERT_AGG_MINUTE, UPSERT_AGG_DAY and UPSERT_AGG_TOTAL from minute buckets."""
    days: dict[MinuteKey, Bucket] = {}
    totals: dict[tuple[str, str, str], Bucket] = {}
    for (project, minute, service, name), b in minutes.items():
        _add(days, (project, minute // MINUTES_PER_DAY, service, name), b)
        _add(totals, (project, service, name), b)
    return (
        [(*k, *b) for k, b in minutes.items()],
        [(*k, *b) for k, b in days.items()],
        [(*k, *b) for k, b in totals.items()],
    )


# Read side --------------------------------------------------------------------------------------
class RangePlan(NamedTuple):
    """Inclusive bucket ranges answering a time range; an empty range has lo > hi."""

    whole: bool  # no bounds at all: agg_total answers alone
    day_lo: int
    day_hi: int
    head_lo: int  # minutes before the first whole day
    head_hi: int
    tail_lo: int  # minutes after the last whole day
    tail_hi: int

    def params(self, project: str) -> tuple[object, ...]:
        return (project, self.day_lo, self.day_hi, self.head_lo, self.head_hi, self.tail_lo, self.tail_hi)


def plan_range(since_ms: int | None, until_ms: int | None) -> RangePlan:
    lo = _LOWEST if since_ms is None else since_ms // MINUTE_MS
    hi = _HIGHEST if until_ms is None else until_ms // MINUTE_MS
    first_day = -(-lo // MINUTES_PER_DAY)  # the first day starting at or after minute lo
    last_day = (hi + 1) // MINUTES_PER_DAY - 1  # the last day ending at or before minute hi
    whole = since_ms is None and until_ms is None
    if first_day > last_day:  # no whole day inside: the range is all edge
        return RangePlan(whole, 1, 0, lo, hi, 1, 0)
    head_hi = first_day * MINUTES_PER_DAY - 1
    tail_lo = (last_day + 1) * MINUTES_PER_DAY
    return RangePlan(whole, first_day, last_day, lo, head_hi, tail_lo, hi)

def day_string(day: int) -> str:
    """YYYY-MM-DD of a day number (days since 1970-01-01, UTC)."""
    return (EPOCH + datetime.timedelta(days=day)).isoformat()


def service_aggregate(service: str, names: list[Any], top: int) -> ServiceAggregate:
    """One service's figures from its per-name rows (service, name, count, with_status, errors,
    with_rt, rt_sum, last_seen)."""
    names.sort(key=lambda r: (-r[2], r[1]))
    return ServiceAggregate(
        service_name=service or None,
        event_count=sum(r[2] for r in names),
        unique_events=len(names),
        with_status=sum(r[3] for r in names),
        errors=sum(r[4] for r in names),
        with_response_time=sum(r[5] for r in names),
        response_time_sum=float(sum(r[6] for r in names)),
        last_seen_ms=max(r[7] for r in names),
        top_events=[EventCount(r[1], r[2]) for r in names[: max(top, 0)]],
    )


def group_services(rows: Iterable[Any], top: int, *, name_unknown: bool) -> list[ServiceAggregate]:
    """Per-service figures from per-(service, name) rows (service, name, count, with_status,
    errors, with_rt, rt_sum, last_seen), busiest first. ``name_unknown``: the events sent without a
    service ('') are reported as UNKNOWN_SERVICE, together with any events that name it."""
    by_service: dict[str, dict[str, list[Any]]] = {}
    for row in rows:
        if row[2] <= 0:
            continue
        service = UNKNOWN_SERVICE if name_unknown and row[0] == "" else row[0]
        names = by_service.setdefault(service, {})
        into = names.get(row[1])
        if into is None:
            names[row[1]] = [service, *row[1:]]
        else:  # the same name under '' and UNKNOWN_SERVICE: one name of the merged service
            for i in (2, 3, 4, 5, 6):
                into[i] += row[i]
            into[7] = max(into[7], row[7])
    stats = [service_aggregate(service, list(names.values()), top) for service, names in by_service.items()]
    stats.sort(key=lambda s: (-s.event_count, s.service_name or ""))
    return stats


def service_keys(service_name: str | None, *, name_unknown: bool) -> list[str] | None:
    """The stored service keys that a service name selects (None: every service)."""
    if service_name is None:
        return None
    if name_unknown and service_name == UNKNOWN_SERVICE:
        return [UNKNOWN_SERVICE, ""]
    return [service_name]


def named_services(keys: list[str], name_unknown: bool) -> list[str]:
    """Service names from stored keys: '' (no service) becomes UNKNOWN_SERVICE or is left out."""
    names = {key for key in keys if key}
    if name_unknown and "" in keys:
        names.add(UNKNOWN_SERVICE)
    return sorted(names)
