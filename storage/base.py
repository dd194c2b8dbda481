"""The Store interface: one contract, several backends (SQLite now; PostgreSQL later).

Every method is a trio coroutine. The event log is the source of truth; aggregates are kept
incrementally at write time so statistics never scan the log; actor snapshots let live state be
rebuilt as snapshot + the events after it.
"""

from __future__ import annotations

import secrets
import time
from typing import Final, Protocol

import msgspec

from protocol.record import AppendOutcome, Event
from storage.approval_records import ApprovalStore
from storage.consent_records import ConsentStore
from storage.deletion_records import DeletionStore
from storage.identity_records import IdentityStore
from storage.policy_records import PolicyStore
from storage.trigger_records import TriggerStore
from storage.webhook_records import WebhookStore
from storage.workflow_records import WorkflowStore

MAX_PAGE: Final = 1000
# The service name under which events sent without a serviceName are reported and selected (the
# seed's own client code falls back to it: ``event.serviceName || 'unknown'``). Events that name
# the service "unknown" themselves are counted and selected together with them.
UNKNOWN_SERVICE: Final = "unknown"


class StoreError(Exception):
    """Base of storage failures (the edge answers 503 for these)."""


class StoreUnavailable(StoreError):
    """The backend cannot take writes right now (closed, disk error, overloaded past a deadline)."""


class Project(msgspec.Struct, frozen=True):
    id: str
    name: str
    public_key: str  # write-only key, safe in a browser ("pk_...")
    secret_key: str  # read + admin key ("sk_...")
    created_at: int  # unix ms


def new_project(name: str) -> Project:
    """A project with fresh random keys (not stored yet)."""
    token = secrets.token_urlsafe
    return Project(
        id="prj_" + secrets.token_hex(6),
        name=name,
        public_key="pk_" + token(24),
        secret_key="sk_" + token(24),
        created_at=time.time_ns() // 1_000_000,
    )


class EventFilter(msgspec.Struct, kw_only=True, frozen=True):
    """Filters of GET /api/events. All given filters must match (AND)."""

    project: str
    since_ms: int | None = None  # timestamp >= since_ms
    until_ms: int | None = None  # timestamp <= until_ms
    name_contains: str | None = None  # ``type``: substring of the event name, case-insensitive
    event_name: str | None = None  # exact event name
    service_name: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    correlation_id: str | None = None

    def column_terms(self) -> list[tuple[str, str, object]]:
        """(column, operator, value) for every given filter that maps to one indexed column
        (``name_contains`` is each backend's own: its matching differs)."""
        terms = (
            ("timestamp", ">=", self.since_ms),
            ("timestamp", "<=", self.until_ms),
            ("name", "=", self.event_name),
            ("service_name", "=", self.service_name),
            ("user_id", "=", self.user_id),
            ("session_id", "=", self.session_id),
            ("correlation_id", "=", self.correlation_id),
        )
        return [(column, op, value) for column, op, value in terms if value is not None]


class Cursor(msgspec.Struct, array_like=True, frozen=True):
    """Keyset position: the (timestamp, seq) of the last event of the previous page."""

    timestamp: int
    seq: int


class EventPage(msgspec.Struct, kw_only=True):
    events: list[Event]  # newest first: ORDER BY timestamp DESC, seq DESC
    filtered: int  # how many events match the filter in total (all pages)
    next_cursor: Cursor | None  # None when this page is the last


class EventCount(msgspec.Struct):
    name: str
    count: int


class ServiceAggregate(msgspec.Struct, kw_only=True):
    service_name: str | None  # None groups events sent without a serviceName
    event_count: int
    unique_events: int  # distinct event names
    with_status: int  # events that carried a statusCode
    errors: int  # events with statusCode >= 400
    with_response_time: int  # events that carried responseTimeMs
    response_time_sum: float
    last_seen_ms: int  # max event timestamp
    top_events: list[EventCount]  # by count desc, then name; at most ``top`` entries


class DayCount(msgspec.Struct):
    date: str  # YYYY-MM-DD (UTC)
    count: int


class MinuteRow(msgspec.Struct, frozen=True):
    """One service's per-minute aggregate, summed over event names (the anomaly detector's input)."""

    service_name: str | None  # None groups events sent without a serviceName
    minute: int  # unix ms // 60_000
    count: int
    with_status: int
    errors: int
    with_rt: int
    rt_sum: float


class SeriesRow(msgspec.Struct, frozen=True):
    """One bucket of a service's time series (``Store.service_series``), summed over event names."""

    bucket: int  # index of the bucket from the series' start: (minute - first minute) // bucket minutes
    count: int
    with_status: int
    errors: int
    with_rt: int
    rt_sum: float


class Lifetime(msgspec.Struct, frozen=True):
    """One server process's running time, as recorded by it (server/uptime.py): when it started,
    when it last said it was alive (a heartbeat), and when it stopped cleanly (None: it is still
    running, or it died without a clean stop and ``last_seen_ms`` is all that is known)."""

    id: str
    node: str
    started_ms: int
    last_seen_ms: int
    stopped_ms: int | None


class LifetimeHistory(msgspec.Struct, frozen=True):
    first_started_ms: int | None  # the first start ever recorded (None: none recorded)
    lifetimes: list[Lifetime]  # those alive at or after the time asked for, by start


class Snapshot(msgspec.Struct, frozen=True):
    state: bytes
    upto_seq: int  # the snapshot includes every event of its key with seq <= upto_seq


# (project, kind, key): the actor whose history is read. Kinds with a history in the log:
HISTORY_KINDS: Final = {"session": "session_id", "user": "user_id"}  # kind -> the events' column
HistoryKey = tuple[str, str, str]


class History(msgspec.Struct, frozen=True):
    """What an actor activates from: its snapshot, and its events after the snapshot's upto_seq
    (all its events when there is none), oldest first."""

    snapshot: Snapshot | None
    events: list[Event]


class Store(TriggerStore, WebhookStore, WorkflowStore, ApprovalStore, PolicyStore, IdentityStore, ConsentStore, DeletionStore, Protocol):
    # lifecycle -----------------------------------------------------------------------------------
    async def run(self, *, task_status: object = ...) -> None:
        """Open the backend, run the group-commit writer until cancelled, then flush and close."""

    async def ping(self) -> None:
        """Raise StoreError if the backend cannot serve a read right now."""

    # projects ------------------------------------------------------------------------------------
    async def create_project(self, name: str) -> Project: ...
    async def list_projects(self) -> list[Project]: ...
    async def project_by_key(self, key: str) -> Project | None: ...
    async def default_project(self) -> Project:
        """The project named "default", created on first use."""

    # the log -------------------------------------------------------------------------------------
    async def append(self, events: list[Event]) -> list[AppendOutcome]:
        """Durably store ``events`` (committed and fsynced when this returns), in order.

        Events with a ``client_id`` already stored in the same project (or earlier in this same
        call) are not stored again: their outcome is ``duplicate=True`` with the original id and seq.
        Concurrent callers are group-committed: one transaction per group of pending appends.
        """

    async def query_events(self, flt: EventFilter, *, limit: int, cursor: Cursor | None) -> EventPage: ...
    async def query_events_ascending(self, flt: EventFilter, *, limit: int, after: Cursor | None) -> list[Event]:
        """Up to ``limit`` (<= MAX_PAGE) events matching ``flt`` with (timestamp, seq) > ``after``,
        oldest first: ORDER BY timestamp, seq (the export's keyset scan; no count). Fewer than
        ``limit`` means the end; the next page starts after the last event's (timestamp, seq)."""

    async def query_events_descending(self, flt: EventFilter, *, limit: int, before: Cursor | None) -> list[Event]:
        """Up to ``limit`` (<= MAX_PAGE) events matching ``flt`` with (timestamp, seq) < ``before``,
        newest first: query_events' order without its count (the large listings' keyset scan)."""

    async def events_after(self, project: str, after_seq: int, *, limit: int) -> list[Event]:
        """Events of ``project`` with seq > after_seq, oldest first (stream resume)."""

    async def session_events(self, project: str, session_id: str, after_seq: int) -> list[Event]:
        """All events of one session with seq > after_seq, oldest first (actor replay)."""

    async def user_events(self, project: str, user_id: str, after_seq: int) -> list[Event]:
        """All events of one user with seq > after_seq, oldest first (actor replay)."""

    async def max_seq(self) -> int: ...

    # aggregates (never scan the log) ---------------------------------------------------------------
    async def count_events(self, project: str) -> int: ...
    async def service_names(self, project: str, *, name_unknown: bool = False) -> list[str]:
        """Services with events; ``name_unknown``: the events sent without one add UNKNOWN_SERVICE."""
    async def service_stats(
        self,
        project: str,
        *,
        since_ms: int | None = None,
        until_ms: int | None = None,
        service_name: str | None = None,
        top: int = 10,
        name_unknown: bool = False,
    ) -> list[ServiceAggregate]:
        """Per service, busiest first. ``name_unknown``: the events sent without a service are
        reported (and selected by ``service_name``) as UNKNOWN_SERVICE, merged with any events that
        name it; otherwise they form a group whose service_name is None."""
    async def top_events(
        self, project: str, *, since_ms: int | None = None, until_ms: int | None = None, limit: int = 10
    ) -> list[EventCount]: ...
    async def per_day(
        self, project: str, *, since_ms: int | None = None, until_ms: int | None = None
    ) -> list[DayCount]: ...
    async def minute_series(
        self, project: str, *, since_ms: int, until_ms: int, service_name: str | None = None
    ) -> list[MinuteRow]:
        """Per service and minute (the minutes containing since_ms..until_ms), summed over event
        names, ordered by service then minute; minutes without events have no row. ``service_name``
        selects one service ("" selects the events sent without one)."""

    async def service_series(
        self, project: str, services: list[str], *, since_ms: int, until_ms: int, bucket_minutes: int
    ) -> list[SeriesRow]:
        """The events of ``services`` ("" is the events sent without one) in buckets of
        ``bucket_minutes`` minutes from the minute containing since_ms through the one containing
        until_ms, summed over services and names, oldest first; buckets without events have no row."""

    # server lifetimes (uptime) ---------------------------------------------------------------------
    async def record_lifetime(self, lifetime: Lifetime) -> None:
        """Store (insert or replace) one process's lifetime row, committed when this returns."""

    async def lifetimes(self, since_ms: int) -> LifetimeHistory:
        """Every lifetime alive at or after ``since_ms`` (last_seen_ms >= since_ms), by start, and
        the first start ever recorded."""

    # actor snapshots -----------------------------------------------------------------------------
    async def save_snapshot(self, project: str, kind: str, key: str, snapshot: Snapshot) -> None: ...
    async def load_snapshot(self, project: str, kind: str, key: str) -> Snapshot | None: ...
    async def load_history(self, project: str, kind: str, key: str) -> History:
        """The snapshot and the later events of a ``kind`` in HISTORY_KINDS (actor activation).
        Concurrent calls are read together in batches."""
