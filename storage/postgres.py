"""The PostgreSQL backend of the Store: several nodes, one database, the SQLite backend's answers.

Writes: every append and snapshot goes through a bounded trio memory channel to the writer, which
takes everything pending (up to MAX_GROUP_EVENTS) as one group and stores it in ONE transaction, in
ONE crossing of the trio/asyncio bridge (``storage.pg_bridge``):

1. months of the group without a partition get one (a short transaction of its own, rarely);
2. seqs come from one PostgreSQL sequence (ascending within the group); dedup: the group's client
   ids are claimed in ``client_ids`` with ``INSERT ... ON CONFLICT DO NOTHING RETURNING``, whose
   primary key decides, across nodes too, which events are new; the others are duplicates and
   answer with the original's id and seq (looked up only for them);
3. the new events go in by binary COPY; aggregates are upserted commutatively (several nodes may
   flush the same bucket); snapshots replace older ones only; then COMMIT, and every caller is
   woken with its outcomes.

There is no timer: while a group commits, new writes queue up, so groups grow exactly as fast as
the database is slow. Up to PIPELINE_DEPTH groups are in flight on their own connections, so one
group's COPY overlaps the next one's; seqs and commits still follow group order (see _Turn), so on
one node a later commit never holds a lower seq. Reads use the pool's other connections, one
crossing each.

Faults: each crossing has a deadline and an unreachable server fails fast (pg_bridge), so appends
raise StoreUnavailable within APPEND_TIMEOUT_S and never hang; the pool reconnects by itself when
the server is back. Seqs have gaps: a failed group's reserved seqs, lost claims, other nodes'.

The store must run inside ``trio_asyncio.open_loop()`` (the server's main opens it).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar, cast

import trio

from protocol.record import AppendOutcome, Event
from storage import aggregates as agg
from storage import postgres_queries as q
from storage import postgres_schema as sql
from storage.base import (
    MAX_PAGE,
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
    StoreUnavailable,
)
from storage.history_reads import HistoryReads
from storage.pg_bridge import Connection, Database, transaction
from storage.postgres_approvals import PostgresApprovalMethods
from storage.postgres_consent import PostgresConsentMethods
from storage.postgres_deletion import PostgresDeletionMethods
from storage.postgres_identity import PostgresIdentityMethods
from storage.postgres_policies import PostgresPolicyMethods
from storage.postgres_triggers import PostgresTriggerMethods
from storage.postgres_webhooks import PostgresWebhookMethods
from storage.postgres_workflows import PostgresWorkflowMethods
from storage.write_queue import SnapshotRow, Write, WriteQueueFront

DEFAULT_PROJECT: Final = "default"
DEFAULT_POOL_SIZE: Final = 10  # PIPELINE_DEPTH writer connections, the rest for reads
PIPELINE_DEPTH: Final = 2  # groups committing at once (in group order), each on its own connection
WRITE_QUEUE_BATCHES: Final = 4096  # pending appends/snapshots before append() waits for room
MAX_GROUP_EVENTS: Final = 5_000  # a group stops growing past this: a backlog becomes groups in flight at once
APPEND_TIMEOUT_S: Final = 5.0  # queueing + commit; past it the caller gets StoreUnavailable
COMMIT_TIMEOUT_S: Final = 4.0  # one group's crossing
STARTUP_TIMEOUT_S: Final = 30.0  # migrations (waiting for another node's included)
READ_TIMEOUT_S: Final = 10.0
PING_TIMEOUT_S: Final = 2.0
SHUTDOWN_FLUSH_S: Final = 5.0  # time given to commit what was already handed to the writer
SHUTDOWN_CLOSE_S: Final = 2.0  # closing takes ms; past it the connections are terminated

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_NEW, _RUNNING, _CLOSING, _CLOSED = "new", "running", "closing", "closed"
Key = tuple[str, str]  # (project, client_id)
Known = dict[Key, tuple[str, int]]  # (project, client_id) -> (id, seq) of the stored original


class _Turn:
    """How far one group in flight got, for the group after it. asyncio events: they are set and
    awaited inside units of work (asyncio side)."""

    __slots__ = ("claimed", "committed")

    def __init__(self) -> None:
        self.claimed = asyncio.Event()  # its seqs are reserved and its client ids claimed
        self.committed = asyncio.Event()  # committed, or failed: nothing of it holds a lock any more

    def finish(self) -> None:
        self.claimed.set()
        self.committed.set()


async def _after(previous: _Turn | None, *, committed: bool) -> None:
    if previous is not None:
        await (previous.committed if committed else previous.claimed).wait()


class PostgresStore(PostgresTriggerMethods, PostgresWebhookMethods, PostgresWorkflowMethods, PostgresApprovalMethods,
                    PostgresPolicyMethods, PostgresIdentityMethods, PostgresConsentMethods, PostgresDeletionMethods, WriteQueueFront):
    """The Store on a PostgreSQL database shared by any number of nodes.

    ``dsn``: a libpq URL (``postgresql://user:password@host:port/dbname``). ``pool_size``: the most
    connections this process opens. Construction does no I/O; ``run()`` connects and migrates.
    """

    APPEND_TIMEOUT_S = APPEND_TIMEOUT_S

    def __init__(self, dsn: str, *, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        if pool_size <= PIPELINE_DEPTH:
            raise ValueError(f"pool_size must be more than {PIPELINE_DEPTH} (the writers), not {pool_size!r}")
        self._dsn = dsn
        self._pool_size = pool_size
        self._send, self._receive = trio.open_memory_channel[Write](WRITE_QUEUE_BATCHES)
        self._db: Database | None = None
        self._state = _NEW
        self._projects: dict[str, Project] = {}  # public and secret key -> Project (immutable)
        self._default: Project | None = None
        self._fold = q.FOLD_DATABASE  # set by _start: how names are lowercased for ``type``
        # Months whose partition exists, or whose rows stay in the default partition for good.
        self._months_ready: set[int] = set()
        self._histories = HistoryReads(self._read_histories)

    # lifecycle ----------------------------------------------------------------------------------
    async def run(self, *, task_status: object = trio.TASK_STATUS_IGNORED) -> None:
        # ``object`` matches Store.run; nursery.start always passes a TaskStatus.
        status = cast("trio.TaskStatus[None]", task_status)
        if self._state != _NEW:
            raise RuntimeError(f"store already {self._state}: run() may be called once")
        self._state = _CLOSING  # until opened: writes are refused, shutdown still cleans up
        try:
            self._db = await Database.connect(self._dsn, size=self._pool_size)
            try:
                await self._db.run(self._start, time_limit_s=STARTUP_TIMEOUT_S)
            except StoreUnavailable as exc:
                raise StoreUnavailable(f"cannot open the store: {exc}") from None
            assert self._default is not None
            self._remember(self._default)
            self._state = _RUNNING
            status.started()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._histories.run)
                await self._write_loop()
        finally:
            await self._shutdown()

    async def _start(self, conn: Connection) -> None:
        await sql.migrate(conn)
        if await conn.fetchval(sql.SELECT_HAS_ICU):
            self._fold = q.FOLD_ICU
        self._default = await q.ensure_project(conn, DEFAULT_PROJECT)
        current = sql.month_of(_now_ms())
        await self._create_partitions(conn, [current, current + 1])

    async def ping(self) -> None:
        await self._read(q.ping, time_limit_s=PING_TIMEOUT_S)

    async def _shutdown(self) -> None:
        """Commit what was already handed over, fail the rest, close the pool."""
        self._state = _CLOSING
        if self._db is not None:
            with trio.move_on_after(SHUTDOWN_FLUSH_S) as scope:
                scope.shield = True
                while group := self._drain():
                    await self._commit(group, None, _Turn())
        _fail(self._drain(), "store closed before the write was committed")
        self._receive.close()  # wakes appends blocked on a full queue: they get StoreUnavailable
        if self._db is not None:
            await self._db.close(SHUTDOWN_CLOSE_S)
        self._state = _CLOSED

    # projects -----------------------------------------------------------------------------------
    async def create_project(self, name: str) -> Project:
        self._require_running()
        # One INSERT, committed on its own: projects are not part of the group commit.
        project = await self._read(functools.partial(q.insert_project, name=name))
        if project is None:
            raise ValueError(f"project {name!r} already exists")
        self._remember(project)
        return project

    async def list_projects(self) -> list[Project]:
        return await self._read(q.list_projects)

    async def project_by_key(self, key: str) -> Project | None:
        # Projects never change, so after the first lookup a key costs no crossing. Unknown keys
        # are not remembered: a project created by another node must become visible.
        project = self._projects.get(key)
        if project is None:
            project = await self._read(functools.partial(q.project_by_key, key=key))
            if project is not None:
                self._remember(project)
        return project

    # the log: writes ----------------------------------------------------------------------------
    async def _write_loop(self) -> None:
        # PIPELINE_DEPTH groups in flight, each on its own connection: one group's COPY overlaps
        # the next one's preparation and COPY, while _Turn keeps seqs and commits in group order.
        slots = trio.Semaphore(PIPELINE_DEPTH)
        previous: _Turn | None = None
        async with trio.open_nursery() as in_flight:
            while True:
                await slots.acquire()
                first = await self._receive.receive()
                group = self._drain(first)
                if not group:
                    slots.release()
                    continue
                turn = _Turn()
                # Taken off the queue means owned: _commit shields itself from the shutdown.
                in_flight.start_soon(self._commit, group, previous, turn, slots)
                previous = turn

    def _drain(self, first: Write | None = None) -> list[Write]:
        """``first`` plus the writes already waiting, up to MAX_GROUP_EVENTS; never waits."""
        group = [] if first is None or first.abandoned else [first]
        size = sum(len(w.events) for w in group)
        while size < MAX_GROUP_EVENTS:
            try:
                write = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.ClosedResourceError, trio.EndOfChannel):
                break
            if not write.abandoned:
                group.append(write)
                size += len(write.events)
        return group

    async def _commit(
        self, group: list[Write], previous: _Turn | None, turn: _Turn, slots: trio.Semaphore | None = None
    ) -> None:
        assert self._db is not None
        write_group = functools.partial(self._write_group, group=group, previous=previous, turn=turn)
        try:
            with trio.CancelScope(shield=True):  # the crossing has its own deadline
                outcomes = await self._db.run(write_group, time_limit_s=COMMIT_TIMEOUT_S)
        except StoreUnavailable as exc:  # the writer survives; this group's callers are told
            log.warning("group commit of %d writes failed: %s", len(group), exc)
            _fail(group, str(exc))
            return
        except Exception as exc:
            log.exception("group commit of %d writes failed", len(group))
            _fail(group, f"write failed: {exc!r}")
            return
        except BaseException:  # cancelled (shutdown deadline): the commit may or may not have happened
            _fail(group, "store closed before the write was committed")
            raise
        finally:
            turn.finish()  # normally done inside the crossing; here if it never ran
            if slots is not None:
                slots.release()
        for write, outcome in zip(group, outcomes, strict=True):
            write.outcomes = outcome
            write.done.set()

    async def _write_group(
        self, conn: Connection, group: list[Write], previous: _Turn | None, turn: _Turn
    ) -> list[list[AppendOutcome]]:
        """One unit of work (asyncio side): store the whole group in one transaction.

        With ``previous`` (the group before, still in flight): seqs are reserved and client ids
        claimed only after it did so, and the row-locking tail (aggregates, snapshots, COMMIT) runs
        only after it committed. Seqs and commits thus follow group order, and the previous group
        never waits for a lock this one holds (no deadlock the server could not see).
        """
        try:
            events = [ev for write in group for ev in write.events]
            months = self._months_missing(events)
            if months:  # DDL waits for every open transaction on events: let ours finish first
                await _after(previous, committed=True)
                await self._create_partitions(conn, months)
            firsts, repeats = _first_occurrences(events)
            async with transaction(conn):
                await _after(previous, committed=False)
                # Every event but the group's own repeats gets a seq; the claim then tells which
                # client ids were stored before (their seqs stay unused: retries leave gaps).
                fresh = [i for i in range(len(events)) if i not in repeats] if repeats else list(range(len(events)))
                seq_of = [0] * len(events)
                if fresh:  # not for a group of snapshots alone
                    for i, seq in zip(fresh, await conn.fetchval(sql.RESERVE_SEQS, len(fresh)), strict=True):
                        seq_of[i] = seq
                known: Known = {}
                if firsts:
                    fresh = await _claim_client_ids(conn, events, fresh, seq_of, known)
                turn.claimed.set()
                stored = [events[i] for i in fresh]
                if stored:
                    await conn.copy_records_to_table(
                        "events", records=_event_records(stored, seq_of, fresh), columns=sql.EVENT_COPY_COLUMNS
                    )
                await _after(previous, committed=True)
                if stored:
                    await _upsert_aggregates(conn, stored)
                snapshots = _latest_snapshots(group)
                if snapshots:
                    await conn.execute(sql.UPSERT_SNAPSHOTS, *zip(*snapshots, strict=True))
        finally:
            turn.finish()
        return _outcomes(group, events, seq_of, firsts, repeats, known)

    # partitions ---------------------------------------------------------------------------------
    def _months_missing(self, events: list[Event]) -> list[int]:
        """Months of ``events`` (and the next month from now) that need a partition of their own."""
        now = _now_ms()
        first, last = sql.partition_window(now)
        lo_ms, hi_ms = sql.month_start_ms(first), sql.month_start_ms(last + 1)
        stamps = [ev.timestamp for ev in events]
        if stamps and (min(stamps) < lo_ms or max(stamps) >= hi_ms):
            stamps = [ts for ts in stamps if lo_ms <= ts < hi_ms]  # the rest go to the default
        months = {sql.month_of(now) + 1}  # made ahead, so no month starts with a DDL under load
        if stamps:
            lo, hi = sql.month_of(min(stamps)), sql.month_of(max(stamps))
            if lo == hi:
                months.add(lo)
            else:
                months.update(sql.month_of(day * sql.DAY_MS) for day in {ts // sql.DAY_MS for ts in stamps})
        return sorted(m for m in months if m not in self._months_ready and first <= m <= last)

    async def _create_partitions(self, conn: Connection, months: list[int]) -> None:
        for month in months:
            status = await sql.create_partition(conn, month)
            if status == "busy":
                # Its rows go to the default partition meanwhile (and, once there, for good).
                log.warning("partition %s not created: events is locked; retrying later", sql.partition_name(month))
                continue
            if status == "default":
                log.warning("%s stays in the default partition, which has rows of it", sql.partition_name(month))
            self._months_ready.add(month)

    # the log: reads -----------------------------------------------------------------------------
    async def query_events(self, flt: EventFilter, *, limit: int, cursor: Cursor | None) -> EventPage:
        assert 1 <= limit <= MAX_PAGE, f"limit {limit!r} not clamped to 1..{MAX_PAGE}"
        fold = self._fold
        return await self._read(
            lambda conn: q.query_events(conn, flt, limit, cursor, fold), snapshot=True
        )

    async def query_events_ascending(self, flt: EventFilter, *, limit: int, after: Cursor | None) -> list[Event]:
        assert 1 <= limit <= MAX_PAGE, f"limit {limit!r} not clamped to 1..{MAX_PAGE}"
        fold = self._fold
        return await self._read(lambda conn: q.query_events_ascending(conn, flt, limit, after, fold))

    async def query_events_descending(self, flt: EventFilter, *, limit: int, before: Cursor | None) -> list[Event]:
        assert 1 <= limit <= MAX_PAGE, f"limit {limit!r} not clamped to 1..{MAX_PAGE}"
        fold = self._fold
        return await self._read(lambda conn: q.query_events_descending(conn, flt, limit, before, fold))

    async def events_after(self, project: str, after_seq: int, *, limit: int) -> list[Event]:
        return await self._events(project, q.SELECT_EVENTS_AFTER, after_seq, _limit(limit))

    async def session_events(self, project: str, session_id: str, after_seq: int) -> list[Event]:
        return await self._events(project, q.SELECT_SESSION_EVENTS, session_id, after_seq)

    async def user_events(self, project: str, user_id: str, after_seq: int) -> list[Event]:
        return await self._events(project, q.SELECT_USER_EVENTS, user_id, after_seq)

    async def _events(self, project: str, query: str, *params: object) -> list[Event]:
        rows = await self._read(lambda conn: conn.fetch(query, project, *params))
        return [q.event_from_row(project, row) for row in rows]

    async def max_seq(self) -> int:
        # The highest COMMITTED seq, from the log: the sequence's own value would count seqs that
        # other nodes reserved for groups not committed yet (or rolled back).
        return int(await self._read(lambda conn: conn.fetchval(q.SELECT_MAX_SEQ)))

    # aggregates ---------------------------------------------------------------------------------
    async def count_events(self, project: str) -> int:
        return int(await self._read(lambda conn: conn.fetchval(q.COUNT_EVENTS, project)))

    async def service_names(self, project: str, *, name_unknown: bool = False) -> list[str]:
        return await self._read(lambda conn: q.service_names(conn, project, name_unknown))

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
        plan = agg.plan_range(since_ms, until_ms)
        return await self._read(lambda conn: q.service_stats(conn, project, plan, service_name, top, name_unknown))

    async def top_events(
        self, project: str, *, since_ms: int | None = None, until_ms: int | None = None, limit: int = 10
    ) -> list[EventCount]:
        plan = agg.plan_range(since_ms, until_ms)
        return await self._read(lambda conn: q.top_events(conn, project, plan, _limit(limit)))

    async def per_day(
        self, project: str, *, since_ms: int | None = None, until_ms: int | None = None
    ) -> list[DayCount]:
        plan = agg.plan_range(since_ms, until_ms)
        return await self._read(lambda conn: q.per_day(conn, project, plan))

    async def minute_series(
        self, project: str, *, since_ms: int, until_ms: int, service_name: str | None = None
    ) -> list[MinuteRow]:
        lo, hi = since_ms // agg.MINUTE_MS, until_ms // agg.MINUTE_MS
        return await self._read(lambda conn: q.minute_series(conn, project, lo, hi, service_name))

    async def service_series(
        self, project: str, services: list[str], *, since_ms: int, until_ms: int, bucket_minutes: int
    ) -> list[SeriesRow]:
        lo, hi = since_ms // agg.MINUTE_MS, until_ms // agg.MINUTE_MS
        bucket = max(1, bucket_minutes)
        return await self._read(lambda conn: q.service_series(conn, project, services, lo, hi, bucket))

    # server lifetimes ---------------------------------------------------------------------------
    async def record_lifetime(self, lifetime: Lifetime) -> None:
        self._require_running()
        await self._read(functools.partial(q.record_lifetime, lifetime=lifetime))  # one autocommitted statement

    async def lifetimes(self, since_ms: int) -> LifetimeHistory:
        return await self._read(functools.partial(q.lifetimes, since_ms=since_ms))

    # snapshots ----------------------------------------------------------------------------------
    async def load_snapshot(self, project: str, kind: str, key: str) -> Snapshot | None:
        row = await self._read(lambda conn: conn.fetchrow(sql.SELECT_SNAPSHOT, project, kind, key))
        return None if row is None else Snapshot(state=bytes(row[0]), upto_seq=row[1])

    async def load_history(self, project: str, kind: str, key: str) -> History:
        return await self._histories.load((project, kind, key))

    async def _read_histories(self, keys: list[HistoryKey]) -> dict[HistoryKey, History]:
        return await self._read(functools.partial(q.read_histories, keys=keys))

    # plumbing -----------------------------------------------------------------------------------
    def _require_running(self) -> None:
        if self._state != _RUNNING:
            raise StoreUnavailable(f"store is {self._state}")

    async def _read(
        self, work: Callable[[Connection], Awaitable[_T]], *, time_limit_s: float = READ_TIMEOUT_S, snapshot: bool = False
    ) -> _T:
        # Reads stay possible while the final writes are flushed.
        if self._state not in (_RUNNING, _CLOSING) or self._db is None:
            raise StoreUnavailable(f"store is {self._state}")
        return await self._db.run(work, time_limit_s=time_limit_s, transaction=snapshot, read_only=snapshot)


def _fail(group: list[Write], reason: str) -> None:
    for write in group:
        write.error = reason
        write.done.set()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _limit(limit: int) -> int | None:
    """SQLite reads a negative LIMIT as no limit; PostgreSQL wants NULL for that."""
    return None if limit < 0 else limit


# The group commit, step by step (asyncio side) -------------------------------------------------------
def _first_occurrences(events: list[Event]) -> tuple[dict[Key, int], dict[int, Key]]:
    """Client ids of the group: the index of each one's first event, and which later events repeat
    an earlier one (those are duplicates whatever the database says)."""
    firsts: dict[Key, int] = {}
    repeats: dict[int, Key] = {}
    for i, ev in enumerate(events):
        client_id = ev.client_id
        if client_id is not None:
            key = (ev.project, client_id)
            if key in firsts:
                repeats[i] = key
            else:
                firsts[key] = i
    return firsts, repeats


async def _known_client_ids(conn: Connection, keys: list[Key]) -> Known:
    projects, client_ids = zip(*keys, strict=True)
    rows = await conn.fetch(sql.SELECT_CLIENT_IDS, projects, client_ids)
    return {(row[0], row[1]): (row[2], row[3]) for row in rows}


async def _claim_client_ids(
    conn: Connection, events: list[Event], fresh: list[int], seq_of: list[int], known: Known
) -> list[int]:
    """Claim the fresh events' client ids; return ``fresh`` without the events whose client id was
    claimed before, by this node or another (their originals go into ``known``).

    One INSERT ... ON CONFLICT DO NOTHING answers "new or not" for the whole group, and decides
    races between nodes too (see CLAIM_CLIENT_IDS).
    """
    claims = [(ev.project, ev.client_id, ev.id, seq_of[i]) for i in fresh if (ev := events[i]).client_id is not None]
    if not claims:
        return fresh
    taken = [(row[0], row[1]) for row in await conn.fetch(sql.CLAIM_CLIENT_IDS, *zip(*claims, strict=True))]
    if not taken:
        return fresh
    originals = await _known_client_ids(conn, taken)
    if len(originals) != len(taken):  # cannot happen: a conflict means a committed claim
        raise RuntimeError(f"claimed client ids without a stored original: {sorted(set(taken) - set(originals))!r}")
    known.update(originals)
    return [i for i in fresh if (ev := events[i]).client_id is None or (ev.project, ev.client_id) not in known]


def _event_records(stored: list[Event], seq_of: list[int], fresh: list[int]) -> list[tuple[object, ...]]:
    """COPY rows in EVENT_COPY_COLUMNS order. msgspec.Raw exposes the buffer protocol, which
    asyncpg's bytea encoder reads without an intermediate copy."""
    return [
        (
            seq_of[i], ev.id, ev.project, ev.name, ev.source, ev.timestamp, ev.received_at, ev.payload,
            ev.user_id, ev.session_id, ev.service_name, ev.correlation_id, ev.device_type,
            ev.status_code, ev.response_time_ms, ev.client_id, ev.flags, ev.expires_at,
        )  # fmt: skip
        for i, ev in zip(fresh, stored, strict=True)
    ]


async def _upsert_aggregates(conn: Connection, stored: list[Event]) -> None:
    """Fold the new events into buckets in Python, then one upsert per table, rows in key order."""
    for statement, rows in zip(
        (sql.UPSERT_AGG_MINUTE, sql.UPSERT_AGG_DAY, sql.UPSERT_AGG_TOTAL),
        agg.rollup(agg.fold_minutes(stored)),
        strict=True,
    ):
        rows.sort()
        await conn.execute(statement, *zip(*rows, strict=True))


def _latest_snapshots(group: list[Write]) -> list[SnapshotRow]:
    """The group's snapshots, one per key (the most recent), in key order."""
    latest: dict[tuple[str, str, str], SnapshotRow] = {}
    for write in group:
        row = write.snapshot
        if row is not None:
            key = row[:3]
            previous = latest.get(key)
            if previous is None or row[4] >= previous[4]:
                latest[key] = row
    return [latest[key] for key in sorted(latest)]


def _outcomes(
    group: list[Write],
    events: list[Event],
    seq_of: list[int],
    firsts: dict[Key, int],
    repeats: dict[int, Key],
    known: Known,
) -> list[list[AppendOutcome]]:
    outcomes: list[list[AppendOutcome]] = []
    i = 0
    for write in group:
        out: list[AppendOutcome] = []
        for ev in write.events:
            if ev.client_id is None:
                out.append(AppendOutcome(ev.id, seq_of[i], False))
            else:
                key = (ev.project, ev.client_id)
                original = known.get(key)
                if original is not None:
                    out.append(AppendOutcome(original[0], original[1], True))
                elif i in repeats:
                    first = firsts[key]
                    out.append(AppendOutcome(events[first].id, seq_of[first], True))
                else:
                    out.append(AppendOutcome(ev.id, seq_of[i], False))
            i += 1
        outcomes.append(out)
    return outcomes
