"""The embedded SQLite backend of the Store: one file, one writer, group commit.

Layout: ``<data_dir>/pulse.db`` in WAL mode, so readers never block the writer nor each other.

Writes: every append and snapshot is put on the queue of one long-lived writer thread, which owns
the writer connection (it is never used by any other thread). The thread takes one pending write,
drains every other pending write without waiting, and stores them all in ONE transaction (one fsync
with ``synchronous=FULL``), then wakes every waiter with one ``run_sync_soon`` into the trio thread.
There is no timer: while a commit runs, new writes queue up, so groups grow exactly as fast as the
disk is slow. Handing a write over costs a queue put and a wake-up per group: no trio task of its
own, no worker thread borrowed (and renamed) per group, no limiter. Each write carries its deadline
(APPEND_TIMEOUT_S); one watchdog task fails the overdue ones, so no cancel scope is opened per write.

Reads: a small pool of read-only connections, used from worker threads behind their own limiter.

Statistics come from aggregates maintained in the same transaction as the inserts (see
``storage.sqlite_aggregates``); they never scan the event log.
"""

from __future__ import annotations

import logging
import pathlib
import queue
import sqlite3
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Final, TypeVar, cast

import msgspec
import trio

from protocol.record import AppendOutcome, Event
from storage import sqlite_aggregates as agg
from storage import sqlite_schema as sql
from storage.aggregates import MINUTE_MS, plan_range
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
    new_project,
)
from storage.history_reads import HistoryReads
from storage.sqlite_approvals import SqliteApprovalMethods
from storage.sqlite_consent import SqliteConsentMethods
from storage.sqlite_deletion import SqliteDeletionMethods, seq_floor
from storage.sqlite_identity import SqliteIdentityMethods
from storage.sqlite_policies import SqlitePolicyMethods
from storage.sqlite_triggers import SqliteTriggerMethods
from storage.sqlite_webhooks import SqliteWebhookMethods
from storage.sqlite_workflows import SqliteWorkflowMethods
from storage.write_queue import Write, WriteQueueFront

DB_FILE: Final = "pulse.db"
DEFAULT_PROJECT: Final = "default"
WRITE_QUEUE_BATCHES: Final = 4096  # pending appends/snapshots before append() waits for room
READ_CONNECTIONS: Final = 4
READ_STATEMENT_CACHE: Final = 256  # one compiled statement per query_events filter shape in use
APPEND_TIMEOUT_S: Final = 30.0  # queueing + commit; past it the caller gets StoreUnavailable
SHUTDOWN_FLUSH_S: Final = 5.0  # time given to commit what was already handed to the writer
SHUTDOWN_CLOSE_S: Final = 5.0
BUSY_TIMEOUT_MS: Final = 5_000
WRITER_CACHE_KIB: Final = 65_536  # keeps the hot index pages of the event log in memory
JOURNAL_SIZE_LIMIT: Final = 64 * 1024 * 1024  # truncate the WAL back to this after checkpoints
# Checkpoint every ~40 MiB of WAL instead of SQLite's 4 MiB: hot index pages rewritten by many
# commits are copied back to the database once, not ten times (+10-25% appends measured).
WAL_AUTOCHECKPOINT_PAGES: Final = 10_000
# ... and a thread of its own copies the WAL back into the database in between (PASSIVE: it never
# blocks the writer), so the writer's own checkpoint at 10,000 pages finds nearly everything copied
# already. Without it that checkpoint copied ~40 MiB and fsynced in the commit path, stalling every
# request waiting on a commit: single events at 2,150/s had p99 24-35 ms, with it 7-12 ms.
CHECKPOINT_INTERVAL_S: Final = 0.2
SYNCHRONOUS_MODES: Final = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_NEW, _RUNNING, _CLOSING, _CLOSED = "new", "running", "closing", "closed"
Known = dict[tuple[str, str], tuple[str, int]]  # (project, client_id) -> (id, seq)


class _Call:
    """A function to run on the writer thread (which owns the writer connection), in queue order."""

    __slots__ = ("fn", "args", "result", "error", "done")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = trio.Event()


_STOP: Final = _Call(lambda: None, ())  # the writer thread's last job


class _ReadPool:
    """Read-only connections, each lent to one worker thread at a time.

    Lending (rather than one connection per thread via threading.local) keeps the count bounded
    by the read limiter even though trio's worker threads come and go, and lets close() reach them.
    """

    def __init__(self, path: pathlib.Path) -> None:
        self._path = path
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        conn = self._take()
        try:
            return fn(conn)
        finally:
            self._give_back(conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _take(self) -> sqlite3.Connection:
        with self._lock:
            if self._closed:
                raise StoreUnavailable("store is closed")
            if self._idle:
                return self._idle.pop()
        return _open_reader(self._path)

    def _give_back(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(conn)
                return
        conn.close()


def _open_reader(path: pathlib.Path) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, cached_statements=READ_STATEMENT_CACHE
    )
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
    conn.execute("PRAGMA query_only = 1")
    # SQLite's lower() folds ASCII only; non-ASCII ``type`` filters use Python's (see _where).
    conn.create_function("unicode_lower", 1, str.lower, deterministic=True)
    return conn


class SqliteStore(SqliteTriggerMethods, SqliteWebhookMethods, SqliteWorkflowMethods, SqliteApprovalMethods,
                  SqlitePolicyMethods, SqliteIdentityMethods, SqliteConsentMethods, SqliteDeletionMethods, WriteQueueFront):
    """The Store on an embedded SQLite database in ``data_dir``.

    ``synchronous`` is SQLite's PRAGMA synchronous: FULL (default) fsyncs the WAL at every commit,
    so a returned append survives power loss; NORMAL survives a process crash but not power loss.
    """

    APPEND_TIMEOUT_S = APPEND_TIMEOUT_S

    def __init__(self, data_dir: pathlib.Path, *, synchronous: str = "FULL") -> None:
        if synchronous.upper() not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {sorted(SYNCHRONOUS_MODES)!r}, not {synchronous!r}")
        self._path = pathlib.Path(data_dir) / DB_FILE
        self._synchronous = synchronous.upper()
        self._jobs: queue.SimpleQueue[Write | _Call] = queue.SimpleQueue()  # to the writer thread
        self._in_flight: deque[Write] = deque()  # handed over, not done yet, oldest first
        self._room: trio.Event | None = None  # set when _in_flight falls below WRITE_QUEUE_BATCHES
        self._token: trio.lowlevel.TrioToken | None = None
        self._read_limiter = trio.CapacityLimiter(READ_CONNECTIONS)
        self._readers = _ReadPool(self._path)
        self._writer: sqlite3.Connection | None = None  # touched only by the writer thread
        self._next_seq = 1  # touched only by the writer thread
        self._max_seq = 0  # highest committed seq, read by the trio thread
        self._state = _NEW
        self._projects: dict[str, Project] = {}  # public and secret key -> Project (immutable)
        # project id -> events.project_num. Filled only with committed numbers, which never
        # change, from the writer and reader threads alike (a dict store is atomic).
        self._project_nums: dict[str, int] = {}
        self._default: Project | None = None
        self._histories = HistoryReads(self._read_histories)
        self._checkpoints_stop = threading.Event()
        self._checkpointer: threading.Thread | None = None

    @property
    def path(self) -> pathlib.Path:
        """The database file."""
        return self._path

    # lifecycle ----------------------------------------------------------------------------------
    async def run(self, *, task_status: object = trio.TASK_STATUS_IGNORED) -> None:
        # ``object`` matches Store.run; nursery.start always passes a TaskStatus.
        status = cast("trio.TaskStatus[None]", task_status)
        if self._state != _NEW:
            raise RuntimeError(f"store already {self._state}: run() may be called once")
        self._state = _CLOSING  # until opened: writes are refused, shutdown still cleans up
        self._token = trio.lowlevel.current_trio_token()
        threading.Thread(target=self._writer_thread, name="pulse-sqlite-writer", daemon=True).start()
        try:
            await self._on_writer(self._open)
            self._state = _RUNNING
            status.started()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._histories.run)
                await self._watch_deadlines()
        finally:
            await self._shutdown()

    async def ping(self) -> None:
        await self._read(_ping)

    def _open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            _configure_writer(conn, self._synchronous)
            sql.migrate(conn)
            # never below a deletion's floor: a deleted event's seq is not handed out again
            self._next_seq = max(conn.execute(sql.SELECT_MAX_SEQ).fetchone()[0], seq_floor(conn)) + 1
            self._default = _ensure_project(conn, DEFAULT_PROJECT)
        except BaseException:
            conn.close()
            raise
        self._writer = conn
        self._checkpointer = threading.Thread(target=self._checkpoint_thread, name="pulse-sqlite-checkpoints",
                                              daemon=True)
        self._checkpointer.start()
        self._max_seq = self._next_seq - 1
        self._remember(self._default)

    async def _shutdown(self) -> None:
        """Commit what was already handed over, fail the rest, close every connection."""
        self._state = _CLOSING
        with trio.move_on_after(SHUTDOWN_FLUSH_S) as scope:
            scope.shield = True
            await self._on_writer(_nothing)  # queued after every write handed over: all committed
        self._fail_in_flight("store closed before the write was committed")
        with trio.move_on_after(SHUTDOWN_CLOSE_S) as scope:
            scope.shield = True
            await self._on_writer(self._close)
        self._jobs.put(_STOP)
        self._state = _CLOSED

    def _checkpoint_thread(self) -> None:
        """Copy committed WAL frames back into the database, off the writer's path, until closed."""
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
            while not self._checkpoints_stop.wait(CHECKPOINT_INTERVAL_S):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:  # the next round tries again; the writer's own still runs
                    log.debug("background checkpoint of %s failed: %r", self._path, exc)
        finally:
            conn.close()

    def _close(self) -> None:
        self._checkpoints_stop.set()
        if self._checkpointer is not None:
            self._checkpointer.join(SHUTDOWN_CLOSE_S)
        self._readers.close()
        if self._writer is None:
            return
        try:
            self._writer.execute("PRAGMA optimize")  # refresh planner statistics where stale
        except sqlite3.Error:
            log.warning("PRAGMA optimize failed while closing %s", self._path, exc_info=True)
        finally:
            self._writer.close()  # the last connection out checkpoints and removes the WAL
            self._writer = None

    async def _write_with(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(connection, *args)`` on the writer thread, in queue order with the appends (the
        automation mixins' writes: storage/sqlite_triggers.py, _webhooks, _workflows, _approvals)."""
        self._require_running()
        return await self._on_writer(self._with_writer_connection, fn, args)

    def _with_writer_connection(self, fn: Callable[..., _T], args: tuple[Any, ...]) -> _T:
        if self._writer is None:
            raise StoreUnavailable("store is closed")
        return fn(self._writer, *args)

    # projects -----------------------------------------------------------------------------------
    async def create_project(self, name: str) -> Project:
        self._require_running()
        project: Project = await self._on_writer(self._insert_project, name)
        self._remember(project)
        return project

    def _insert_project(self, name: str) -> Project:
        if self._writer is None:
            raise StoreUnavailable("store is closed")
        try:
            return _insert_project(self._writer, name)
        except sqlite3.IntegrityError:
            raise ValueError(f"project {name!r} already exists") from None

    async def list_projects(self) -> list[Project]:
        return await self._read(_list_projects)

    async def project_by_key(self, key: str) -> Project | None:
        # Projects never change, so after the first lookup a key costs no thread hop. Unknown
        # keys are not remembered: a project created elsewhere must become visible.
        project = self._projects.get(key)
        if project is None:
            project = await self._read(lambda conn: _project_by_key(conn, key))
            if project is not None:
                self._remember(project)
        return project

    # the log: writes ----------------------------------------------------------------------------
    async def _submit(self, write: Write) -> None:
        """Put ``write`` on the writer thread's queue and wait for its group to commit."""
        self._require_running()
        if len(self._in_flight) >= WRITE_QUEUE_BATCHES:
            await self._wait_for_room()
        write.deadline = trio.current_time() + APPEND_TIMEOUT_S  # _watch_deadlines enforces it
        self._in_flight.append(write)
        self._jobs.put(write)
        await write.done.wait()
        if write.error is not None:
            raise StoreUnavailable(write.error)

    def queue_depth(self) -> int:
        """Writes (and writer jobs) handed over and not yet taken by the writer thread."""
        return self._jobs.qsize()

    async def _wait_for_room(self) -> None:
        with trio.move_on_after(APPEND_TIMEOUT_S):
            while len(self._in_flight) >= WRITE_QUEUE_BATCHES:
                if self._room is None:
                    self._room = trio.Event()
                await self._room.wait()
                self._require_running()
            return
        raise StoreUnavailable(f"write queue still full after {APPEND_TIMEOUT_S!r} s")

    async def _watch_deadlines(self) -> None:
        """Fail the writes not committed within APPEND_TIMEOUT_S: the oldest first, each at its
        deadline. Handed over in order with one timeout, they are due in the order they wait."""
        in_flight = self._in_flight
        while True:
            now = trio.current_time()
            while in_flight and (in_flight[0].done.is_set() or in_flight[0].deadline <= now):
                write = in_flight.popleft()
                if not write.done.is_set():
                    # Still queued: the writer thread skips it. Already in a group: it may commit
                    # later; clients retry with their client ids, which dedup.
                    write.abandoned = True
                    write.error = f"write not committed within {APPEND_TIMEOUT_S!r} s"
                    write.done.set()
            self._release()
            await trio.sleep_until(in_flight[0].deadline if in_flight else now + APPEND_TIMEOUT_S)

    def _release(self) -> None:
        """Forget the finished writes at the head of _in_flight; wake a writer waiting for room."""
        in_flight = self._in_flight
        while in_flight and in_flight[0].done.is_set():
            in_flight.popleft()
        if self._room is not None and len(in_flight) < WRITE_QUEUE_BATCHES:
            self._room.set()
            self._room = None

    async def _on_writer(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(*args)`` on the writer thread, after everything handed over before it."""
        call = _Call(fn, args)
        self._jobs.put(call)
        await call.done.wait()
        if call.error is not None:
            raise call.error
        return cast(_T, call.result)

    def _fail_in_flight(self, reason: str) -> None:
        for write in self._in_flight:
            if not write.done.is_set():
                write.abandoned = True
                write.error = reason
                write.done.set()
        self._release()

    # the writer thread --------------------------------------------------------------------------
    def _writer_thread(self) -> None:
        """Take everything queued; commit the writes as one group; run the calls in queue order."""
        jobs = self._jobs
        while True:
            batch = [jobs.get()]
            while True:
                try:
                    batch.append(jobs.get_nowait())
                except queue.Empty:
                    break
            group: list[Write] = []
            for job in batch:
                if type(job) is Write:
                    if not job.abandoned:  # failed at its deadline while it was queued
                        group.append(job)
                    continue
                if group:
                    self._commit(group)
                    group = []
                if job is _STOP:
                    return
                assert isinstance(job, _Call)
                try:
                    job.result = job.fn(*job.args)
                except BaseException as exc:  # handed back to the caller
                    job.error = exc
                self._to_trio(job.done.set)
            if group:
                self._commit(group)

    def _commit(self, group: list[Write]) -> None:
        try:
            outcomes = self._write_group(group)
        except Exception as exc:  # the writer survives; this group's callers get StoreUnavailable
            log.exception("group commit of %d writes failed", len(group))
            self._to_trio(self._committed, group, None, f"write failed: {exc!r}")
        else:
            self._to_trio(self._committed, group, outcomes, None)

    def _to_trio(self, fn: Callable[..., object], *args: Any) -> None:
        assert self._token is not None
        try:
            self._token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:  # trio is gone (a test that ended abruptly): nobody waits
            pass

    def _committed(self, group: list[Write], outcomes: list[list[AppendOutcome]] | None, error: str | None) -> None:
        """In the trio thread: hand every write of a group its outcomes (or the group's error)."""
        if outcomes is None:
            for write in group:
                if not write.done.is_set():
                    write.error = error
                    write.done.set()
        else:
            for write, outcome in zip(group, outcomes, strict=True):
                if not write.done.is_set():  # not failed at its deadline meanwhile
                    write.outcomes = outcome
                    write.done.set()
        self._release()

    def _write_group(self, group: list[Write]) -> list[list[AppendOutcome]]:
        """One transaction for the whole group (runs on the writer thread)."""
        conn = self._writer
        if conn is None:
            raise StoreUnavailable("store is closed")
        conn.execute("BEGIN IMMEDIATE")
        try:
            nums, new_nums = self._project_nums_of(conn, group)
            known = _known_client_ids(conn, group, nums)
            outcomes, rows, stored, next_seq = _plan_group(group, nums, known, self._next_seq)
            conn.executemany(sql.INSERT_EVENT, rows)
            agg.upsert(conn, stored)
            conn.executemany(sql.UPSERT_SNAPSHOT, [w.snapshot for w in group if w.snapshot is not None])
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._next_seq = next_seq
        self._max_seq = next_seq - 1  # an int store: atomic, and only ever moves forward
        self._project_nums.update(new_nums)
        return outcomes

    def _project_nums_of(
        self, conn: sqlite3.Connection, group: list[Write]
    ) -> tuple[dict[str, int], dict[str, int]]:
        """The project_num of every project in the group, and those numbered by this transaction
        (cached only once it commits)."""
        nums: dict[str, int] = {}
        new: dict[str, int] = {}
        for write in group:
            for ev in write.events:
                project = ev.project
                if project not in nums:
                    num = self._project_nums.get(project) or _lookup_project_num(conn, project)
                    if num is None:
                        num = new[project] = _insert_project_num(conn, project)
                    nums[project] = num
        return nums, new

    def _num(self, conn: sqlite3.Connection, project: str) -> int:
        """The project_num of ``project`` for a read; 0 (matching nothing) if it has no events."""
        num = self._project_nums.get(project)
        if num is None:
            num = _lookup_project_num(conn, project)
            if num is None:
                return 0
            self._project_nums[project] = num
        return num

    # the log: reads -----------------------------------------------------------------------------
    async def query_events(self, flt: EventFilter, *, limit: int, cursor: Cursor | None) -> EventPage:
        assert 1 <= limit <= MAX_PAGE, f"limit {limit!r} not clamped to 1..{MAX_PAGE}"
        return await self._read(
            lambda conn: sql.query_events(conn, self._num(conn, flt.project), flt, limit, cursor)
        )

    async def query_events_ascending(self, flt: EventFilter, *, limit: int, after: Cursor | None) -> list[Event]:
        assert 1 <= limit <= MAX_PAGE, f"limit {limit!r} not clamped to 1..{MAX_PAGE}"
        return await self._read(
            lambda conn: sql.query_events_ascending(conn, self._num(conn, flt.project), flt, limit, after)
        )

    async def query_events_descending(self, flt: EventFilter, *, limit: int, before: Cursor | None) -> list[Event]:
        assert 1 <= limit <= MAX_PAGE, f"limit {limit!r} not clamped to 1..{MAX_PAGE}"
        return await self._read(
            lambda conn: sql.query_events_descending(conn, self._num(conn, flt.project), flt, limit, before)
        )

    async def events_after(self, project: str, after_seq: int, *, limit: int) -> list[Event]:
        return await self._events(project, sql.SELECT_EVENTS_AFTER, after_seq, limit)

    async def session_events(self, project: str, session_id: str, after_seq: int) -> list[Event]:
        return await self._events(project, sql.SELECT_SESSION_EVENTS, session_id, after_seq)

    async def user_events(self, project: str, user_id: str, after_seq: int) -> list[Event]:
        return await self._events(project, sql.SELECT_USER_EVENTS, user_id, after_seq)

    async def _events(self, project: str, query: str, *params: object) -> list[Event]:
        def read(conn: sqlite3.Connection) -> list[Event]:
            rows = conn.execute(query, (self._num(conn, project), *params))
            return [sql.event_from_row(project, row) for row in rows]

        return await self._read(read)

    async def max_seq(self) -> int:
        # One writer means the highest committed seq is known here: no query needed.
        self._require_open()
        return self._max_seq

    # aggregates ---------------------------------------------------------------------------------
    async def count_events(self, project: str) -> int:
        return await self._read(lambda conn: int(conn.execute(sql.COUNT_EVENTS, (project,)).fetchone()[0]))

    async def service_names(self, project: str, *, name_unknown: bool = False) -> list[str]:
        return await self._read(lambda conn: agg.read_service_names(conn, project, name_unknown))

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
        plan = plan_range(since_ms, until_ms)
        return await self._read(
            lambda conn: agg.read_service_stats(conn, project, plan, service_name, top, name_unknown)
        )

    async def top_events(
        self, project: str, *, since_ms: int | None = None, until_ms: int | None = None, limit: int = 10
    ) -> list[EventCount]:
        plan = plan_range(since_ms, until_ms)
        return await self._read(lambda conn: agg.read_top_events(conn, project, plan, limit))

    async def per_day(
        self, project: str, *, since_ms: int | None = None, until_ms: int | None = None
    ) -> list[DayCount]:
        plan = plan_range(since_ms, until_ms)
        return await self._read(lambda conn: agg.read_per_day(conn, project, plan))

    async def minute_series(
        self, project: str, *, since_ms: int, until_ms: int, service_name: str | None = None
    ) -> list[MinuteRow]:
        lo, hi = since_ms // MINUTE_MS, until_ms // MINUTE_MS
        return await self._read(lambda conn: agg.read_minute_series(conn, project, lo, hi, service_name))

    async def service_series(
        self, project: str, services: list[str], *, since_ms: int, until_ms: int, bucket_minutes: int
    ) -> list[SeriesRow]:
        lo, hi = since_ms // MINUTE_MS, until_ms // MINUTE_MS
        return await self._read(
            lambda conn: agg.read_service_series(conn, project, services, lo, hi, max(1, bucket_minutes))
        )

    # server lifetimes ---------------------------------------------------------------------------
    async def record_lifetime(self, lifetime: Lifetime) -> None:
        self._require_running()  # (the writer thread is gone once the store closes)
        # One autocommitted statement on the writer thread, in queue order with the appends.
        await self._on_writer(self._upsert_lifetime, lifetime)

    def _upsert_lifetime(self, lifetime: Lifetime) -> None:
        if self._writer is None:
            raise StoreUnavailable("store is closed")
        self._writer.execute(sql.UPSERT_LIFETIME, msgspec.structs.astuple(lifetime))

    async def lifetimes(self, since_ms: int) -> LifetimeHistory:
        def read(conn: sqlite3.Connection) -> LifetimeHistory:
            first = conn.execute(sql.FIRST_START).fetchone()[0]
            rows = conn.execute(sql.SELECT_LIFETIMES, (since_ms,)).fetchall()
            return LifetimeHistory(first, [Lifetime(*row) for row in rows])

        return await self._read(read)

    # snapshots ----------------------------------------------------------------------------------
    async def load_snapshot(self, project: str, kind: str, key: str) -> Snapshot | None:
        row = await self._read(
            lambda conn: conn.execute(sql.SELECT_SNAPSHOT, (project, kind, key)).fetchone()
        )
        return None if row is None else Snapshot(state=row[0], upto_seq=row[1])

    async def load_history(self, project: str, kind: str, key: str) -> History:
        return await self._histories.load((project, kind, key))

    async def _read_histories(self, keys: list[HistoryKey]) -> dict[HistoryKey, History]:
        """A batch of histories in one thread hop (each key: its snapshot, then one index range)."""

        def read(conn: sqlite3.Connection) -> dict[HistoryKey, History]:
            found: dict[HistoryKey, History] = {}
            for project, kind, key in keys:
                row = conn.execute(sql.SELECT_SNAPSHOT, (project, kind, key)).fetchone()
                snapshot = None if row is None else Snapshot(state=row[0], upto_seq=row[1])
                events: list[Event] = []
                statement = sql.SELECT_HISTORY_EVENTS.get(kind)
                if statement is not None:
                    after = 0 if snapshot is None else snapshot.upto_seq
                    rows = conn.execute(statement, (self._num(conn, project), key, after))
                    events = [sql.event_from_row(project, r) for r in rows]
                found[(project, kind, key)] = History(snapshot, events)
            return found

        return await self._read(read)

    # plumbing -----------------------------------------------------------------------------------
    def _require_running(self) -> None:
        if self._state != _RUNNING:
            raise StoreUnavailable(f"store is {self._state}")

    def _require_open(self) -> None:
        # Reads stay possible while the final writes are flushed.
        if self._state not in (_RUNNING, _CLOSING) or self._writer is None:
            raise StoreUnavailable(f"store is {self._state}")

    async def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        self._require_open()
        try:
            return await trio.to_thread.run_sync(self._readers.run, fn, limiter=self._read_limiter)
        except sqlite3.ProgrammingError:
            raise  # a bug, not an outage
        except sqlite3.DatabaseError as exc:
            raise StoreUnavailable(f"read failed: {exc!r}") from None


def _nothing() -> None:
    """A writer-thread job that only marks a place in its queue."""


# Writer-thread helpers ----------------------------------------------------------------------------
def _configure_writer(conn: sqlite3.Connection, synchronous: str) -> None:
    (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
    if mode != "wal":
        raise StoreUnavailable(f"cannot enable WAL mode (journal mode stays {mode!r})")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
    conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB:d}")
    conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT:d}")
    conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES:d}")


def _lookup_project_num(conn: sqlite3.Connection, project: str) -> int | None:
    row = conn.execute(sql.SELECT_PROJECT_NUM, (project,)).fetchone()
    return None if row is None else int(row[0])


def _insert_project_num(conn: sqlite3.Connection, project: str) -> int:
    num = conn.execute(sql.INSERT_PROJECT_NUM, (project,)).lastrowid
    assert num is not None
    return num


def _known_client_ids(conn: sqlite3.Connection, group: list[Write], nums: dict[str, int]) -> Known:
    """The stored (id, seq) of every client id the group mentions, one query per project."""
    wanted: dict[str, list[str]] = {}
    for write in group:
        for ev in write.events:
            if ev.client_id is not None:
                wanted.setdefault(ev.project, []).append(ev.client_id)
    known: Known = {}
    for project, client_ids in wanted.items():
        ids_json = msgspec.json.encode(client_ids).decode()
        for client_id, event_id, seq in conn.execute(sql.SELECT_CLIENT_IDS, (ids_json, nums[project])):
            known[(project, client_id)] = (event_id, seq)
    return known


def _plan_group(
    group: list[Write], nums: dict[str, int], known: Known, seq: int
) -> tuple[list[list[AppendOutcome]], list[tuple[object, ...]], list[Event], int]:
    """Assign seqs in order and drop duplicates (stored before, or earlier in this group).

    The hot loop of ingestion: one row tuple and one outcome per event, nothing else.
    """
    outcomes: list[list[AppendOutcome]] = []
    rows: list[tuple[object, ...]] = []
    stored: list[Event] = []
    for write in group:
        out: list[AppendOutcome] = []
        for ev in write.events:
            client_id = ev.client_id
            if client_id is not None:
                key = (ev.project, client_id)
                original = known.get(key)
                if original is not None:
                    out.append(AppendOutcome(original[0], original[1], True))
                    continue
                known[key] = (ev.id, seq)
            rows.append(sql.event_row(seq, nums[ev.project], ev))
            stored.append(ev)
            out.append(AppendOutcome(ev.id, seq, False))
            seq += 1
        outcomes.append(out)
    return outcomes, rows, stored, seq




def _insert_project(conn: sqlite3.Connection, name: str) -> Project:
    project = new_project(name)
    conn.execute(sql.INSERT_PROJECT, msgspec.structs.astuple(project))
    return project


def _ensure_project(conn: sqlite3.Connection, name: str) -> Project:
    row = conn.execute(sql.SELECT_PROJECT_BY_NAME, (name,)).fetchone()
    return Project(*row) if row is not None else _insert_project(conn, name)


# Reader-thread helpers ----------------------------------------------------------------------------
def _ping(conn: sqlite3.Connection) -> None:
    conn.execute("SELECT 1").fetchone()


def _list_projects(conn: sqlite3.Connection) -> list[Project]:
    return [Project(*row) for row in conn.execute(sql.SELECT_PROJECTS)]


def _project_by_key(conn: sqlite3.Connection, key: str) -> Project | None:
    row = conn.execute(sql.SELECT_PROJECT_BY_KEY, (key,)).fetchone()
    return None if row is None else Project(*row)
