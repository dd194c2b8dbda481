"""The PostgreSQL backend's deletion and retention (storage/deletion_records.py has what they remove).

A user's deletion, like the retention job, works in chunks of CHUNK events, each chunk ONE
transaction (its events, their client ids and their aggregates together, so the statistics always
match the events present), then one last transaction for the snapshots and automation rows. Not one
transaction for the whole user: it would hold the row locks of every aggregate bucket the user
touched (a project's busiest buckets: agg_total has one row per service and name) until it commits,
and every append of the project that adds to those buckets would wait that long. Measured with 100k
events in one transaction: appends behind it failed their 4 s commit deadline. Buckets are locked in
key order, like the group commit's upserts, so a chunk and an append never wait for each other in a
cycle.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

from storage import deletion_records as d
from storage.deletion_records import CHUNK, DeletionRecord, Gone, Removed
from storage.pg_bridge import transaction
from storage.trigger_records import numbered

Connection = Any  # asyncpg.Connection
_T = TypeVar("_T")

CHUNK_TIMEOUT_S: Final = 60.0  # one chunk's crossing (milliseconds normally; a big margin)
RETENTION_CHUNK_TIMEOUT_S: Final = 60.0
MAX_PASSES: Final = 5  # over the user's events: those of a user still sending (not suppressed) are chased this often

_GONE: Final = "timestamp, coalesce(service_name, ''), name, status_code, response_time_ms, client_id"
SELECT_USER_SESSIONS: Final = (
    "SELECT DISTINCT session_id FROM events WHERE project = $1 AND user_id = $2 AND session_id IS NOT NULL"
)
ANY_USER_EVENT: Final = "SELECT 1 FROM events WHERE project = $1 AND user_id = $2 LIMIT 1"
_TARGETS: Final = "project = $1 AND (user_id = $2 OR (user_id IS NULL AND session_id = ANY($3::text[])))"
# Chunks are picked first (indexes: events_user / events_session, events_expiry, events_time), then
# deleted by seq = ANY (events_seq, per partition). ``seq IN (SELECT ...)`` in the DELETE itself
# made the planner hash-join the whole events table for every chunk: 100k events took 100 s.
SELECT_TARGET_SEQS: Final = f"SELECT seq FROM events WHERE {_TARGETS}"
SELECT_FOR_PSEUDONYM: Final = "SELECT seq, session_id, payload FROM events WHERE seq = ANY($1::bigint[])"
DELETE_SEQS: Final = f"DELETE FROM events WHERE seq = ANY($1::bigint[]) RETURNING project, {_GONE}"
PSEUDONYMIZE_EVENTS: Final = (
    "UPDATE events AS e SET user_id = NULL, session_id = u.sid, payload = u.payload"
    " FROM unnest($2::bigint[], $3::text[], $4::bytea[]) AS u (seq, sid, payload)"
    " WHERE e.project = $1 AND e.seq = u.seq"
)
DELETE_CLIENT_IDS: Final = "DELETE FROM client_ids WHERE project = $1 AND client_id = ANY($2::text[])"
SELECT_EXPIRED_SEQS: Final = "SELECT seq FROM events WHERE expires_at <= $1 LIMIT $2"
SELECT_OLDER_SEQS: Final = "SELECT seq FROM events WHERE project = $1 AND timestamp < $2 LIMIT $3"
NEWEST_IN_BUCKET: Final = (
    "SELECT max(timestamp) FROM events WHERE project = $1 AND name = $2 AND timestamp BETWEEN $3 AND $4"
    " AND coalesce(service_name, '') = $5"
)
_BUCKET: Final = {"agg_minute": "minute", "agg_day": "day", "agg_total": None}


def _match(table: str) -> str:
    bucket = _BUCKET[table]
    return ("" if bucket is None else f"a.{bucket} = k.b AND ") + "a.service = k.s AND a.name = k.n"


def _order(table: str) -> str:
    bucket = _BUCKET[table]
    return ("" if bucket is None else f"a.{bucket}, ") + "a.service, a.name"


# Set-based, one statement each, after the rows are locked in key order (ORDER BY ... FOR UPDATE
# locks them as it returns them): the group commit upserts its buckets in the same order.
LOCK_AGG: Final = {
    t: f"SELECT 1 FROM {t} AS a JOIN unnest($2::bigint[], $3::text[], $4::text[]) AS k (b, s, n)"
       f" ON a.project = $1 AND {_match(t)} ORDER BY {_order(t)} FOR UPDATE OF a"
    for t in d.TABLES
}
SUB_AGG_SET: Final = {
    t: f"UPDATE {t} AS a SET count = a.count - k.c, with_status = a.with_status - k.ws, errors = a.errors - k.e,"
       " with_rt = a.with_rt - k.wr, rt_sum = a.rt_sum - k.r FROM unnest($2::bigint[], $3::text[], $4::text[],"
       " $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::float8[]) AS k (b, s, n, c, ws, e, wr, r)"
       f" WHERE a.project = $1 AND {_match(t)}"
    for t in d.TABLES
}
DROP_EMPTY_SET: Final = {
    t: f"DELETE FROM {t} AS a USING unnest($2::bigint[], $3::text[], $4::text[]) AS k (b, s, n)"
       f" WHERE a.project = $1 AND {_match(t)} AND a.count <= 0"
    for t in d.TABLES
}
LAST_SEEN_OF: Final = {
    "agg_minute": "SELECT a.minute, a.service, a.name, a.last_seen FROM agg_minute AS a"
    " JOIN unnest($2::bigint[], $3::text[], $4::text[]) AS k (b, s, n)"
    " ON a.project = $1 AND a.minute = k.b AND a.service = k.s AND a.name = k.n",
    "agg_day": "SELECT a.day, a.service, a.name, a.last_seen FROM agg_day AS a"
    " JOIN unnest($2::bigint[], $3::text[], $4::text[]) AS k (b, s, n)"
    " ON a.project = $1 AND a.day = k.b AND a.service = k.s AND a.name = k.n",
    "agg_total": "SELECT 0::bigint, a.service, a.name, a.last_seen FROM agg_total AS a"
    " JOIN unnest($2::bigint[], $3::text[], $4::text[]) AS k (b, s, n)"
    " ON a.project = $1 AND a.service = k.s AND a.name = k.n",
}
SET_LAST_SEEN: Final = {table: numbered(s) for table, s in d.SET_LAST_SEEN.items()}
DELETE_SNAPSHOT: Final = numbered(d.DELETE_SNAPSHOT)
SELECT_USER_SNAPSHOT: Final = numbered(d.SELECT_USER_SNAPSHOT)
DELETE_SESSION_SNAPSHOTS: Final = (
    "DELETE FROM snapshots WHERE project = $1 AND kind = 'session' AND key = ANY($2::text[])"
)
SESSIONS_WITH_EVENTS: Final = (
    "SELECT DISTINCT session_id FROM events WHERE project = $1 AND session_id = ANY($2::text[])"
)
DELETE_SESSIONS_ROWS: Final = tuple(
    f"DELETE FROM {t} WHERE project = $1 AND session_id = ANY($2::text[])"
    for t in ("trigger_executions", "workflow_actions", "trigger_sessions")
)
DELETE_SCHEDULED_SESSIONS_ACTIONS: Final = (
    "DELETE FROM workflow_actions WHERE project = $1 AND session_id = ANY($2::text[]) AND status = 'scheduled'"
)
PSEUDONYMIZE_SESSIONS: Final = tuple(
    f"UPDATE {t} AS t SET session_id = u.h FROM unnest($2::text[], $3::text[]) AS u (s, h)"
    " WHERE t.project = $1 AND t.session_id = u.s"
    for t in ("trigger_executions", "workflow_actions", "trigger_sessions")
)
SELECT_DELIVERIES: Final = "SELECT id, body FROM webhook_deliveries WHERE project = $1"
DELETE_DELIVERIES: Final = "DELETE FROM webhook_deliveries WHERE id = ANY($1::text[])"


async def subtract(conn: Connection, project: str, gone: list[Gone]) -> None:
    """Take deleted events out of the aggregates (inside the caller's transaction), in key order."""
    sub = d.subtraction(project, gone)
    for table, buckets in zip(d.TABLES, sub, strict=True):
        if not buckets:
            continue
        keys = sorted(buckets)
        where = (project, [k[1] for k in keys], [k[2] for k in keys], [k[3] for k in keys])
        await conn.execute(LOCK_AGG[table], *where)
        columns = [[buckets[k][i] for k in keys] for i in range(5)]
        await conn.execute(SUB_AGG_SET[table], *where, *columns)
        await conn.execute(DROP_EMPTY_SET[table], *where)
        stored = await conn.fetch(LAST_SEEN_OF[table], *where)
        for bucket, service, name, last_seen in stored:
            key = (project, int(bucket), service, name)
            if buckets[key][5] >= last_seen:  # the bucket's newest event may be gone: look again
                lo, hi = d.bucket_range(table, key)
                newest = await conn.fetchval(NEWEST_IN_BUCKET, project, name, lo, hi, service)
                if newest is not None:
                    await conn.execute(SET_LAST_SEEN[table], newest, *d.key_params(table, key))


def _gone(rows: list[Any], offset: int = 0) -> list[Gone]:
    o = offset
    return [Gone(r[o], r[o + 1], r[o + 2], r[o + 3], r[o + 4]) for r in rows]


async def user_facts(conn: Connection, project: str, user_id: str) -> tuple[list[str], bool]:
    """The user's sessions, and whether they have a profile (any event or a user snapshot)."""
    sessions = [r[0] for r in await conn.fetch(SELECT_USER_SESSIONS, project, user_id)]
    had_profile = (
        await conn.fetchval(ANY_USER_EVENT, project, user_id) is not None
        or await conn.fetchval(SELECT_USER_SNAPSHOT, project, user_id) is not None
    )
    return sorted(sessions), had_profile


async def target_seqs(conn: Connection, project: str, user_id: str, targets: list[str]) -> list[int]:
    """Every event of the user (and of the targeted sessions' anonymous events), in seq order: one
    index pass. Picking each chunk with a LIMIT instead re-read the user's whole hash-index bucket
    per chunk (100k events: 24 s instead of a few)."""
    return sorted(r[0] for r in await conn.fetch(SELECT_TARGET_SEQS, project, user_id, targets))


async def delete_chunk(conn: Connection, seqs: list[int]) -> int:
    """These events with their client ids and aggregates, in one transaction: how many it deleted."""
    async with transaction(conn):
        return sum((await _delete_seqs(conn, seqs)).values())


async def _delete_seqs(conn: Connection, seqs: list[int]) -> dict[str, int]:
    """Delete these events with their client ids and their aggregates (inside the caller's
    transaction); how many each project lost (rows another transaction deleted first don't count)."""
    if not seqs:
        return {}
    rows = await conn.fetch(DELETE_SEQS, seqs)
    by_project: dict[str, list[Any]] = defaultdict(list)
    for r in rows:
        by_project[r[0]].append(r)
    for project, gone in sorted(by_project.items()):
        client_ids = [r[6] for r in gone if r[6] is not None]
        if client_ids:
            await conn.execute(DELETE_CLIENT_IDS, project, client_ids)
        await subtract(conn, project, _gone(gone, 1))
    return {project: len(gone) for project, gone in by_project.items()}


async def pseudonymize_chunk(conn: Connection, project: str, seqs: list[int], salt: str) -> int:
    """These events renamed and stripped of identity, in one transaction: how many."""
    async with transaction(conn):
        rows = await conn.fetch(SELECT_FOR_PSEUDONYM, seqs)
        if rows:
            await conn.execute(
                PSEUDONYMIZE_EVENTS, project, [r[0] for r in rows],
                [None if r[1] is None else d.hashed_id(salt, r[1]) for r in rows],
                [d.strip_identity(r[2]) for r in rows],
            )  # fmt: skip
        return len(rows)


async def finish_user(conn: Connection, project: str, user_id: str, sessions: list[str], targets: list[str],
                      anonymize: bool, salt: str) -> int:  # fmt: skip
    """Snapshots, automation rows and deliveries in one transaction; the sessions removed whole
    (anonymize: pseudonymized). Set-based: one statement per table, whatever the sessions."""
    async with transaction(conn):
        await conn.execute(DELETE_SNAPSHOT, project, "user", user_id)
        await conn.execute(DELETE_SESSION_SNAPSHOTS, project, sessions)
        await _automation_rows(conn, project, user_id, targets, anonymize, salt)
        named = set(targets)
        doomed = [i for i, body in await conn.fetch(SELECT_DELIVERIES, project) if d.delivery_names(body, user_id, named)]
        if doomed:
            await conn.execute(DELETE_DELIVERIES, doomed)
        if anonymize:
            return len(sessions)
        return len(sessions) - len(await conn.fetch(SESSIONS_WITH_EVENTS, project, sessions))


async def _automation_rows(conn: Connection, project: str, user_id: str, sessions: list[str], anonymize: bool,
                           salt: str) -> None:  # fmt: skip
    if anonymize:
        await conn.execute(numbered(d.DELETE_SCHEDULED_USER_ACTIONS), project, user_id)
        await conn.execute(numbered(d.PSEUDONYMIZE_USER_EXECUTIONS), project, user_id)
        await conn.execute(numbered(d.PSEUDONYMIZE_USER_ACTIONS), project, user_id)
        await conn.execute(DELETE_SCHEDULED_SESSIONS_ACTIONS, project, sessions)
        pseudonyms = [d.hashed_id(salt, s) for s in sessions]
        for statement in PSEUDONYMIZE_SESSIONS:
            await conn.execute(statement, project, sessions, pseudonyms)
        return
    await conn.execute(numbered(d.DELETE_USER_EXECUTIONS), project, user_id)
    await conn.execute(numbered(d.DELETE_USER_ACTIONS), project, user_id)
    for statement in DELETE_SESSIONS_ROWS:
        await conn.execute(statement, project, sessions)


async def _retention_chunk(conn: Connection, statement: str, params: tuple[Any, ...]) -> tuple[int, dict[str, int]]:
    """One retention chunk in its own transaction: the events, their client ids, their aggregates
    (events picked, events this transaction deleted per project)."""
    async with transaction(conn):
        seqs = [r[0] for r in await conn.fetch(statement, *params)]
        return len(seqs), await _delete_seqs(conn, seqs)


async def _fetch_user_sessions(conn: Connection, project: str, user_id: str) -> list[str]:
    return [r[0] for r in await conn.fetch(SELECT_USER_SESSIONS, project, user_id)]


async def _fetch_deletion(conn: Connection, project: str, deletion_id: str) -> Any:
    return await conn.fetchrow(numbered(d.SELECT_DELETION), project, deletion_id)


async def _fetch_user_deletions(conn: Connection, project: str, user_id: str, limit: int) -> list[Any]:
    return list(await conn.fetch(numbered(d.SELECT_USER_DELETIONS), project, user_id, limit))


class PostgresDeletionMethods:
    """PostgresStore's deletion and retention methods."""

    if TYPE_CHECKING:
        def _require_running(self) -> None: ...
        async def _read(self, work: Callable[[Connection], Awaitable[_T]], *, time_limit_s: float = ...,
                        snapshot: bool = False) -> _T: ...

    async def delete_user_data(
        self, project: str, user_id: str, *, anonymize_only: bool, cascade: bool = True, salt: str = "",
        linked_sessions: tuple[str, ...] = (),
    ) -> Removed:
        if anonymize_only and not salt:
            raise ValueError("anonymize_only needs the project's salt")
        self._require_running()
        sessions, had_profile = await self._read(functools.partial(user_facts, project=project, user_id=user_id))
        if cascade and linked_sessions:
            sessions = sorted(set(sessions).union(linked_sessions))
        targets = sessions if cascade else []
        events = 0
        for _ in range(MAX_PASSES):  # a second pass finds nothing, unless an event slipped in meanwhile
            seqs = await self._read(functools.partial(target_seqs, project=project, user_id=user_id, targets=targets))
            if not seqs:
                break
            for first in range(0, len(seqs), CHUNK):
                chunk = seqs[first : first + CHUNK]
                if anonymize_only:
                    work = functools.partial(pseudonymize_chunk, project=project, seqs=chunk, salt=salt)
                else:
                    work = functools.partial(delete_chunk, seqs=chunk)
                events += await self._read(work, time_limit_s=CHUNK_TIMEOUT_S)
        finish = functools.partial(finish_user, project=project, user_id=user_id, sessions=sessions, targets=targets,
                                   anonymize=anonymize_only, salt=salt)  # fmt: skip
        removed_sessions = await self._read(finish, time_limit_s=CHUNK_TIMEOUT_S)
        return Removed(events, removed_sessions, int(had_profile or events > 0))

    async def user_sessions(self, project: str, user_id: str) -> list[str]:
        rows = await self._read(functools.partial(_fetch_user_sessions, project=project, user_id=user_id))
        return sorted(rows)

    async def delete_expired(self, now_ms: int, project_retention: dict[str, int]) -> dict[str, int]:
        self._require_running()
        total: dict[str, int] = defaultdict(int)
        chunks: list[tuple[str, tuple[Any, ...]]] = [(SELECT_EXPIRED_SEQS, (now_ms, CHUNK))]
        chunks += [(SELECT_OLDER_SEQS, (p, now_ms - days * 86_400_000, CHUNK)) for p, days in project_retention.items()]
        for statement, params in chunks:
            while True:
                work = functools.partial(_retention_chunk, statement=statement, params=params)
                picked, removed = await self._read(work, time_limit_s=RETENTION_CHUNK_TIMEOUT_S)
                for project, n in removed.items():
                    total[project] += n
                if picked < CHUNK:
                    break
        return dict(total)

    async def begin_deletion(self, record: DeletionRecord) -> None:
        self._require_running()
        params = (record.deletion_id, record.project, record.user_id, record.status,
                  d.options_json(record.options), record.requested_ms)  # fmt: skip
        await self._read(lambda conn: conn.execute(numbered(d.INSERT_DELETION), *params))

    async def finish_deletion(
        self, project: str, deletion_id: str, status: str, removed: Removed, completed_ms: int, error: str | None
    ) -> None:
        params = (status, removed.events, removed.sessions, removed.profiles, completed_ms, error, deletion_id, project)
        await self._read(lambda conn: conn.execute(numbered(d.FINISH_DELETION), *params))

    async def deletion(self, project: str, deletion_id: str) -> DeletionRecord | None:
        row = await self._read(functools.partial(_fetch_deletion, project=project, deletion_id=deletion_id))
        return None if row is None else d.deletion_from_row(row)

    async def user_deletions(self, project: str, user_id: str, *, limit: int = 20) -> list[DeletionRecord]:
        rows = await self._read(functools.partial(_fetch_user_deletions, project=project, user_id=user_id, limit=limit))
        return [d.deletion_from_row(r) for r in rows]
