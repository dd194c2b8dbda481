"""Pre-aggregated statistics for the SQLite backend: building them at write time, reading them back.

Each committed group of events is folded into per-minute buckets in Python first, then upserted
into three tables that share one shape: ``agg_minute`` (project, minute), ``agg_day`` (project,
day) and ``agg_total`` (project). Statistics never read the event log:

- no time range: ``agg_total`` (one row per service and event name);
- a time range: ``agg_day`` for the whole UTC days strictly inside it, plus ``agg_minute`` for the
  partial days at its two edges, so a year-long range reads ~365 day buckets, not 500k minutes.

Granularity: at the edges the range is widened to whole minutes (from the minute containing
``since_ms`` through the minute containing ``until_ms``). A range whose ``since_ms`` starts a minute
and whose ``until_ms`` ends one (``...59_999``) is answered exactly; otherwise an edge minute may
contribute events a few seconds outside the range. That is the price of never scanning the log.
"""

from __future__ import annotations

import datetime
import sqlite3
from collections.abc import Iterable
from typing import Final, NamedTuple, TypeVar

from protocol.record import Event
from storage import sqlite_schema as sql
from storage.base import DayCount, EventCount, ServiceAggregate

MINUTE_MS: Final = 60_000
MINUTES_PER_DAY: Final = 1_440
_EPOCH: Final = datetime.date(1970, 1, 1)
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


def upsert(conn: sqlite3.Connection, stored: list[Event]) -> None:
    """Add newly stored events to the three aggregate tables (inside the writer's transaction)."""
    if not stored:
        return
    minutes, days, totals = rollup(fold_minutes(stored))
    conn.executemany(sql.UPSERT_AGG_MINUTE, minutes)
    conn.executemany(sql.UPSERT_AGG_DAY, days)
    conn.executemany(sql.UPSERT_AGG_TOTAL, totals)


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


_COLS: Final = "service, name, count, with_status, errors, with_rt, rt_sum, last_seen"
# ?1 project, ?2..?3 days, ?4..?5 head minutes, ?6..?7 tail minutes. BETWEEN on an empty range
# costs one index probe.
_RANGE_ROWS: Final = f"""
    SELECT {_COLS}, day FROM agg_day WHERE project = ?1 AND day BETWEEN ?2 AND ?3
    UNION ALL
    SELECT {_COLS}, minute / {MINUTES_PER_DAY} FROM agg_minute WHERE project = ?1 AND minute BETWEEN ?4 AND ?5
    UNION ALL
    SELECT {_COLS}, minute / {MINUTES_PER_DAY} FROM agg_minute WHERE project = ?1 AND minute BETWEEN ?6 AND ?7
"""
_PER_NAME: Final = (
    "SELECT service, name, sum(count), sum(with_status), sum(errors), sum(with_rt), total(rt_sum),"
    " max(last_seen) FROM ({rows}) WHERE {service} GROUP BY service, name"
)
SERVICE_ROWS_RANGE: Final = _PER_NAME.format(rows=_RANGE_ROWS, service="(?8 IS NULL OR service = ?8)")
SERVICE_ROWS_WHOLE: Final = _PER_NAME.format(
    rows=f"SELECT {_COLS} FROM agg_total WHERE project = ?1", service="(?2 IS NULL OR service = ?2)"
)
TOP_EVENTS_RANGE: Final = (
    f"SELECT name, sum(count) AS n FROM ({_RANGE_ROWS}) GROUP BY name HAVING n > 0"
    " ORDER BY n DESC, name LIMIT ?8"
)
TOP_EVENTS_WHOLE: Final = (
    "SELECT name, sum(count) AS n FROM agg_total WHERE project = ?1 GROUP BY name HAVING n > 0"
    " ORDER BY n DESC, name LIMIT ?2"
)
PER_DAY: Final = f"SELECT day, sum(count) AS n FROM ({_RANGE_ROWS}) GROUP BY day HAVING n > 0 ORDER BY day"
SERVICE_NAMES: Final = "SELECT DISTINCT service FROM agg_total WHERE project = ? AND service != '' AND count > 0 ORDER BY service"

ServiceRow = tuple[str, str, int, int, int, int, float, int]


def read_service_stats(
    conn: sqlite3.Connection, project: str, plan: RangePlan, service_name: str | None, top: int
) -> list[ServiceAggregate]:
    if plan.whole:
        rows = conn.execute(SERVICE_ROWS_WHOLE, (project, service_name)).fetchall()
    else:
        rows = conn.execute(SERVICE_ROWS_RANGE, (*plan.params(project), service_name)).fetchall()
    by_service: dict[str, list[ServiceRow]] = {}
    for row in rows:
        if row[2] > 0:
            by_service.setdefault(row[0], []).append(row)
    stats = [_service_aggregate(service, names, top) for service, names in by_service.items()]
    stats.sort(key=lambda s: (-s.event_count, s.service_name or ""))
    return stats


def _service_aggregate(service: str, names: list[ServiceRow], top: int) -> ServiceAggregate:
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


def read_top_events(conn: sqlite3.Connection, project: str, plan: RangePlan, limit: int) -> list[EventCount]:
    if plan.whole:
        rows = conn.execute(TOP_EVENTS_WHOLE, (project, limit)).fetchall()
    else:
        rows = conn.execute(TOP_EVENTS_RANGE, (*plan.params(project), limit)).fetchall()
    return [EventCount(name, count) for name, count in rows]


def read_per_day(conn: sqlite3.Connection, project: str, plan: RangePlan) -> list[DayCount]:
    rows = conn.execute(PER_DAY, plan.params(project)).fetchall()
    return [DayCount((_EPOCH + datetime.timedelta(days=day)).isoformat(), count) for day, count in rows]
