"""What only the PostgreSQL backend has: partitions, migrations, several nodes on one database,
and the bridge's promise that a cancelled caller never leaks a connection.

The shared contract is test_store.py (run for every backend); faults are test_postgres_faults.py.
"""

from __future__ import annotations

import trio_asyncio  # first: before anything imports asyncpg

# isort: split
import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

from protocol.record import AppendOutcome
from storage import postgres_schema
from storage.base import Snapshot, StoreUnavailable
from storage.pg_bridge import Database
from storage.postgres import PostgresStore

from .test_store import T0, make_event

MONTH_MS = 31 * 86_400_000
DAY_MS = 86_400_000
STEP_S = 10  # bound on anything a test waits for; passing tests take far less


@contextlib.asynccontextmanager
async def running(dsn: str, **options: Any) -> AsyncIterator[PostgresStore]:
    """A running store; the caller opens the trio-asyncio loop (several stores may share it)."""
    store = PostgresStore(dsn, **options)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        try:
            yield store
        finally:
            nursery.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def database(dsn: str) -> AsyncIterator[Database]:
    """A second pool on the same database, to look behind the store's back."""
    db = await Database.connect(dsn, size=2)
    try:
        yield db
    finally:
        await db.close(5)


async def fetch(db: Database, query: str, *args: object) -> list[Any]:
    return await db.run(lambda conn: conn.fetch(query, *args), time_limit_s=10)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# schema -------------------------------------------------------------------------------------------
async def test_events_land_in_monthly_partitions_or_the_default(postgres_dsn: str) -> None:
    now = now_ms()
    stamps = {
        "now": now,
        "t0": T0,  # 2024-10: inside the window, created on demand
        "epoch": 0,  # far outside the window: the default partition
        "future": now + 10 * 366 * 86_400_000,
    }
    async with trio_asyncio.open_loop(), running(postgres_dsn) as store, database(postgres_dsn) as db:
        project = (await store.default_project()).id
        out = await store.append([make_event(project, ts=ts, name=label) for label, ts in stamps.items()])
        assert not any(o.duplicate for o in out)
        rows = await fetch(db, "SELECT name, tableoid::regclass::text FROM events")
        where = {row[0]: row[1] for row in rows}
        assert where["now"] == postgres_schema.partition_name(postgres_schema.month_of(now))
        assert where["t0"] == "events_2024_10"
        assert where["epoch"] == where["future"] == "events_default"
        # A month of the window whose rows are already in the default stays there (its partition
        # cannot be made: those rows would violate it), and nothing is ever rejected. The row is
        # put there behind the store's back, as a partition that was "busy" earlier would have.
        current = postgres_schema.month_of(now)
        month = current - 30 if current - 30 != postgres_schema.month_of(T0) else current - 31
        early = postgres_schema.month_start_ms(month) + DAY_MS
        await fetch(
            db,
            "INSERT INTO events (seq, id, project, name, source, timestamp, received_at, flags, payload)"
            " VALUES (0, 'planted-id', $1, 'planted', 'test', $2, $2, 0, $3)",
            project, early, b"",
        )  # fmt: skip
        await store.append([make_event(project, ts=early + 1, name="old")])
        await store.append([make_event(project, ts=early + 2, name="older")])
        rows = await fetch(
            db, "SELECT name, tableoid::regclass::text FROM events WHERE name IN ('planted', 'old', 'older')"
        )
        assert sorted((row[0], row[1]) for row in rows) == [
            ("old", "events_default"), ("older", "events_default"), ("planted", "events_default")]  # fmt: skip
        partition = postgres_schema.partition_name(month)
        assert (await fetch(db, "SELECT to_regclass($1)::text", partition))[0][0] is None, partition
        assert await store.count_events(project) == 6  # the planted row is not the store's


async def test_migrations_are_recorded_and_applied_once(postgres_dsn: str) -> None:
    async with trio_asyncio.open_loop():
        # Three nodes starting at once: one applies the migrations, the others wait and find them.
        async with running(postgres_dsn) as a, running(postgres_dsn) as b, running(postgres_dsn) as c:
            assert {(await s.default_project()).id for s in (a, b, c)} == {(await a.default_project()).id}
        async with database(postgres_dsn) as db:
            rows = await fetch(db, "SELECT version FROM schema_migrations ORDER BY version")
            assert [row[0] for row in rows] == list(range(1, postgres_schema.SCHEMA_VERSION + 1))
            await fetch(db, "INSERT INTO schema_migrations (version) VALUES ($1)", postgres_schema.SCHEMA_VERSION + 1)
        store = PostgresStore(postgres_dsn)
        async with trio.open_nursery() as nursery:
            with pytest.raises(RuntimeError, match="newer than this server's"):
                await nursery.start(store.run)


# the group commit ---------------------------------------------------------------------------------
SLOW_INSERTS = """
CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(1);
    RETURN NEW;
END $$;
CREATE TRIGGER slow_insert BEFORE INSERT ON events FOR EACH ROW WHEN (NEW.name = 'slow')
    EXECUTE FUNCTION slow_insert();
"""


async def test_groups_commit_in_seq_order_on_one_node(postgres_dsn: str) -> None:
    """A later group (higher seqs) never commits before an earlier one, even with both in flight:
    a reader following events_after from the highest seq it saw never skips an event."""
    async with trio_asyncio.open_loop(), running(postgres_dsn) as store, database(postgres_dsn) as db:
        await db.run(lambda conn: conn.execute(SLOW_INSERTS), time_limit_s=10)
        project = (await store.default_project()).id
        slow: list[AppendOutcome] = []

        async def append_slow() -> None:
            slow.extend(await store.append([make_event(project, name="slow")]))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(append_slow)
            await trio.testing.wait_all_tasks_blocked()  # the writer took it: its group is first
            (fast,) = await store.append([make_event(project, name="fast")])
            # The fast group's COPY was done long before; its commit waited for the slow one's.
            visible = await store.events_after(project, 0, limit=10)
            assert [e.name for e in visible] == ["slow", "fast"]
        assert slow[0].seq < fast.seq


# several nodes ------------------------------------------------------------------------------------
async def test_two_nodes_dedup_and_aggregate_as_one(postgres_dsn: str) -> None:
    async with trio_asyncio.open_loop(), running(postgres_dsn) as a, running(postgres_dsn) as b:
        project = (await a.default_project()).id
        outcomes: list[AppendOutcome] = []

        async def appender(store: PostgresStore, n: int) -> None:
            for round_ in range(10):
                # Every node sends the same 5 client ids each round, plus events of its own.
                events = [make_event(project, client_id=f"shared-{round_}-{k}", service_name="web") for k in range(5)]
                events += [make_event(project, service_name="web") for _ in range(3)]
                outcomes.extend(await store.append(events))

        async with trio.open_nursery() as nursery:
            for n in range(8):
                nursery.start_soon(appender, a if n % 2 else b, n)
        originals = [o for o in outcomes if not o.duplicate]
        assert len(originals) == 10 * 5 + 8 * 10 * 3
        assert len({o.seq for o in originals}) == len(originals)  # unique across nodes
        by_id = {o.id: o.seq for o in originals}
        assert all(by_id[o.id] == o.seq for o in outcomes if o.duplicate)  # duplicates name the original
        for store in (a, b):
            assert await store.count_events(project) == len(originals)
            assert (await store.service_stats(project))[0].event_count == len(originals)
            assert await store.max_seq() == max(by_id.values())
        stored = await a.events_after(project, 0, limit=10_000)
        assert Counter(e.id for e in stored) == Counter(by_id.keys())  # each original once, nothing else


async def test_a_snapshot_never_replaces_a_newer_one(postgres_dsn: str) -> None:
    async with trio_asyncio.open_loop(), running(postgres_dsn) as a, running(postgres_dsn) as b:
        await a.save_snapshot("p", "session", "s", Snapshot(state=b"new", upto_seq=9))
        await b.save_snapshot("p", "session", "s", Snapshot(state=b"old", upto_seq=5))  # a late save
        assert await a.load_snapshot("p", "session", "s") == Snapshot(state=b"new", upto_seq=9)
        await b.save_snapshot("p", "session", "s", Snapshot(state=b"same", upto_seq=9))
        assert await b.load_snapshot("p", "session", "s") == Snapshot(state=b"same", upto_seq=9)
        async with trio.open_nursery() as nursery:  # one group: the most recent wins there too
            for seq in (12, 30, 20):
                nursery.start_soon(a.save_snapshot, "p", "user", "u", Snapshot(state=b"%d" % seq, upto_seq=seq))
        assert await b.load_snapshot("p", "user", "u") == Snapshot(state=b"30", upto_seq=30)


async def test_project_created_on_one_node_is_found_on_another(postgres_dsn: str) -> None:
    async with trio_asyncio.open_loop(), running(postgres_dsn) as a, running(postgres_dsn) as b:
        acme = await a.create_project("acme")
        assert await b.project_by_key(acme.secret_key) == acme
        with pytest.raises(ValueError, match="project 'acme' already exists"):
            await b.create_project("acme")


# the bridge ---------------------------------------------------------------------------------------
async def test_a_cancelled_unit_of_work_leaks_no_connection(postgres_dsn: str) -> None:
    async with trio_asyncio.open_loop(), database(postgres_dsn) as db, database(postgres_dsn) as observer:

        inserted = trio.Event()

        async def slow(conn: Any) -> None:
            await conn.execute("CREATE TABLE IF NOT EXISTS t (v int)")
            await conn.execute("INSERT INTO t VALUES (1)")
            inserted.set()
            await conn.fetchval("SELECT pg_sleep(5)")

        async def cancel_once_inserted(caller: trio.CancelScope) -> None:
            await inserted.wait()
            caller.cancel()

        for in_transaction in (True, False, True):
            inserted = trio.Event()
            with trio.CancelScope() as caller:  # the caller goes away after the INSERT, mid-unit
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(cancel_once_inserted, caller)
                    await db.run(slow, time_limit_s=10, transaction=in_transaction)
            assert caller.cancelled_caught
        with pytest.raises(StoreUnavailable, match="did not answer within 0.3 s"):
            await db.run(slow, time_limit_s=0.3, transaction=True)
        states = await fetch(
            observer,
            "SELECT state FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        assert "idle in transaction" not in {row[0] for row in states}
        assert not any(row[0] == "active" for row in states)
        # The rows of cancelled transactions were rolled back; the one without a transaction stayed.
        assert await db.run(lambda conn: conn.fetchval("SELECT count(*) FROM t"), time_limit_s=10) == 1
        # Both connections are back in the pool: two units run at once. Each holds its connection
        # until the other is running too, so with one connection short the first would wait alone.
        running_units = 0
        both_running = asyncio.Event()

        async def meet(conn: Any) -> None:
            nonlocal running_units
            assert await conn.fetchval("SELECT 1") == 1
            running_units += 1
            if running_units == 2:
                both_running.set()
            await asyncio.wait_for(both_running.wait(), STEP_S)

        with trio.fail_after(STEP_S):
            async with trio.open_nursery() as nursery:
                for _ in range(2):
                    nursery.start_soon(lambda: db.run(meet, time_limit_s=2 * STEP_S))
        assert running_units == 2


async def test_a_cancelled_append_caller_does_not_cancel_the_commit(postgres_dsn: str) -> None:
    async with trio_asyncio.open_loop(), running(postgres_dsn) as store:
        project = (await store.default_project()).id
        events = [make_event(project) for _ in range(2000)]
        caller = trio.CancelScope()

        async def append_then_go_away() -> None:
            with caller:
                await store.append(events)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(append_then_go_away)
            # append() blocks only once its write is in the writer's queue (a send that never
            # waits), and the writer blocks only on the database: everything blocked = handed over
            await trio.testing.wait_all_tasks_blocked()
            caller.cancel()
        assert caller.cancelled_caught, "append() returned before its caller went away"
        (after,) = await store.append([make_event(project)])  # queued behind it: it has landed
        stored = await store.events_after(project, 0, limit=10_000)
        assert len(stored) == 2001  # the whole group: a write handed over is committed, caller or not
        assert stored[-1].seq == after.seq
