"""Deleting a user's data and expired events (issue 14, parts 4 and 5): what both backends share.

The SQL is written with ``?`` placeholders (SQLite) and numbered for PostgreSQL by
``storage.trigger_records.numbered``; the backends are storage/sqlite_deletion.py and
storage/postgres_deletion.py, the tables storage/deletion_schema.py.

What a user's deletion covers (``delete_user_data``), in one project only:

- events: the user's own (``user_id = U``) and, with ``cascade``, the anonymous events
  (``user_id IS NULL``) of every session that carried U. Events of *another* identified user in one
  of those sessions (a shared computer) are that user's data and stay.
- aggregates: every deleted event is subtracted from agg_minute / agg_day / agg_total (count,
  with_status, errors, with_rt, rt_sum) of its own bucket, so the statistics afterwards are those of
  the remaining events; a bucket left empty is removed, and a bucket's ``last_seen`` that may have
  been a deleted event's is recomputed from the remaining events.
- client-id dedup rows of the deleted events (PostgreSQL's ``client_ids``; SQLite's are the events).
- snapshots of the user actor and of every session that carried U (live state is rebuilt from the
  events that remain).
- automation rows: trigger executions and workflow actions of U (and, with ``cascade``, of those
  sessions, with the sessions' trigger marks), and webhook deliveries whose body names U (or those
  sessions), whatever their status: a delivery's body is a copy of the user's data.

Counts (``Removed``): ``events`` exact; ``sessions``: the sessions that carried U and have no event
left afterwards (removed whole); ``profiles``: 1 if U had any event or a user snapshot, else 0.

``anonymize_only`` keeps the events and every aggregate and strips identity instead: ``user_id``
becomes NULL, ``session_id`` a salted hash (``hashed_id``: the same session keeps one pseudonym, so
session analytics still add up), the payload loses its identity fields (``strip_identity``), the
snapshots go, trigger rows keep their counts under the pseudonym, and pending deliveries and
scheduled workflow actions for the user are removed (they would reach the person). ``sessions``
then counts the sessions pseudonymized.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any, Final, NamedTuple, Protocol

import msgspec

# storage.aggregates' bucket sizes (not imported: it imports storage.base, which imports this module)
MINUTE_MS: Final = 60_000
MINUTES_PER_DAY: Final = 1_440
# Events per retention chunk and per pseudonymizing UPDATE (PostgreSQL): each its own statement.
CHUNK: Final = 2_000

PROCESSING: Final = "processing"
COMPLETED: Final = "completed"
FAILED: Final = "failed"


class Removed(msgspec.Struct, frozen=True):
    """What a deletion removed (or, with anonymize_only, pseudonymized); the seed's dataRemoved."""

    events: int = 0
    sessions: int = 0
    profiles: int = 0


class DeletionOptions(msgspec.Struct, frozen=True, rename="camel"):
    retention_override: bool = False
    anonymize_only: bool = False
    cascade_delete: bool = True


class DeletionRecord(msgspec.Struct, frozen=True):
    deletion_id: str
    project: str
    user_id: str
    status: str  # PROCESSING | COMPLETED | FAILED
    options: DeletionOptions
    removed: Removed
    requested_ms: int
    completed_ms: int | None
    error: str | None = None


# An event as the deletion sees it: enough to subtract it from its aggregate buckets.
class Gone(NamedTuple):
    timestamp: int
    service: str  # '' for events sent without a service (the aggregates' key)
    name: str
    status_code: int | None
    response_time_ms: float | None


# Aggregates -------------------------------------------------------------------------------------
AggKey = tuple[str, int, str, str]  # (project, bucket: minute, day or 0 for the total, service, name)
SUB_AGG: Final = {
    table: (
        f"UPDATE {table} SET count = count - ?, with_status = with_status - ?, errors = errors - ?,"
        f" with_rt = with_rt - ?, rt_sum = rt_sum - ? WHERE project = ?{where} AND service = ? AND name = ?"
    )
    for table, where in (("agg_minute", " AND minute = ?"), ("agg_day", " AND day = ?"), ("agg_total", ""))
}
DROP_EMPTY_AGG: Final = {
    table: f"DELETE FROM {table} WHERE project = ?{where} AND service = ? AND name = ? AND count <= 0"
    for table, where in (("agg_minute", " AND minute = ?"), ("agg_day", " AND day = ?"), ("agg_total", ""))
}
SELECT_LAST_SEEN: Final = {
    table: f"SELECT last_seen FROM {table} WHERE project = ?{where} AND service = ? AND name = ?"
    for table, where in (("agg_minute", " AND minute = ?"), ("agg_day", " AND day = ?"), ("agg_total", ""))
}
SET_LAST_SEEN: Final = {
    table: f"UPDATE {table} SET last_seen = ? WHERE project = ?{where} AND service = ? AND name = ?"
    for table, where in (("agg_minute", " AND minute = ?"), ("agg_day", " AND day = ?"), ("agg_total", ""))
}
TABLES: Final = ("agg_minute", "agg_day", "agg_total")


class Subtraction(NamedTuple):
    """Per table: key -> [count, with_status, errors, with_rt, rt_sum, newest deleted timestamp]."""

    minute: dict[AggKey, list[Any]]
    day: dict[AggKey, list[Any]]
    total: dict[AggKey, list[Any]]


def subtraction(project: str, gone: Iterable[Gone]) -> Subtraction:
    """The deleted events folded into the buckets they were added to (storage.aggregates.fold_minutes):
    per minute first, then the minutes rolled up into days and the total."""
    minutes: dict[AggKey, list[Any]] = {}
    for ts, service, name, status, rt in gone:
        key = (project, ts // MINUTE_MS, service, name)
        b = minutes.get(key)
        if b is None:
            b = minutes[key] = [0, 0, 0, 0, 0.0, ts]
        b[0] += 1
        if status is not None:
            b[1] += 1
            if status >= 400:
                b[2] += 1
        if rt is not None:
            b[3] += 1
            b[4] += rt
        if ts > b[5]:
            b[5] = ts
    days: dict[AggKey, list[Any]] = {}
    total: dict[AggKey, list[Any]] = {}
    for (p, minute, service, name), b in minutes.items():
        for table, key in ((days, (p, minute // MINUTES_PER_DAY, service, name)), (total, (p, 0, service, name))):
            into = table.get(key)
            if into is None:
                table[key] = list(b)
            else:
                for i in range(5):
                    into[i] += b[i]
                if b[5] > into[5]:
                    into[5] = b[5]
    return Subtraction(minutes, days, total)


def key_params(table: str, key: AggKey) -> tuple[object, ...]:
    """The WHERE parameters of ``key`` in ``table`` (agg_total has no bucket column)."""
    project, bucket, service, name = key
    return (project, service, name) if table == "agg_total" else (project, bucket, service, name)


def bucket_range(table: str, key: AggKey) -> tuple[int, int]:
    """The timestamps (inclusive) a bucket of ``table`` covers, to recompute its last_seen."""
    bucket = key[1]
    if table == "agg_minute":
        return bucket * MINUTE_MS, (bucket + 1) * MINUTE_MS - 1
    if table == "agg_day":
        day_ms = MINUTES_PER_DAY * MINUTE_MS
        return bucket * day_ms, (bucket + 1) * day_ms - 1
    return -(2**62), 2**62


def ordered(sub: Subtraction) -> list[tuple[str, AggKey, list[Any]]]:
    """Every (table, key, bucket), in key order within each table: concurrent writers upsert their
    buckets in key order too, so a deletion and an ingest never lock two buckets in opposite order."""
    return [(table, key, rows[key]) for table, rows in zip(TABLES, sub, strict=True) for key in sorted(rows)]


# Anonymization ----------------------------------------------------------------------------------
# Payload fields removed by anonymize_only, at any depth, compared case-insensitively and without
# '_' / '-': the identifiers Pulse itself reads (userId, sessionId, anonymousId, deviceId...), the
# network and device identity (ip, userAgent), and contact details. Besides these, every string
# value that looks like an e-mail address is removed with its field, whatever the field's name.
IDENTITY_FIELDS: Final = frozenset({
    "userid", "sessionid", "anonymousid", "anonymizedsessionid", "deviceid", "clientid", "visitorid",
    "distinctid", "ip", "ipaddress", "clientip", "remoteaddr", "xforwardedfor", "useragent", "ua",
    "email", "emailaddress", "phone", "phonenumber", "firstname", "lastname", "fullname", "username",
    "address", "postalcode", "zip",
})  # fmt: skip
_EMAIL: Final = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_decode_any = msgspec.json.Decoder().decode


def _identity_key(key: str) -> bool:
    folded = key.lower().replace("_", "").replace("-", "")
    return folded in IDENTITY_FIELDS or "email" in folded


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _strip(v) for k, v in value.items()
            if not _identity_key(k) and not (isinstance(v, str) and _EMAIL.fullmatch(v.strip()))
        }  # fmt: skip
    if isinstance(value, list):
        return [_strip(v) for v in value if not (isinstance(v, str) and _EMAIL.fullmatch(v.strip()))]
    return value


def strip_identity(payload: bytes) -> bytes:
    """The payload JSON without its identity fields (see IDENTITY_FIELDS); a payload that is not
    JSON (never stored by the ingest paths) becomes ``{}``: nothing unknown is kept."""
    try:
        return msgspec.json.encode(_strip(_decode_any(payload)))
    except (msgspec.DecodeError, TypeError):
        return b"{}"


def hashed_id(salt: str, value: str) -> str:
    """A stable pseudonym of an identifier under the project's salt (not reversible without it)."""
    return "anon_" + hashlib.sha256(f"{salt}:{value}".encode()).hexdigest()[:32]


# Status records ---------------------------------------------------------------------------------
DELETION_COLUMNS: Final = (
    "deletion_id, project, user_id, status, options, events, sessions, profiles, requested_ms, completed_ms, error"
)
INSERT_DELETION: Final = (
    f"INSERT INTO deletions ({DELETION_COLUMNS}) VALUES (?, ?, ?, ?, ?, 0, 0, 0, ?, NULL, NULL)"
)
FINISH_DELETION: Final = (
    "UPDATE deletions SET status = ?, events = ?, sessions = ?, profiles = ?, completed_ms = ?, error = ?"
    " WHERE deletion_id = ? AND project = ?"
)
SELECT_DELETION: Final = f"SELECT {DELETION_COLUMNS} FROM deletions WHERE project = ? AND deletion_id = ?"
SELECT_USER_DELETIONS: Final = (
    f"SELECT {DELETION_COLUMNS} FROM deletions WHERE project = ? AND user_id = ?"
    " ORDER BY requested_ms DESC, deletion_id LIMIT ?"
)
_encode = msgspec.json.Encoder().encode
_decode_options = msgspec.json.Decoder(DeletionOptions).decode


def options_json(options: DeletionOptions) -> str:
    return _encode(options).decode()


def deletion_from_row(row: Any) -> DeletionRecord:
    return DeletionRecord(
        deletion_id=row[0], project=row[1], user_id=row[2], status=row[3], options=_decode_options(row[4]),
        removed=Removed(int(row[5]), int(row[6]), int(row[7])), requested_ms=int(row[8]),
        completed_ms=None if row[9] is None else int(row[9]), error=row[10],
    )  # fmt: skip


# Automation rows (storage/triggers_schema.py, workflows_schema.py, webhooks_schema.py) -------------
DELETE_USER_EXECUTIONS: Final = "DELETE FROM trigger_executions WHERE project = ? AND user_id = ?"
DELETE_USER_ACTIONS: Final = "DELETE FROM workflow_actions WHERE project = ? AND user_id = ?"
DELETE_SESSION_EXECUTIONS: Final = "DELETE FROM trigger_executions WHERE project = ? AND session_id = ?"
DELETE_SESSION_ACTIONS: Final = "DELETE FROM workflow_actions WHERE project = ? AND session_id = ?"
DELETE_SESSION_MARKS: Final = "DELETE FROM trigger_sessions WHERE project = ? AND session_id = ?"
DELETE_SCHEDULED_USER_ACTIONS: Final = (
    "DELETE FROM workflow_actions WHERE project = ? AND user_id = ? AND status = 'scheduled'"
)
DELETE_SCHEDULED_SESSION_ACTIONS: Final = (
    "DELETE FROM workflow_actions WHERE project = ? AND session_id = ? AND status = 'scheduled'"
)
# anonymize_only: the rows keep their counts, under the session's pseudonym and without the user
PSEUDONYMIZE_USER_EXECUTIONS: Final = "UPDATE trigger_executions SET user_id = NULL WHERE project = ? AND user_id = ?"
PSEUDONYMIZE_USER_ACTIONS: Final = "UPDATE workflow_actions SET user_id = NULL WHERE project = ? AND user_id = ?"
PSEUDONYMIZE_SESSION: Final = tuple(
    f"UPDATE {table} SET session_id = ? WHERE project = ? AND session_id = ?"
    for table in ("trigger_executions", "workflow_actions", "trigger_sessions")
)
DELETE_SNAPSHOT: Final = "DELETE FROM snapshots WHERE project = ? AND kind = ? AND key = ?"
SELECT_USER_SNAPSHOT: Final = "SELECT 1 FROM snapshots WHERE project = ? AND kind = 'user' AND key = ?"


def delivery_names(body: bytes, user_id: str, sessions: set[str]) -> bool:
    """Whether a webhook delivery's body (``{"type", "timestamp", "data"}``) names the user or one
    of the sessions (every kind Pulse sends carries ``data.userId`` / ``data.sessionId``)."""
    try:
        data = _decode_any(body).get("data")
    except (msgspec.DecodeError, AttributeError):
        return False
    if not isinstance(data, dict):
        return False
    return data.get("userId") == user_id or data.get("sessionId") in sessions


class DeletionStore(Protocol):
    """The Store's deletion and retention methods (part of storage.base.Store)."""

    async def delete_user_data(
        self, project: str, user_id: str, *, anonymize_only: bool, cascade: bool = True, salt: str = "",
        linked_sessions: tuple[str, ...] = (),
    ) -> Removed:
        """Remove (or with ``anonymize_only`` pseudonymize with ``salt``) everything of ``user_id`` in
        ``project`` as this module's doc says; exact counts. ``linked_sessions``: sessions linked to
        the user across devices (actors/identity/), erased with the user's own when ``cascade``. Both backends work in chunks, each its own
        transaction with its events' aggregates (500-event SQLite writer turns; 2,000 on PostgreSQL),
        then one transaction for the snapshots and automation rows."""

    async def user_sessions(self, project: str, user_id: str) -> list[str]:
        """The distinct sessions that carried ``user_id`` in ``project`` (sorted)."""

    async def delete_expired(self, now_ms: int, project_retention: dict[str, int]) -> dict[str, int]:
        """Remove events with ``expires_at <= now_ms`` and events of each project in
        ``project_retention`` (project -> days) older than that many days, subtracting them from
        the aggregates; returns the count removed per project (only projects with removals)."""

    async def begin_deletion(self, record: DeletionRecord) -> None:
        """Store a new deletion request (status processing)."""

    async def finish_deletion(
        self, project: str, deletion_id: str, status: str, removed: Removed, completed_ms: int, error: str | None
    ) -> None: ...

    async def deletion(self, project: str, deletion_id: str) -> DeletionRecord | None: ...

    async def user_deletions(self, project: str, user_id: str, *, limit: int = 20) -> list[DeletionRecord]:
        """The user's deletion requests in ``project``, newest first."""
