"""The queries of the PostgreSQL backend outside the group commit: event reads, pre-aggregated
statistics, projects.

The same answers as ``storage.sqlite_schema`` and ``storage.sqlite_aggregates`` (the shared storage
suite checks both): newest-first keyset pages over ``(timestamp, seq)``, replays in seq order, and
statistics that never read the log (agg_total without a range; agg_day for the whole days inside a
range plus agg_minute for its edges, planned by ``sqlite_aggregates.plan_range``).

Functions taking a ``conn`` are asyncio-flavoured units of work for ``pg_bridge.Database.run``.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from protocol.record import Event
from storage import postgres_schema as sql
from storage.aggregates import (
    MINUTES_PER_DAY,
    RangePlan,
    day_string,
    group_services,
    named_services,
    service_keys,
)
from storage.base import (
    HISTORY_KINDS,
    UNKNOWN_SERVICE,
    Cursor,
    DayCount,
    EventCount,
    EventFilter,
    EventPage,
    History,
    HistoryKey,
    Lifetime,
    LifetimeHistory,
    MinuteRow,
    Project,
    SeriesRow,
    ServiceAggregate,
    Snapshot,
    new_project,
)
from storage.pg_bridge import Connection

# Case folding of event names for the ``type`` filter, applied to the column; the needle is folded
# by Python's str.lower(). ICU's root locale agrees with Python on non-ASCII letters whatever the
# database's locale; without ICU the database's own locale folds (ASCII only under "C").
FOLD_ICU: Final = 'lower(name COLLATE "und-x-icu")'
FOLD_DATABASE: Final = 'lower(name COLLATE "default")'

# Events ---------------------------------------------------------------------------------------------
# Everything but the project, which the reader already knows (every read is for one project).
EVENT_COLUMNS: Final = (
    "seq, id, name, source, timestamp, received_at, payload, user_id, session_id, service_name,"
    " correlation_id, device_type, status_code, response_time_ms, client_id, flags, expires_at"
)
SELECT_MAX_SEQ: Final = "SELECT coalesce(max(seq), 0) FROM events"
SELECT_EVENTS_AFTER: Final = (
    f"SELECT {EVENT_COLUMNS} FROM events WHERE project = $1 AND seq > $2 ORDER BY seq LIMIT $3"
)
SELECT_SESSION_EVENTS: Final = (
    f"SELECT {EVENT_COLUMNS} FROM events WHERE project = $1 AND session_id = $2 AND seq > $3 ORDER BY seq"
)
SELECT_USER_EVENTS: Final = (
    f"SELECT {EVENT_COLUMNS} FROM events WHERE project = $1 AND user_id = $2 AND seq > $3 ORDER BY seq"
)
COUNT_EVENTS: Final = "SELECT coalesce(sum(count), 0)::bigint FROM agg_total WHERE project = $1"

# Histories of a batch of actors (storage/history_reads.py): the keys come in as arrays, numbered
# by WITH ORDINALITY. Each key's events are one probe of its hash index (events_session /
# events_user); OFFSET 0 keeps the planner from also ANDing the (project, timestamp, seq) index into
# a bitmap, which it does for a joined key whose selectivity it cannot see: 18 ms instead of
# 0.2 ms for two keys over 140k events.
SELECT_SNAPSHOTS_OF: Final = (
    "SELECT k.i, s.state, s.upto_seq"
    " FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS k(k_project, k_kind, k_key, i)"
    " JOIN snapshots s ON s.project = k.k_project AND s.kind = k.k_kind AND s.key = k.k_key"
)
_HISTORY_KEY_INDEX: Final = EVENT_COLUMNS.count(",") + 1  # where k.i follows the event's columns
SELECT_HISTORY_EVENTS: Final = {
    kind: f"SELECT {', '.join('e.' + c.strip() for c in EVENT_COLUMNS.split(','))}, k.i"
    " FROM unnest($1::text[], $2::text[], $3::bigint[]) WITH ORDINALITY AS k(k_project, k_id, k_after, i),"
    f" LATERAL (SELECT * FROM events WHERE {column} = k.k_id OFFSET 0) e"
    " WHERE e.project = k.k_project AND e.seq > k.k_after ORDER BY e.seq"
    for kind, column in HISTORY_KINDS.items()
}


async def read_histories(conn: Connection, keys: list[HistoryKey]) -> dict[HistoryKey, History]:
    """The histories of ``keys`` in one unit of work: one statement for the snapshots, one per kind
    for the events after them."""
    projects, kinds, ids = zip(*keys, strict=True)
    rows = await conn.fetch(SELECT_SNAPSHOTS_OF, projects, kinds, ids)
    snapshots = {row[0] - 1: Snapshot(state=bytes(row[1]), upto_seq=row[2]) for row in rows}
    events: list[list[Event]] = [[] for _ in keys]
    for kind, statement in SELECT_HISTORY_EVENTS.items():
        of_kind = [i for i, key in enumerate(keys) if key[1] == kind]
        if not of_kind:
            continue
        after = [snapshots[i].upto_seq if i in snapshots else 0 for i in of_kind]
        for row in await conn.fetch(statement, [keys[i][0] for i in of_kind], [keys[i][2] for i in of_kind], after):
            i = of_kind[row[_HISTORY_KEY_INDEX] - 1]
            events[i].append(event_from_row(keys[i][0], row))
    return {key: History(snapshots.get(i), events[i]) for i, key in enumerate(keys)}


def event_from_row(project: str, r: Any) -> Event:
    return Event(
        seq=r[0], id=r[1], project=project, name=r[2], source=r[3], timestamp=r[4], received_at=r[5],
        payload=msgspec.Raw(r[6]), user_id=r[7], session_id=r[8], service_name=r[9],
        correlation_id=r[10], device_type=r[11], status_code=r[12], response_time_ms=r[13],
        client_id=r[14], flags=r[15], expires_at=r[16],
    )  # fmt: skip


def _where(flt: EventFilter, fold: str) -> tuple[str, list[object]]:
    """The WHERE clause of a filter; the same filter shape always yields the same SQL text (one
    prepared statement per shape in asyncpg's statement cache)."""
    clauses = ["project = $1"]
    params: list[object] = [flt.project]
    placeholder: dict[str, str] = {}
    for column, op, value in flt.column_terms():
        params.append(value)
        if column == "service_name" and value == UNKNOWN_SERVICE:
            # "unknown" also names the events sent without a service (storage.aggregates): no label
            clauses.append(f"(service_name = ${len(params)} OR service_name IS NULL)")
            continue
        placeholder[column] = f"${len(params)}"
        clauses.append(f"{column} {op} {placeholder[column]}")
    # The same name and service once more as labels: what lets the planner use events_labels.
    labels = []
    if "name" in placeholder:
        labels.append(placeholder["name"])
    if "service_name" in placeholder:
        labels.append(f"E'\\x01' || {placeholder['service_name']}")
    if labels:
        clauses.append(f"{sql.LABELS} @> ARRAY[{', '.join(labels)}]")
    if flt.name_contains is not None:
        # strpos() rather than LIKE: no wildcard characters to escape in the user's text.
        params.append(flt.name_contains.lower())
        clauses.append(f"strpos({fold}, ${len(params)}) > 0")
    return " AND ".join(clauses), params


def _aggregate_count_query(flt: EventFilter, fold: str) -> tuple[str, list[object]] | None:
    """The match count from agg_total when the filter is only about names and services (which the
    aggregate is keyed by); None when another filter needs the log."""
    if (flt.since_ms, flt.until_ms, flt.user_id, flt.session_id, flt.correlation_id) != (None,) * 5:
        return None
    clauses = ["project = $1"]
    params: list[object] = [flt.project]
    for column, value in (("service", flt.service_name), ("name", flt.event_name)):
        if value is not None:
            params.append(value)
            if column == "service" and value == UNKNOWN_SERVICE:
                clauses.append(f"service IN (${len(params)}, '')")
            else:
                clauses.append(f"{column} = ${len(params)}")
    if flt.name_contains is not None:
        params.append(flt.name_contains.lower())
        clauses.append(f"strpos({fold}, ${len(params)}) > 0")
    return f"SELECT coalesce(sum(count), 0)::bigint FROM agg_total WHERE {' AND '.join(clauses)}", params


async def query_events(
    conn: Connection, flt: EventFilter, limit: int, cursor: Cursor | None, fold: str
) -> EventPage:
    """One page and the total match count (run it in a read-only snapshot: both see the same data)."""
    where, params = _where(flt, fold)
    page_where, page_params = where, list(params)
    if cursor is not None:
        # A row comparison: one range of the (project, timestamp, seq) index.
        n = len(page_params)
        page_where += f" AND (timestamp, seq) < (${n + 1}, ${n + 2})"
        page_params += [cursor.timestamp, cursor.seq]
    page_params.append(limit + 1)
    page_sql = (
        f"SELECT {EVENT_COLUMNS} FROM events WHERE {page_where}"
        f" ORDER BY timestamp DESC, seq DESC LIMIT ${len(page_params)}"
    )
    rows = await conn.fetch(page_sql, *page_params)
    count = _aggregate_count_query(flt, fold) or (f"SELECT count(*) FROM events WHERE {where}", params)
    filtered = await conn.fetchval(count[0], *count[1])
    events = [event_from_row(flt.project, row) for row in rows[:limit]]
    next_cursor = Cursor(events[-1].timestamp, events[-1].seq) if len(rows) > limit else None
    return EventPage(events=events, filtered=int(filtered), next_cursor=next_cursor)


async def query_events_descending(
    conn: Connection, flt: EventFilter, limit: int, before: Cursor | None, fold: str
) -> list[Event]:
    """One page of a large listing, newest first: query_events' index ranges, and no count."""
    where, params = _where(flt, fold)
    if before is not None:
        n = len(params)
        where += f" AND (timestamp, seq) < (${n + 1}, ${n + 2})"
        params += [before.timestamp, before.seq]
    params.append(limit)
    page_sql = (
        f"SELECT {EVENT_COLUMNS} FROM events WHERE {where} ORDER BY timestamp DESC, seq DESC LIMIT ${len(params)}"
    )
    rows = await conn.fetch(page_sql, *params)
    return [event_from_row(flt.project, row) for row in rows]


async def query_events_ascending(
    conn: Connection, flt: EventFilter, limit: int, after: Cursor | None, fold: str
) -> list[Event]:
    """One page of the export's scan, oldest first: query_events' index ranges walked forward,
    and no count."""
    where, params = _where(flt, fold)
    if after is not None:
        n = len(params)
        where += f" AND (timestamp, seq) > (${n + 1}, ${n + 2})"
        params += [after.timestamp, after.seq]
    params.append(limit)
    page_sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE {where} ORDER BY timestamp, seq LIMIT ${len(params)}"
    rows = await conn.fetch(page_sql, *params)
    return [event_from_row(flt.project, row) for row in rows]


# Aggregates -----------------------------------------------------------------------------------------
_COLS: Final = "service, name, count, with_status, errors, with_rt, rt_sum, last_seen"
# $1 project, $2..$3 days, $4..$5 head minutes, $6..$7 tail minutes (RangePlan.params). BETWEEN on
# an empty range costs one index probe. Integer division truncates as SQLite's does.
_RANGE_ROWS: Final = f"""
    SELECT {_COLS}, day FROM agg_day WHERE project = $1 AND day BETWEEN $2 AND $3
    UNION ALL
    SELECT {_COLS}, minute / {MINUTES_PER_DAY} FROM agg_minute WHERE project = $1 AND minute BETWEEN $4 AND $5
    UNION ALL
    SELECT {_COLS}, minute / {MINUTES_PER_DAY} FROM agg_minute WHERE project = $1 AND minute BETWEEN $6 AND $7
"""
_PER_NAME: Final = (
    "SELECT service, name, sum(count)::bigint, sum(with_status)::bigint, sum(errors)::bigint,"
    " sum(with_rt)::bigint, coalesce(sum(rt_sum), 0)::float8, max(last_seen)"
    " FROM ({rows}) AS r WHERE {service} GROUP BY service, name"
)
# One service key, or two (a name and ''), or none (NULL: every service)
SERVICE_ROWS_RANGE: Final = _PER_NAME.format(rows=_RANGE_ROWS, service="($8::text IS NULL OR service IN ($8, $9))")
SERVICE_ROWS_WHOLE: Final = _PER_NAME.format(
    rows=f"SELECT {_COLS} FROM agg_total WHERE project = $1", service="($2::text IS NULL OR service IN ($2, $3))"
)
TOP_EVENTS_RANGE: Final = (
    f"SELECT name, sum(count)::bigint AS n FROM ({_RANGE_ROWS}) AS r GROUP BY name HAVING sum(count) > 0"
    " ORDER BY n DESC, name LIMIT $8"
)
TOP_EVENTS_WHOLE: Final = (
    "SELECT name, sum(count)::bigint AS n FROM agg_total WHERE project = $1 GROUP BY name"
    " HAVING sum(count) > 0 ORDER BY n DESC, name LIMIT $2"
)
PER_DAY: Final = (
    f"SELECT day, sum(count)::bigint AS n FROM ({_RANGE_ROWS}) AS r GROUP BY day HAVING sum(count) > 0"
    " ORDER BY day"
)
MINUTE_SERIES: Final = (
    "SELECT service, minute, sum(count)::bigint, sum(with_status)::bigint, sum(errors)::bigint,"
    " sum(with_rt)::bigint, coalesce(sum(rt_sum), 0)::float8 FROM agg_minute"
    " WHERE project = $1 AND minute BETWEEN $2 AND $3 AND ($4::text IS NULL OR service = $4)"
    " GROUP BY service, minute HAVING sum(count) > 0 ORDER BY service, minute"
)
SERVICE_NAMES: Final = "SELECT DISTINCT service FROM agg_total WHERE project = $1 AND count > 0 ORDER BY service"
# Buckets of $5 minutes from minute $2 through $3 of the services $4
SERVICE_SERIES: Final = (
    "SELECT (minute - $2) / $5 AS bucket, sum(count)::bigint, sum(with_status)::bigint, sum(errors)::bigint,"
    " sum(with_rt)::bigint, coalesce(sum(rt_sum), 0)::float8 FROM agg_minute"
    " WHERE project = $1 AND minute BETWEEN $2 AND $3 AND service = ANY($4::text[])"
    " GROUP BY bucket HAVING sum(count) > 0 ORDER BY bucket"
)
UPSERT_LIFETIME: Final = (
    "INSERT INTO lifetimes (id, node, started_ms, last_seen_ms, stopped_ms) VALUES ($1, $2, $3, $4, $5)"
    " ON CONFLICT (id) DO UPDATE SET last_seen_ms = excluded.last_seen_ms, stopped_ms = excluded.stopped_ms"
)
FIRST_START: Final = "SELECT min(started_ms) FROM lifetimes"
SELECT_LIFETIMES: Final = (
    "SELECT id, node, started_ms, last_seen_ms, stopped_ms FROM lifetimes WHERE last_seen_ms >= $1 ORDER BY started_ms"
)


async def service_stats(
    conn: Connection, project: str, plan: RangePlan, service_name: str | None, top: int, name_unknown: bool = False
) -> list[ServiceAggregate]:
    keys = service_keys(service_name, name_unknown=name_unknown)
    first, second = (None, None) if keys is None else (keys[0], keys[-1])
    if plan.whole:
        rows = await conn.fetch(SERVICE_ROWS_WHOLE, project, first, second)
    else:
        rows = await conn.fetch(SERVICE_ROWS_RANGE, *plan.params(project), first, second)
    return group_services((tuple(row) for row in rows), top, name_unknown=name_unknown)


async def service_names(conn: Connection, project: str, name_unknown: bool) -> list[str]:
    return named_services([row[0] for row in await conn.fetch(SERVICE_NAMES, project)], name_unknown)


async def service_series(
    conn: Connection, project: str, services: list[str], lo: int, hi: int, bucket_minutes: int
) -> list[SeriesRow]:
    rows = await conn.fetch(SERVICE_SERIES, project, lo, hi, services, bucket_minutes)
    return [SeriesRow(r[0], r[1], r[2], r[3], r[4], float(r[5])) for r in rows]


async def record_lifetime(conn: Connection, lifetime: Lifetime) -> None:
    await conn.execute(UPSERT_LIFETIME, *msgspec.structs.astuple(lifetime))


async def lifetimes(conn: Connection, since_ms: int) -> LifetimeHistory:
    first = await conn.fetchval(FIRST_START)
    rows = await conn.fetch(SELECT_LIFETIMES, since_ms)
    return LifetimeHistory(first, [Lifetime(*row) for row in rows])


async def top_events(conn: Connection, project: str, plan: RangePlan, limit: int | None) -> list[EventCount]:
    if plan.whole:
        rows = await conn.fetch(TOP_EVENTS_WHOLE, project, limit)
    else:
        rows = await conn.fetch(TOP_EVENTS_RANGE, *plan.params(project), limit)
    return [EventCount(name, count) for name, count in rows]


async def per_day(conn: Connection, project: str, plan: RangePlan) -> list[DayCount]:
    rows = await conn.fetch(PER_DAY, *plan.params(project))
    return [DayCount(day_string(day), count) for day, count in rows]


async def minute_series(conn: Connection, project: str, lo: int, hi: int, service_name: str | None) -> list[MinuteRow]:
    rows = await conn.fetch(MINUTE_SERIES, project, lo, hi, service_name)
    return [MinuteRow(r[0] or None, r[1], r[2], r[3], r[4], r[5], float(r[6])) for r in rows]


# Projects -------------------------------------------------------------------------------------------


async def insert_project(conn: Connection, name: str) -> Project | None:
    """The new project, or None if the name is taken."""
    project = new_project(name)
    inserted = await conn.fetchval(sql.INSERT_PROJECT, *msgspec.structs.astuple(project))
    return None if inserted is None else project


async def ensure_project(conn: Connection, name: str) -> Project:
    """The project called ``name``, created unless it exists (several nodes may start at once)."""
    await insert_project(conn, name)
    row = await conn.fetchrow(sql.SELECT_PROJECT_BY_NAME, name)
    return Project(*row)


async def list_projects(conn: Connection) -> list[Project]:
    return [Project(*row) for row in await conn.fetch(sql.SELECT_PROJECTS)]


async def project_by_key(conn: Connection, key: str) -> Project | None:
    row = await conn.fetchrow(sql.SELECT_PROJECT_BY_KEY, key)
    return None if row is None else Project(*row)


async def ping(conn: Connection) -> None:
    await conn.fetchval("SELECT 1")
