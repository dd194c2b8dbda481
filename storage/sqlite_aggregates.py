"""Pre-aggregated statistics for the SQLite backend: upserting them at write time, reading them back
(the buckets themselves are built in storage.aggregates, shared with PostgreSQL).

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

import sqlite3
from typing import Final

import msgspec

from protocol.record import Event
from storage import sqlite_schema as sql
from storage.aggregates import (
    MINUTES_PER_DAY,
    RangePlan,
    day_string,
    fold_minutes,
    group_services,
    named_services,
    rollup,
    service_keys,
)
from storage.base import DayCount, EventCount, MinuteRow, SeriesRow, ServiceAggregate


def upsert(conn: sqlite3.Connection, stored: list[Event]) -> None:
    """Add newly stored events to the three aggregate tables (inside the writer's transaction)."""
    if not stored:
        return
    minutes, days, totals = rollup(fold_minutes(stored))
    conn.executemany(sql.UPSERT_AGG_MINUTE, minutes)
    conn.executemany(sql.UPSERT_AGG_DAY, days)
    conn.executemany(sql.UPSERT_AGG_TOTAL, totals)





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
# One service key, or two (a name and ''), or none (NULL: every service)
SERVICE_ROWS_RANGE: Final = _PER_NAME.format(rows=_RANGE_ROWS, service="(?8 IS NULL OR service IN (?8, ?9))")
SERVICE_ROWS_WHOLE: Final = _PER_NAME.format(
    rows=f"SELECT {_COLS} FROM agg_total WHERE project = ?1", service="(?2 IS NULL OR service IN (?2, ?3))"
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
SERVICE_NAMES: Final = "SELECT DISTINCT service FROM agg_total WHERE project = ? AND count > 0 ORDER BY service"

MINUTE_SERIES: Final = (
    "SELECT service, minute, sum(count), sum(with_status), sum(errors), sum(with_rt), total(rt_sum)"
    " FROM agg_minute WHERE project = ?1 AND minute BETWEEN ?2 AND ?3 AND (?4 IS NULL OR service = ?4)"
    " GROUP BY service, minute HAVING sum(count) > 0 ORDER BY service, minute"
)

# Buckets of ?5 minutes from minute ?2 through ?3 of the services ?4 (a JSON array of keys)
SERVICE_SERIES: Final = (
    "SELECT (minute - ?2) / ?5 AS bucket, sum(count), sum(with_status), sum(errors), sum(with_rt),"
    " total(rt_sum) FROM agg_minute WHERE project = ?1 AND minute BETWEEN ?2 AND ?3"
    " AND service IN (SELECT value FROM json_each(?4)) GROUP BY bucket HAVING sum(count) > 0 ORDER BY bucket"
)


def read_service_stats(
    conn: sqlite3.Connection, project: str, plan: RangePlan, service_name: str | None, top: int,
    name_unknown: bool = False,
) -> list[ServiceAggregate]:
    keys = service_keys(service_name, name_unknown=name_unknown)
    first, second = (None, None) if keys is None else (keys[0], keys[-1])
    if plan.whole:
        rows = conn.execute(SERVICE_ROWS_WHOLE, (project, first, second)).fetchall()
    else:
        rows = conn.execute(SERVICE_ROWS_RANGE, (*plan.params(project), first, second)).fetchall()
    return group_services(rows, top, name_unknown=name_unknown)


def read_service_names(conn: sqlite3.Connection, project: str, name_unknown: bool) -> list[str]:
    """Services with events; ``name_unknown``: those sent without one named UNKNOWN_SERVICE, else left out."""
    return named_services([name for (name,) in conn.execute(SERVICE_NAMES, (project,))], name_unknown)


def read_service_series(
    conn: sqlite3.Connection, project: str, services: list[str], lo: int, hi: int, bucket_minutes: int
) -> list[SeriesRow]:
    keys = msgspec.json.encode(services).decode()
    rows = conn.execute(SERVICE_SERIES, (project, lo, hi, keys, bucket_minutes)).fetchall()
    return [SeriesRow(b, n, st, er, wr, float(rs)) for b, n, st, er, wr, rs in rows]


def read_top_events(conn: sqlite3.Connection, project: str, plan: RangePlan, limit: int) -> list[EventCount]:
    if plan.whole:
        rows = conn.execute(TOP_EVENTS_WHOLE, (project, limit)).fetchall()
    else:
        rows = conn.execute(TOP_EVENTS_RANGE, (*plan.params(project), limit)).fetchall()
    return [EventCount(name, count) for name, count in rows]


def read_per_day(conn: sqlite3.Connection, project: str, plan: RangePlan) -> list[DayCount]:
    rows = conn.execute(PER_DAY, plan.params(project)).fetchall()
    return [DayCount(day_string(day), count) for day, count in rows]


def read_minute_series(
    conn: sqlite3.Connection, project: str, lo: int, hi: int, service_name: str | None
) -> list[MinuteRow]:
    """Per-minute rows of minutes lo..hi (one index range of agg_minute's primary key)."""
    rows = conn.execute(MINUTE_SERIES, (project, lo, hi, service_name)).fetchall()
    return [MinuteRow(service or None, minute, n, st, er, wr, float(rs)) for service, minute, n, st, er, wr, rs in rows]
