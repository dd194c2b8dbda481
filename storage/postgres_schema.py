"""The PostgreSQL schema of Pulse: versioned migrations, monthly event partitions, and the SQL the
writer runs.

Migrations: ``MIGRATIONS[i]`` takes a database from version ``i`` to ``i + 1``; each applied step is
a row of ``schema_migrations``. ``migrate`` runs under a session advisory lock, so nodes starting
together apply each step once. Migrations are append-only: never edit one that has shipped.

Text columns that are keys (projects, names, services, client ids) use the "C" collation: byte
order, as SQLite's BINARY, so ``ORDER BY name`` agrees with the embedded backend and with Python,
and index comparisons are memcmp instead of locale rules.

Everything that runs SQL here is asyncio-flavoured: it runs inside a ``pg_bridge`` unit of work.
"""

from __future__ import annotations

import datetime
from typing import Final

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
from storage.pg_bridge import Connection, transaction

MIGRATION_LOCK: Final = 0x70756C7365_01  # pg_advisory_lock key: "pulse" + 1
PARTITION_LOCK: Final = 0x70756C7365_02
SEQUENCE: Final = "event_seq"
# The GIN-indexed labels of an event; queries must spell the expression exactly like this.
LABELS: Final = "ARRAY[name, E'\\x01' || service_name]"

# Version 1 ----------------------------------------------------------------------------------------
# ``events`` is partitioned by month of ``timestamp`` (unix ms). Partitions are created ahead of
# time and on demand by the writer (``create_partition``); anything outside them lands in
# ``events_default``, so no timestamp is ever rejected. A unique index on a partitioned table must
# contain the partition key, so client-id dedup lives in ``client_ids`` (not partitioned), whose
# primary key is what makes dedup correct across nodes.
# Indexes: each serves reads of storage.postgres_queries, and each costs every append. Server CPU
# per row of a binary COPY, measured here: the heap 1.1 us, B-tree (project, timestamp, seq)
# 2.6 us, B-tree (seq) 0.6 us, a hash index 1.5-2 us, the GIN pending list ~1 us; SQLite's seven
# B-trees came to 26 us a row, this set to ~11 us.
#   events_time     B-tree (project, timestamp, seq): query_events' order, keyset pages, time ranges,
#                   and every filter without an index of its own (``type`` substrings)
#   events_seq      B-tree (seq): events_after (a walk from after_seq, like SQLite's rowid) and
#                   max(seq); appended in order, so nearly free
#   events_session, events_user, events_correlation
#                   hash: equality is all these filters and replays need (then a sort of the few
#                   matching rows by seq or time)
#   events_labels   GIN over (name, service): rare names and services are found without a walk of
#                   events_time, while the planner walks events_time for common ones. Service
#                   labels carry a \x01 prefix so a name never matches a service. Queries repeat
#                   the plain equality, so the answers stay exact.
_V1: Final = (
    # CACHE 1 (the default): all of a node's connections draw from one counter, so its seqs rise
    # in group order; a per-connection cache would hand a later group lower seqs.
    f"CREATE SEQUENCE {SEQUENCE} AS bigint",
    """
    CREATE TABLE events (
        seq bigint NOT NULL,
        id text NOT NULL,
        project text COLLATE "C" NOT NULL,
        name text COLLATE "C" NOT NULL,
        source text NOT NULL,
        timestamp bigint NOT NULL,
        received_at bigint NOT NULL,
        user_id text COLLATE "C",
        session_id text COLLATE "C",
        service_name text COLLATE "C",
        correlation_id text COLLATE "C",
        device_type text,
        status_code bigint,
        response_time_ms double precision,
        client_id text,
        flags bigint NOT NULL,
        payload bytea NOT NULL
    ) PARTITION BY RANGE (timestamp)
    """,
    "CREATE TABLE events_default PARTITION OF events DEFAULT",
    "CREATE INDEX events_time ON events (project, timestamp, seq)",
    "CREATE INDEX events_seq ON events (seq)",
    "CREATE INDEX events_session ON events USING hash (session_id)",
    "CREATE INDEX events_user ON events USING hash (user_id)",
    "CREATE INDEX events_correlation ON events USING hash (correlation_id)",
    f"CREATE INDEX events_labels ON events USING gin (({LABELS}))",
    """
    CREATE TABLE client_ids (
        project text COLLATE "C" NOT NULL,
        client_id text COLLATE "C" NOT NULL,
        id text NOT NULL,
        seq bigint NOT NULL,
        PRIMARY KEY (project, client_id)
    )
    """,
    # Aggregates: the same columns at three granularities. ``service`` is '' for events sent
    # without a serviceName (a primary key column cannot be NULL).
    *(
        f"""
        CREATE TABLE {table} (
            project text COLLATE "C" NOT NULL,
            {bucket}
            service text COLLATE "C" NOT NULL,
            name text COLLATE "C" NOT NULL,
            count bigint NOT NULL,
            with_status bigint NOT NULL,
            errors bigint NOT NULL,
            with_rt bigint NOT NULL,
            rt_sum double precision NOT NULL,
            last_seen bigint NOT NULL,
            PRIMARY KEY (project, {key}service, name)
        )
        """
        for table, bucket, key in (
            ("agg_minute", "minute bigint NOT NULL,", "minute, "),
            ("agg_day", "day bigint NOT NULL,", "day, "),
            ("agg_total", "", ""),
        )
    ),
    """
    CREATE TABLE projects (
        id text PRIMARY KEY,
        name text COLLATE "C" NOT NULL UNIQUE,
        public_key text NOT NULL UNIQUE,
        secret_key text NOT NULL UNIQUE,
        created_at bigint NOT NULL
    )
    """,
    """
    CREATE TABLE snapshots (
        project text COLLATE "C" NOT NULL,
        kind text COLLATE "C" NOT NULL,
        key text COLLATE "C" NOT NULL,
        state bytea NOT NULL,
        upto_seq bigint NOT NULL,
        PRIMARY KEY (project, kind, key)
    )
    """,
    # Creating a partition takes an ACCESS EXCLUSIVE lock on ``events``: one creator at a time
    # (nodes serialize on PARTITION_LOCK, and the loser finds the table made). If the default
    # partition already holds rows of that month the month stays there ('default'); if the lock is
    # not granted within the caller's lock_timeout the caller tries again later ('busy').
    f"""
    CREATE FUNCTION pulse_create_event_partition(partition_name text, lo bigint, hi bigint)
    RETURNS text LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_advisory_xact_lock({PARTITION_LOCK});
        IF to_regclass(partition_name) IS NOT NULL THEN
            RETURN 'exists';
        END IF;
        EXECUTE format('CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%s) TO (%s)',
                       partition_name, lo, hi);
        RETURN 'created';
    EXCEPTION
        WHEN check_violation THEN RETURN 'default';
        WHEN lock_not_available THEN RETURN 'busy';
    END
    $$
    """,
)

# Server lifetimes (server/uptime.py): one row per process, for the health's availability figure.
_V2: Final = (
    """
    CREATE TABLE lifetimes (
        id text PRIMARY KEY,
        node text NOT NULL,
        started_ms bigint NOT NULL,
        last_seen_ms bigint NOT NULL,
        stopped_ms bigint
    )
    """,
    "CREATE INDEX lifetimes_last_seen ON lifetimes (last_seen_ms)",
)

# Triggers, experiments and webhook deliveries (issue 13): their DDL lives beside their code.
_V3: Final = (triggers_schema.POSTGRES_DDL + webhooks_schema.POSTGRES_DDL + workflows_schema.POSTGRES_DDL
       + approvals_schema.POSTGRES_DDL)

# Privacy and identity (issue 14): project policies, event expiry, consent, deletion, identity.
_V4: Final = (policy_schema.POSTGRES_DDL
       + identity_schema.POSTGRES_DDL
       + consent_schema.POSTGRES_DDL
       + deletion_schema.POSTGRES_DDL)

MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (_V1, _V2, _V3, _V4)
SCHEMA_VERSION: Final = len(MIGRATIONS)

_CREATE_MIGRATIONS_TABLE: Final = (
    "CREATE TABLE IF NOT EXISTS schema_migrations"
    " (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
)


async def migrate(conn: Connection) -> None:
    """Bring the database up to SCHEMA_VERSION, one transaction per step, one node at a time."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(_CREATE_MIGRATIONS_TABLE)
        applied = {row[0] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        newest = max(applied, default=0)
        if newest > SCHEMA_VERSION:
            raise RuntimeError(
                f"database schema version {newest!r} is newer than this server's {SCHEMA_VERSION!r}"
            )
        for version, statements in enumerate(MIGRATIONS, start=1):
            if version in applied:
                continue
            async with transaction(conn):
                for statement in statements:
                    await conn.execute(statement)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
    except BaseException:
        # The pool does not reset sessions on release (pg_bridge._keep_session): a connection that
        # may still hold the lock is closed, which releases it.
        conn.terminate()
        raise
    await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)


# Partitions ---------------------------------------------------------------------------------------
DAY_MS: Final = 86_400_000
PARTITION_MONTHS_BACK: Final = 36  # older months (backfills, broken clocks) share the default
PARTITION_MONTHS_AHEAD: Final = 1  # timestamps are clamped to receivedAt: never far ahead
PARTITION_LOCK_TIMEOUT: Final = "2s"
_EPOCH: Final = datetime.date(1970, 1, 1)


def month_of(ts_ms: int) -> int:
    """Months since 1970-01 of a unix-ms timestamp (UTC). Only for timestamps within the window."""
    day = _EPOCH + datetime.timedelta(days=ts_ms // DAY_MS)
    return (day.year - 1970) * 12 + day.month - 1


def month_start_ms(month: int) -> int:
    year, index = divmod(month, 12)
    start = datetime.date(1970 + year, index + 1, 1)
    return (start - _EPOCH).days * DAY_MS


def partition_name(month: int) -> str:
    year, index = divmod(month, 12)
    return f"events_{1970 + year:04d}_{index + 1:02d}"


def partition_window(now_ms: int) -> tuple[int, int]:
    """The months that get partitions of their own: [first, last]."""
    current = month_of(now_ms)
    return current - PARTITION_MONTHS_BACK, current + PARTITION_MONTHS_AHEAD


async def create_partition(conn: Connection, month: int) -> str:
    """Create the partition of ``month`` unless it exists: 'created', 'exists', 'default' (its rows
    stay in the default partition for good) or 'busy' (try again later)."""
    async with transaction(conn):
        await conn.execute(f"SET LOCAL lock_timeout = '{PARTITION_LOCK_TIMEOUT}'")
        status: str = await conn.fetchval(
            "SELECT pulse_create_event_partition($1, $2, $3)",
            partition_name(month),
            month_start_ms(month),
            month_start_ms(month + 1),
        )
    return status


# The writer's statements ----------------------------------------------------------------------------
# ``n`` fresh seqs, ascending. nextval() on a CACHE 1 sequence is ~0.3 us; several nodes interleave
# freely and every seq is unique cluster-wide.
RESERVE_SEQS: Final = (
    f"SELECT array_agg(s ORDER BY s) FROM (SELECT nextval('{SEQUENCE}') AS s"
    " FROM generate_series(1, $1)) AS reserved"
)
SELECT_CLIENT_IDS: Final = (
    "SELECT c.project, c.client_id, c.id, c.seq FROM unnest($1::text[], $2::text[]) AS w (project, client_id)"
    " JOIN client_ids AS c ON c.project = w.project AND c.client_id = w.client_id"
)
# Answers the client ids NOT claimed now (stored before, by any node): none in the common case,
# so no rows to decode. Claims are made in key order (byte order: "C"), so concurrent writers lock
# shared keys in the same order; a key another transaction holds uncommitted waits for it.
CLAIM_CLIENT_IDS: Final = (
    "WITH wanted AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])"
    " AS w (project, client_id, id, seq)),"
    " claimed AS (INSERT INTO client_ids (project, client_id, id, seq)"
    ' SELECT * FROM wanted ORDER BY project COLLATE "C", client_id COLLATE "C"'
    " ON CONFLICT DO NOTHING RETURNING project, client_id)"
    " SELECT w.project, w.client_id FROM wanted AS w"
    " WHERE NOT EXISTS (SELECT 1 FROM claimed AS c WHERE c.project = w.project AND c.client_id = w.client_id)"
)
EVENT_COPY_COLUMNS: Final = (
    "seq", "id", "project", "name", "source", "timestamp", "received_at", "payload", "user_id",
    "session_id", "service_name", "correlation_id", "device_type", "status_code", "response_time_ms",
    "client_id", "flags", "expires_at",
)  # fmt: skip

# Commutative upserts: adding a bucket twice, from any node in any order, gives the same row. Rows
# arrive sorted by key, so concurrent writers lock shared buckets in the same order (no deadlock).
_AGG_VALUES: Final = "service, name, count, with_status, errors, with_rt, rt_sum, last_seen"
_AGG_ARRAYS: Final = "$3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::float8[], $10::bigint[]"
_AGG_UPDATE: Final = (
    " DO UPDATE SET count = t.count + EXCLUDED.count, with_status = t.with_status + EXCLUDED.with_status,"
    " errors = t.errors + EXCLUDED.errors, with_rt = t.with_rt + EXCLUDED.with_rt,"
    " rt_sum = t.rt_sum + EXCLUDED.rt_sum, last_seen = greatest(t.last_seen, EXCLUDED.last_seen)"
)
UPSERT_AGG_MINUTE: Final = (
    f"INSERT INTO agg_minute AS t (project, minute, {_AGG_VALUES})"
    f" SELECT * FROM unnest($1::text[], $2::bigint[], {_AGG_ARRAYS})"
    " ON CONFLICT (project, minute, service, name)" + _AGG_UPDATE
)
UPSERT_AGG_DAY: Final = (
    f"INSERT INTO agg_day AS t (project, day, {_AGG_VALUES})"
    f" SELECT * FROM unnest($1::text[], $2::bigint[], {_AGG_ARRAYS})"
    " ON CONFLICT (project, day, service, name)" + _AGG_UPDATE
)
UPSERT_AGG_TOTAL: Final = (
    f"INSERT INTO agg_total AS t (project, {_AGG_VALUES})"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[],"
    " $7::bigint[], $8::float8[], $9::bigint[])"
    " ON CONFLICT (project, service, name)" + _AGG_UPDATE
)
# A snapshot replaces the stored one only if it is at least as recent: during an ownership move
# the old owner's last save may land after the new owner's.
UPSERT_SNAPSHOTS: Final = (
    "INSERT INTO snapshots AS s (project, kind, key, state, upto_seq)"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bigint[])"
    " ON CONFLICT (project, kind, key) DO UPDATE SET state = EXCLUDED.state, upto_seq = EXCLUDED.upto_seq"
    " WHERE s.upto_seq <= EXCLUDED.upto_seq"
)

# Projects -----------------------------------------------------------------------------------------
PROJECT_COLUMNS: Final = "id, name, public_key, secret_key, created_at"
INSERT_PROJECT: Final = (
    f"INSERT INTO projects ({PROJECT_COLUMNS}) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING id"
)
SELECT_PROJECTS: Final = f"SELECT {PROJECT_COLUMNS} FROM projects ORDER BY created_at, name"
SELECT_PROJECT_BY_NAME: Final = f"SELECT {PROJECT_COLUMNS} FROM projects WHERE name = $1"
SELECT_PROJECT_BY_KEY: Final = (
    f"SELECT {PROJECT_COLUMNS} FROM projects WHERE public_key = $1 OR secret_key = $1"
)
SELECT_SNAPSHOT: Final = (
    "SELECT state, upto_seq FROM snapshots WHERE project = $1 AND kind = $2 AND key = $3"
)
# ICU's root locale folds case as Python's str.lower() does, whatever the database's own locale.
SELECT_HAS_ICU: Final = "SELECT EXISTS (SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu')"
