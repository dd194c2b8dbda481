"""The SQLite backend's deletion and retention (storage/deletion_records.py has what they remove).

Every write runs on the store's one writer thread, in queue order with the appends. A large
deletion is cut into turns of at most CHUNK events, each its own short transaction, so appends
queued meanwhile commit between two turns instead of waiting for the whole deletion: a user with
100k events costs ~50 turns, never one long stall. Each turn deletes its events and subtracts them
from the aggregates in the same transaction, so the statistics always match the events present,
and the counts are the sums of what each turn did.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

from storage import deletion_records as d
from storage.deletion_records import DeletionRecord, Gone, Removed
from storage.sqlite_transaction import transaction

_T = TypeVar("_T")
# Events per writer turn. Each turn is a transaction that appends queued behind it wait for:
# measured ~15 ms per 500 events deleted (8 index entries each, plus the aggregate buckets and one
# fsync), so ingestion waits at most a few tens of ms while a 100k-event user is erased.
CHUNK: Final = 500
Num = Callable[[sqlite3.Connection, str], int]

_GONE_COLUMNS: Final = "seq, timestamp, coalesce(service_name, ''), name, status_code, response_time_ms"
SELECT_USER_SESSIONS: Final = (
    "SELECT DISTINCT session_id FROM events INDEXED BY events_user_seq"
    " WHERE project_num = ? AND user_id = ? AND session_id IS NOT NULL"
)
SELECT_ANY_USER_EVENT: Final = (
    "SELECT 1 FROM events INDEXED BY events_user_seq WHERE project_num = ? AND user_id = ? LIMIT 1"
)
SELECT_USER_CHUNK: Final = (
    f"SELECT {_GONE_COLUMNS}, session_id, payload FROM events INDEXED BY events_user_seq"
    " WHERE project_num = ? AND user_id = ? LIMIT ?"
)
SELECT_SESSION_CHUNK: Final = (
    f"SELECT {_GONE_COLUMNS}, session_id, payload FROM events INDEXED BY events_session"
    " WHERE project_num = ? AND session_id = ? AND user_id IS NULL LIMIT ?"
)
SELECT_ANY_SESSION_EVENT: Final = (
    "SELECT 1 FROM events INDEXED BY events_session WHERE project_num = ? AND session_id = ? LIMIT 1"
)
SELECT_EXPIRED: Final = (
    "SELECT e.seq, e.timestamp, coalesce(e.service_name, ''), e.name, e.status_code, e.response_time_ms, p.id"
    " FROM events AS e INDEXED BY events_expiry JOIN project_nums AS p ON p.num = e.project_num"
    " WHERE e.expires_at <= ? LIMIT ?"
)
SELECT_OLDER: Final = (
    f"SELECT {_GONE_COLUMNS} FROM events INDEXED BY events_time WHERE project_num = ? AND timestamp < ? LIMIT ?"
)
DELETE_EVENT: Final = "DELETE FROM events WHERE seq = ?"
PSEUDONYMIZE_EVENT: Final = "UPDATE events SET user_id = NULL, session_id = ?, payload = ? WHERE seq = ?"
# The newest remaining event of a bucket (events_name: project, name, timestamp; walked backwards)
NEWEST_IN_BUCKET: Final = (
    "SELECT timestamp FROM events INDEXED BY events_name WHERE project_num = ? AND name = ?"
    " AND timestamp BETWEEN ? AND ? AND coalesce(service_name, '') = ? ORDER BY timestamp DESC LIMIT 1"
)
SELECT_FLOOR: Final = "SELECT seq FROM seq_floor WHERE id = 1"
RAISE_FLOOR: Final = (
    "INSERT INTO seq_floor (id, seq) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET seq = max(seq, excluded.seq)"
)
SELECT_DELIVERIES: Final = "SELECT id, body FROM webhook_deliveries WHERE project = ?"
DELETE_DELIVERY: Final = "DELETE FROM webhook_deliveries WHERE id = ?"


def seq_floor(conn: sqlite3.Connection) -> int:
    """The highest seq handed out before a deletion (0: none); the store numbers events above it."""
    row = conn.execute(SELECT_FLOOR).fetchone()
    return 0 if row is None else int(row[0])


def subtract(conn: sqlite3.Connection, num: int, project: str, gone: list[Gone] | list[Any]) -> None:
    """Take deleted events out of the aggregates (inside the caller's transaction)."""
    for table, key, b in d.ordered(d.subtraction(project, gone)):
        where = d.key_params(table, key)
        conn.execute(d.SUB_AGG[table], (b[0], b[1], b[2], b[3], b[4], *where))
        conn.execute(d.DROP_EMPTY_AGG[table], where)
        row = conn.execute(d.SELECT_LAST_SEEN[table], where).fetchone()
        if row is not None and b[5] >= row[0]:  # the bucket's newest event may be gone: look again
            lo, hi = d.bucket_range(table, key)
            newest = conn.execute(NEWEST_IN_BUCKET, (num, key[3], lo, hi, key[2])).fetchone()
            if newest is not None:
                conn.execute(d.SET_LAST_SEEN[table], (newest[0], *where))


def _delete_rows(conn: sqlite3.Connection, num: int, project: str, rows: list[Any]) -> None:
    conn.executemany(DELETE_EVENT, [(r[0],) for r in rows])
    subtract(conn, num, project, [r[1:6] for r in rows])


class _UserJob:
    """One user's deletion, turn by turn on the writer thread."""

    def __init__(self, project: str, user_id: str, anonymize: bool, cascade: bool, salt: str) -> None:
        self.project, self.user_id = project, user_id
        self.anonymize, self.cascade, self.salt = anonymize, cascade, salt
        self.num = 0
        self.sessions: list[str] = []
        self.had_profile = False
        self.events = 0

    def begin(self, conn: sqlite3.Connection, num_of: Num, next_seq: int, sessions: list[str]) -> None:
        """``sessions``: the user's, read beforehand on a reader connection (a scan of every event of
        the user, kept off the writer); a session the user enters later is suppressed upstream."""
        self.num = num_of(conn, self.project)
        self.sessions = sessions
        self.had_profile = (
            conn.execute(SELECT_ANY_USER_EVENT, (self.num, self.user_id)).fetchone() is not None
            or conn.execute(d.SELECT_USER_SNAPSHOT, (self.project, self.user_id)).fetchone() is not None
        )
        if not self.anonymize:
            conn.execute(RAISE_FLOOR, (next_seq - 1,))

    def turn(self, conn: sqlite3.Connection) -> int:
        """Delete (or pseudonymize) up to CHUNK events; how many it did (0: finished)."""

        def work() -> int:
            rows = conn.execute(SELECT_USER_CHUNK, (self.num, self.user_id, CHUNK)).fetchall()
            if self.cascade:
                for session in self.sessions:
                    if len(rows) >= CHUNK:
                        break
                    rows += conn.execute(SELECT_SESSION_CHUNK, (self.num, session, CHUNK - len(rows))).fetchall()
            if self.anonymize:
                conn.executemany(PSEUDONYMIZE_EVENT, [
                    (None if r[6] is None else d.hashed_id(self.salt, r[6]), d.strip_identity(r[7]), r[0])
                    for r in rows
                ])  # fmt: skip
            else:
                _delete_rows(conn, self.num, self.project, rows)
            return len(rows)

        done = transaction(conn, work)
        self.events += done
        return done

    def finish(self, conn: sqlite3.Connection) -> Removed:
        """The snapshots, automation rows and deliveries, and the counts."""

        def work() -> Removed:
            p, u = self.project, self.user_id
            conn.execute(d.DELETE_SNAPSHOT, (p, "user", u))
            conn.executemany(d.DELETE_SNAPSHOT, [(p, "session", s) for s in self.sessions])
            if self.anonymize:
                conn.execute(d.DELETE_SCHEDULED_USER_ACTIONS, (p, u))
                conn.execute(d.PSEUDONYMIZE_USER_EXECUTIONS, (p, u))
                conn.execute(d.PSEUDONYMIZE_USER_ACTIONS, (p, u))
                if self.cascade:
                    for s in self.sessions:
                        conn.execute(d.DELETE_SCHEDULED_SESSION_ACTIONS, (p, s))
                        for statement in d.PSEUDONYMIZE_SESSION:
                            conn.execute(statement, (d.hashed_id(self.salt, s), p, s))
            else:
                conn.execute(d.DELETE_USER_EXECUTIONS, (p, u))
                conn.execute(d.DELETE_USER_ACTIONS, (p, u))
                if self.cascade:
                    for s in self.sessions:
                        for statement in (d.DELETE_SESSION_EXECUTIONS, d.DELETE_SESSION_ACTIONS, d.DELETE_SESSION_MARKS):
                            conn.execute(statement, (p, s))
            named = set(self.sessions) if self.cascade else set()
            doomed = [(i,) for i, body in conn.execute(SELECT_DELIVERIES, (p,)) if d.delivery_names(body, u, named)]
            conn.executemany(DELETE_DELIVERY, doomed)
            if self.anonymize:  # every session that carried the user now goes by its pseudonym
                sessions = len(self.sessions)
            else:
                sessions = sum(
                    conn.execute(SELECT_ANY_SESSION_EVENT, (self.num, s)).fetchone() is None for s in self.sessions
                )
            return Removed(self.events, sessions, int(self.had_profile or self.events > 0))

        return transaction(conn, work)


def _expired_turn(conn: sqlite3.Connection, num_of: Num, now_ms: int, retention: dict[str, int],
                  next_seq: int) -> dict[str, int]:  # fmt: skip
    """One turn of the retention job: up to CHUNK expired events, then up to CHUNK too-old events
    per project; the counts per project (empty: nothing left to remove)."""

    def work() -> dict[str, int]:
        removed: dict[str, int] = defaultdict(int)
        by_project: dict[str, list[Any]] = defaultdict(list)
        for row in conn.execute(SELECT_EXPIRED, (now_ms, CHUNK)).fetchall():
            by_project[row[6]].append(row)
        for project, days in retention.items():
            num = num_of(conn, project)
            if num:
                by_project[project] += conn.execute(SELECT_OLDER, (num, now_ms - days * 86_400_000, CHUNK)).fetchall()
        for project, rows in by_project.items():
            unique = list({r[0]: r for r in rows}.values())  # expired and too old: once
            if unique:
                _delete_rows(conn, num_of(conn, project), project, unique)
                removed[project] += len(unique)
        if removed:
            conn.execute(RAISE_FLOOR, (next_seq - 1,))
        return dict(removed)

    return transaction(conn, work)


class SqliteDeletionMethods:
    """SqliteStore's deletion and retention methods."""

    if TYPE_CHECKING:
        _next_seq: int

        async def _write_with(self, fn: Callable[..., _T], *args: Any) -> _T: ...
        async def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T: ...
        def _num(self, conn: sqlite3.Connection, project: str) -> int: ...

    async def delete_user_data(
        self, project: str, user_id: str, *, anonymize_only: bool, cascade: bool = True, salt: str = "",
        linked_sessions: tuple[str, ...] = (),
    ) -> Removed:
        if anonymize_only and not salt:
            raise ValueError("anonymize_only needs the project's salt")
        job = _UserJob(project, user_id, anonymize_only, cascade, salt)
        sessions = await self.user_sessions(project, user_id)
        if cascade and linked_sessions:
            sessions = sorted(set(sessions).union(linked_sessions))
        await self._write_with(lambda conn: job.begin(conn, self._num, self._next_seq, sessions))
        while await self._write_with(job.turn) >= CHUNK:
            pass
        return await self._write_with(job.finish)

    async def user_sessions(self, project: str, user_id: str) -> list[str]:
        def read(conn: sqlite3.Connection) -> list[str]:
            return sorted(s for (s,) in conn.execute(SELECT_USER_SESSIONS, (self._num(conn, project), user_id)))

        return await self._read(read)

    async def delete_expired(self, now_ms: int, project_retention: dict[str, int]) -> dict[str, int]:
        total: dict[str, int] = defaultdict(int)
        while True:
            removed = await self._write_with(
                lambda conn: _expired_turn(conn, self._num, now_ms, project_retention, self._next_seq)
            )
            for project, n in removed.items():
                total[project] += n
            if sum(removed.values()) == 0:
                return dict(total)

    async def begin_deletion(self, record: DeletionRecord) -> None:
        params = (record.deletion_id, record.project, record.user_id, record.status,
                  d.options_json(record.options), record.requested_ms)  # fmt: skip
        await self._write_with(lambda conn: conn.execute(d.INSERT_DELETION, params))

    async def finish_deletion(
        self, project: str, deletion_id: str, status: str, removed: Removed, completed_ms: int, error: str | None
    ) -> None:
        params = (status, removed.events, removed.sessions, removed.profiles, completed_ms, error, deletion_id, project)
        await self._write_with(lambda conn: conn.execute(d.FINISH_DELETION, params))

    async def deletion(self, project: str, deletion_id: str) -> DeletionRecord | None:
        row = await self._read(lambda conn: conn.execute(d.SELECT_DELETION, (project, deletion_id)).fetchone())
        return None if row is None else d.deletion_from_row(row)

    async def user_deletions(self, project: str, user_id: str, *, limit: int = 20) -> list[DeletionRecord]:
        rows = await self._read(lambda conn: conn.execute(d.SELECT_USER_DELETIONS, (project, user_id, limit)).fetchall())
        return [d.deletion_from_row(r) for r in rows]
