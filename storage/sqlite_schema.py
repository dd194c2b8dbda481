"""The SQLite schema of Pulse: versioned DDL and the SQL strings the backend prepares once.

The schema version lives in ``PRAGMA user_version``; ``MIGRATIONS[i]`` takes a database from
version ``i`` to ``i + 1``. Migrations are append-only: never edit one that has shipped.

Every SQL string is a module constant, and query_events builds the same text for the same filter
shape, so sqlite3's per-connection statement cache compiles each statement once per connection.
"""

from __future__ import annotations

import sqlite3
from typing import Final

import msgspec

from protocol.record import Event
from storage import (
    approvals_schema,
    consent_schema,
    deletion_schema,
    identity_schema,
    policy_schema,
    triggers_schema,
    webhooks_schema,
    workflows_schema,
)
from storage.base import UNKNOWN_SERVICE, Cursor, EventFilter, EventPage

# Version 1 --------------------------------------------------------------------------------------
# ``events.project_num`` is a small integer standing for the project id (table project_nums):
# the project leads every index, and a small integer there instead of a 16-character string made
# appends ~1.3x faster in a raw insert benchmark. Reads resolve the id once and rebuild
# Event.project from it.
# ``seq`` is the rowid, and every SQLite index ends with the rowid implicitly: the index on
# (project_num, timestamp) is really (project_num, timestamp, seq) and serves
# ``ORDER BY timestamp DESC, seq DESC`` without a sort; (project_num, session_id) is really
# (project_num, session_id, seq) and serves session replays in seq order.
# Nullable filter columns get partial indexes (``WHERE col IS NOT NULL``): events without a user,
# session or correlation id cost nothing there, and ``col = ?`` implies NOT NULL, so the planner
# can still use them.
_V1: Final = (
    "CREATE TABLE project_nums (num INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE)",
    """
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL,
        project_num INTEGER NOT NULL,
        name TEXT NOT NULL,
        source TEXT NOT NULL,
        timestamp INTEGER NOT NULL,
        received_at INTEGER NOT NULL,
        user_id TEXT,
        session_id TEXT,
        service_name TEXT,
        correlation_id TEXT,
        device_type TEXT,
        status_code INTEGER,
        response_time_ms REAL,
        client_id TEXT,
        flags INTEGER NOT NULL DEFAULT 0,
        payload BLOB NOT NULL
    )
    """,
    "CREATE INDEX events_time ON events (project_num, timestamp)",
    "CREATE INDEX events_service ON events (project_num, service_name, timestamp)"
    " WHERE service_name IS NOT NULL",
    "CREATE INDEX events_user_time ON events (project_num, user_id, timestamp) WHERE user_id IS NOT NULL",
    "CREATE INDEX events_user_seq ON events (project_num, user_id) WHERE user_id IS NOT NULL",
    "CREATE INDEX events_session ON events (project_num, session_id) WHERE session_id IS NOT NULL",
    "CREATE INDEX events_correlation ON events (project_num, correlation_id)"
    " WHERE correlation_id IS NOT NULL",
    "CREATE INDEX events_name ON events (project_num, name, timestamp)",
    "CREATE UNIQUE INDEX events_client_id ON events (project_num, client_id) WHERE client_id IS NOT NULL",
    # Aggregates: the same columns at three granularities. ``service`` is '' for events sent
    # without a serviceName (a primary key column cannot usefully be NULL).
    *(
        f"""
        CREATE TABLE {table} (
            project TEXT NOT NULL,
            {bucket}
            service TEXT NOT NULL,
            name TEXT NOT NULL,
            count INTEGER NOT NULL,
            with_status INTEGER NOT NULL,
            errors INTEGER NOT NULL,
            with_rt INTEGER NOT NULL,
            rt_sum REAL NOT NULL,
            last_seen INTEGER NOT NULL,
            PRIMARY KEY (project, {key}service, name)
        ) WITHOUT ROWID
        """
        for table, bucket, key in (
            ("agg_minute", "minute INTEGER NOT NULL,", "minute, "),
            ("agg_day", "day INTEGER NOT NULL,", "day, "),
            ("agg_total", "", ""),
        )
    ),
    """
    CREATE TABLE projects (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        public_key TEXT NOT NULL UNIQUE,
        secret_key TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL
    )
    """,
    """
    CREATE TABLE snapshots (
        project TEXT NOT NULL,
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        state BLOB NOT NULL,
        upto_seq INTEGER NOT NULL,
        PRIMARY KEY (project, kind, key)
    ) WITHOUT ROWID
    """,
)

# Server lifetimes (server/uptime.py): one row per process, for the health's availability figure.
_V2: Final = (
    """
    CREATE TABLE lifetimes (
        id TEXT PRIMARY KEY,
        node TEXT NOT NULL,
        started_ms INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        stopped_ms INTEGER
    )
    """,
    "CREATE INDEX lifetimes_last_seen ON lifetimes (last_seen_ms)",
)

# Triggers, experiments and webhook deliveries (issue 13): their DDL lives beside their code.
_V3: Final = (triggers_schema.SQLITE_DDL + webhooks_schema.SQLITE_DDL + workflows_schema.SQLITE_DDL
       + approvals_schema.SQLITE_DDL)

# Privacy and identity (issue 14): project policies, event expiry, consent, deletion, identity.
_V4: Final = (policy_schema.SQLITE_DDL
       + identity_schema.SQLITE_DDL
       + consent_schema.SQLITE_DDL
       + deletion_schema.SQLITE_DDL)

MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (_V1, _V2, _V3, _V4)
SCHEMA_VERSION: Final = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the database up to SCHEMA_VERSION, one transaction per migration."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise RuntimeError(
            f"database schema version {version!r} is newer than this server's {SCHEMA_VERSION!r}"
        )
    for target in range(version + 1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[target - 1]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {target:d}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


# Events -----------------------------------------------------------------------------------------
SELECT_PROJECT_NUM: Final = "SELECT num FROM project_nums WHERE id = ?"
INSERT_PROJECT_NUM: Final = "INSERT INTO project_nums (id) VALUES (?)"
INSERT_EVENT: Final = (
    "INSERT INTO events (seq, id, project_num, name, source, timestamp, received_at, payload, user_id,"
    " session_id, service_name, correlation_id, device_type, status_code, response_time_ms, client_id,"
    f" flags, expires_at) VALUES ({', '.join('?' * 18)})"
)
# Everything but the project, which the reader already knows (every read is for one project).
EVENT_COLUMNS: Final = (
    "seq, id, name, source, timestamp, received_at, payload, user_id, session_id, service_name,"
    " correlation_id, device_type, status_code, response_time_ms, client_id, flags, expires_at"
)
EventRow = tuple[
    int, str, str, str, int, int, bytes, str | None, str | None, str | None, str | None, str | None,
    int | None, float | None, str | None, int, int | None,
]  # fmt: skip


def event_row(seq: int, project_num: int, ev: Event) -> tuple[object, ...]:
    """The INSERT_EVENT parameters of ``ev``. msgspec.Raw exposes the buffer protocol, so sqlite3
    binds the payload as a BLOB of its raw JSON bytes (the bytes of ``bytes(ev.payload)``) without
    an intermediate copy."""
    return (
        seq, ev.id, project_num, ev.name, ev.source, ev.timestamp, ev.received_at, ev.payload,
        ev.user_id, ev.session_id, ev.service_name, ev.correlation_id, ev.device_type,
        ev.status_code, ev.response_time_ms, ev.client_id, ev.flags, ev.expires_at,
    )  # fmt: skip


def event_from_row(project: str, r: EventRow) -> Event:
    return Event(
        seq=r[0], id=r[1], project=project, name=r[2], source=r[3], timestamp=r[4], received_at=r[5],
        payload=msgspec.Raw(r[6]), user_id=r[7], session_id=r[8], service_name=r[9],
        correlation_id=r[10], device_type=r[11], status_code=r[12], response_time_ms=r[13],
        client_id=r[14], flags=r[15], expires_at=r[16],
    )  # fmt: skip


# Known client ids among a group's candidates: one statement for any number of ids (a JSON array
# expanded by json_each, then one index probe per id: ~1 us each). Beware: adding the seemingly
# harmless ``client_id IS NOT NULL`` (or the IN-subquery form with it) measured 50x slower.
SELECT_CLIENT_IDS: Final = (
    "SELECT e.client_id, e.id, e.seq FROM json_each(?1) AS wanted CROSS JOIN events AS e"
    " WHERE e.project_num = ?2 AND e.client_id = wanted.value"
)
SELECT_MAX_SEQ: Final = "SELECT coalesce(max(seq), 0) FROM events"
# ``+project_num`` keeps the planner off events_time (a sort of the whole project): walking the
# rowid from after_seq and skipping other projects' rows is what a stream resume wants.
SELECT_EVENTS_AFTER: Final = (
    f"SELECT {EVENT_COLUMNS} FROM events WHERE +project_num = ? AND seq > ? ORDER BY seq LIMIT ?"
)
SELECT_SESSION_EVENTS: Final = (
    f"SELECT {EVENT_COLUMNS} FROM events WHERE project_num = ? AND session_id = ? AND seq > ? ORDER BY seq"
)
SELECT_USER_EVENTS: Final = (
    f"SELECT {EVENT_COLUMNS} FROM events INDEXED BY events_user_seq"
    " WHERE project_num = ? AND user_id = ? AND seq > ? ORDER BY seq"
)
SELECT_HISTORY_EVENTS: Final = {"session": SELECT_SESSION_EVENTS, "user": SELECT_USER_EVENTS}  # by actor kind

# Aggregates -------------------------------------------------------------------------------------
# Commutative upserts: adding a bucket twice in any order gives the same row, so several writers
# (nodes, later) may flush the same bucket.
_AGG_UPDATE: Final = (
    " ON CONFLICT DO UPDATE SET count = count + excluded.count,"
    " with_status = with_status + excluded.with_status, errors = errors + excluded.errors,"
    " with_rt = with_rt + excluded.with_rt, rt_sum = rt_sum + excluded.rt_sum,"
    " last_seen = max(last_seen, excluded.last_seen)"
)
_AGG_VALUES: Final = "service, name, count, with_status, errors, with_rt, rt_sum, last_seen"
UPSERT_AGG_MINUTE: Final = (
    f"INSERT INTO agg_minute (project, minute, {_AGG_VALUES}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    + _AGG_UPDATE
)
UPSERT_AGG_DAY: Final = (
    f"INSERT INTO agg_day (project, day, {_AGG_VALUES}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)" + _AGG_UPDATE
)
UPSERT_AGG_TOTAL: Final = (
    f"INSERT INTO agg_total (project, {_AGG_VALUES}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)" + _AGG_UPDATE
)

# Projects and snapshots -------------------------------------------------------------------------
PROJECT_COLUMNS: Final = "id, name, public_key, secret_key, created_at"
INSERT_PROJECT: Final = f"INSERT INTO projects ({PROJECT_COLUMNS}) VALUES (?, ?, ?, ?, ?)"
SELECT_PROJECTS: Final = f"SELECT {PROJECT_COLUMNS} FROM projects ORDER BY created_at, name"
SELECT_PROJECT_BY_NAME: Final = f"SELECT {PROJECT_COLUMNS} FROM projects WHERE name = ?"
SELECT_PROJECT_BY_KEY: Final = (
    f"SELECT {PROJECT_COLUMNS} FROM projects WHERE public_key = ?1 OR secret_key = ?1"
)
UPSERT_SNAPSHOT: Final = (
    "INSERT INTO snapshots (project, kind, key, state, upto_seq) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT DO UPDATE SET state = excluded.state, upto_seq = excluded.upto_seq"
)
SELECT_SNAPSHOT: Final = "SELECT state, upto_seq FROM snapshots WHERE project = ? AND kind = ? AND key = ?"

# Server lifetimes
UPSERT_LIFETIME: Final = (
    "INSERT INTO lifetimes (id, node, started_ms, last_seen_ms, stopped_ms) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (id) DO UPDATE SET last_seen_ms = excluded.last_seen_ms, stopped_ms = excluded.stopped_ms"
)
FIRST_START: Final = "SELECT min(started_ms) FROM lifetimes"
SELECT_LIFETIMES: Final = (
    "SELECT id, node, started_ms, last_seen_ms, stopped_ms FROM lifetimes WHERE last_seen_ms >= ? ORDER BY started_ms"
)

# Aggregate totals, shared by count_events and the unfiltered query_events page.
COUNT_EVENTS: Final = "SELECT coalesce(sum(count), 0) FROM agg_total WHERE project = ?"


# Event queries ----------------------------------------------------------------------------------
def _where(num: int, flt: EventFilter) -> tuple[str, list[object]]:
    """The WHERE clause of a filter; the same filter shape always yields the same SQL text."""
    clauses = ["project_num = ?"]
    params: list[object] = [num]
    for column, op, value in flt.column_terms():
        if column == "service_name" and value == UNKNOWN_SERVICE:
            # "unknown" also names the events sent without a service (storage.aggregates)
            clauses.append("(service_name = ? OR service_name IS NULL)")
        else:
            clauses.append(f"{column} {op} ?")
        params.append(value)
    if flt.name_contains is not None:
        # instr() rather than LIKE: no wildcard characters to escape in the user's text.
        fold = "lower" if flt.name_contains.isascii() else "unicode_lower"
        clauses.append(f"instr({fold}(name), ?) > 0")
        params.append(flt.name_contains.lower())
    return " AND ".join(clauses), params


def _index_hint(flt: EventFilter) -> str:
    """Pin the index of a session or correlation filter: their indexes do not end in timestamp,
    and without statistics the planner would rather walk events_time in order than sort a few rows."""
    if flt.session_id is not None:
        return " INDEXED BY events_session"
    if flt.correlation_id is not None:
        return " INDEXED BY events_correlation"
    return ""


def _aggregate_count(conn: sqlite3.Connection, flt: EventFilter) -> int | None:
    """The match count from agg_total when the filter is only about names and services (which the
    aggregate is keyed by): a ``type`` substring over millions of rows costs one small table scan
    instead of a scan of the log. None when another filter needs the log."""
    if (flt.since_ms, flt.until_ms, flt.user_id, flt.session_id, flt.correlation_id) != (None,) * 5:
        return None
    if flt.name_contains is not None and not flt.name_contains.isascii():
        return None  # SQLite's lower() folds ASCII only; the log path handles the rest
    clauses, params = ["project = ?"], [flt.project]
    if flt.service_name is not None:
        clauses.append("service IN (?, '')" if flt.service_name == UNKNOWN_SERVICE else "service = ?")
        params.append(flt.service_name)
    if flt.event_name is not None:
        clauses.append("name = ?")
        params.append(flt.event_name)
    if flt.name_contains is not None:
        clauses.append("instr(lower(name), lower(?)) > 0")
        params.append(flt.name_contains)
    row = conn.execute(f"SELECT coalesce(sum(count), 0) FROM agg_total WHERE {' AND '.join(clauses)}", params)
    return int(row.fetchone()[0])


def query_events(
    conn: sqlite3.Connection, num: int, flt: EventFilter, limit: int, cursor: Cursor | None
) -> EventPage:
    where, params = _where(num, flt)
    page_where, page_params = where, list(params)
    if cursor is not None:
        # The redundant ``timestamp <= ?`` gives the planner an index range to seek to.
        page_where += " AND timestamp <= ? AND (timestamp < ? OR seq < ?)"
        page_params += [cursor.timestamp, cursor.timestamp, cursor.seq]
    page_sql = (
        f"SELECT {EVENT_COLUMNS} FROM events{_index_hint(flt)} WHERE {page_where}"
        " ORDER BY timestamp DESC, seq DESC LIMIT ?"
    )
    conn.execute("BEGIN")  # one snapshot for the page and its count
    try:
        rows = conn.execute(page_sql, (*page_params, limit + 1)).fetchall()
        filtered = _aggregate_count(conn, flt)
        if filtered is None:
            count_sql = f"SELECT count(*) FROM events{_index_hint(flt)} WHERE {where}"
            filtered = conn.execute(count_sql, params).fetchone()[0]
    finally:
        conn.execute("COMMIT")
    events = [event_from_row(flt.project, row) for row in rows[:limit]]
    next_cursor = Cursor(events[-1].timestamp, events[-1].seq) if len(rows) > limit else None
    return EventPage(events=events, filtered=int(filtered), next_cursor=next_cursor)


def query_events_descending(
    conn: sqlite3.Connection, num: int, flt: EventFilter, limit: int, before: Cursor | None
) -> list[Event]:
    """One page of a large listing, newest first: query_events' index ranges, and no count."""
    where, params = _where(num, flt)
    if before is not None:
        where += " AND timestamp <= ? AND (timestamp < ? OR seq < ?)"
        params += [before.timestamp, before.timestamp, before.seq]
    page_sql = (
        f"SELECT {EVENT_COLUMNS} FROM events{_index_hint(flt)} WHERE {where}"
        " ORDER BY timestamp DESC, seq DESC LIMIT ?"
    )
    rows = conn.execute(page_sql, (*params, limit)).fetchall()
    return [event_from_row(flt.project, row) for row in rows]


def query_events_ascending(
    conn: sqlite3.Connection, num: int, flt: EventFilter, limit: int, after: Cursor | None
) -> list[Event]:
    """One page of the export's scan, oldest first: the same index ranges as query_events, walked
    forward, and no count."""
    where, params = _where(num, flt)
    if after is not None:
        # The redundant ``timestamp >= ?`` gives the planner an index range to seek to.
        where += " AND timestamp >= ? AND (timestamp > ? OR seq > ?)"
        params += [after.timestamp, after.timestamp, after.seq]
    page_sql = (
        f"SELECT {EVENT_COLUMNS} FROM events{_index_hint(flt)} WHERE {where}"
        " ORDER BY timestamp, seq LIMIT ?"
    )
    rows = conn.execute(page_sql, (*params, limit)).fetchall()
    return [event_from_row(flt.project, row) for row in rows]
