"""The PostgreSQL store when the server goes away: bounded failures, no false acknowledgements,
and recovery by itself when the server is back (same store instance, same process).
"""

from __future__ import annotations

import trio_asyncio  # first: before anything imports asyncpg

# isort: split
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import trio
import trio.testing

from storage.base import StoreError, StoreUnavailable
from storage.pg_bridge import ROLLBACK_TIMEOUT_S
from storage.postgres import (
    APPEND_TIMEOUT_S,
    COMMIT_TIMEOUT_S,
    SHUTDOWN_CLOSE_S,
    SHUTDOWN_FLUSH_S,
    PostgresStore,
)
from tests.services import service_unavailable
from tests.services.postgres import DATABASE_URL_ENV, PostgresServer

from .test_postgres import running
from .test_store import make_event

STEP_S = 30  # each phase of a test (generous: a shared machine)
SLACK_S = 2.0  # scheduling slack on top of the store's own deadlines


@pytest.fixture
def restartable_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    if not postgres_server.restartable:
        service_unavailable(f"needs a private PostgreSQL server ({DATABASE_URL_ENV} is set)")
    with postgres_server.database() as dsn:
        yield dsn


async def test_appends_through_a_server_restart(postgres_server: PostgresServer, restartable_dsn: str) -> None:
    acked: dict[str, int] = {}  # event id -> seq, for every append that returned
    refused: list[float] = []  # how long each append that raised took
    refused_during_outage = trio.Event()
    down = False  # between a completed stop() and the start of start()
    acked_while_down: list[str] = []
    acked_after_restart = trio.Event()
    warmed_up = trio.Event()  # 2000 events acknowledged before the outage
    restarted = False

    async def appender(store: PostgresStore, project: str, stop: trio.Event) -> None:
        while not stop.is_set():
            events = [make_event(project) for _ in range(20)]  # ids unique in this process
            was_down = down
            started = time.monotonic()
            try:
                outcomes = await store.append(events)
            except StoreUnavailable:
                refused.append(time.monotonic() - started)
                if down:
                    refused_during_outage.set()
                await trio.sleep(0.05)  # a client's retry delay
                continue
            if was_down and down:
                acked_while_down.extend(o.id for o in outcomes)
            acked.update((o.id, o.seq) for o in outcomes)
            if len(acked) >= 2000:
                warmed_up.set()
            if restarted:
                acked_after_restart.set()

    async with trio_asyncio.open_loop(), running(restartable_dsn) as store:
        project = (await store.default_project()).id
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(appender, store, project, stop)
            with trio.fail_after(STEP_S):
                await warmed_up.wait()
            await trio.to_thread.run_sync(postgres_server.stop)
            down = True
            with trio.fail_after(STEP_S):
                await refused_during_outage.wait()
            with pytest.raises(StoreError):
                await store.ping()
            with pytest.raises(StoreError):
                await store.events_after(project, 0, limit=10)
            down = False
            await trio.to_thread.run_sync(postgres_server.start)
            restarted = True
            with trio.fail_after(STEP_S):
                await acked_after_restart.wait()
            stop.set()
        await store.ping()
        stored = Counter(e.id for e in await store.events_after(project, 0, limit=10**7))
        seqs = {e.id: e.seq for e in await store.events_after(project, 0, limit=10**7)}
    assert not acked_while_down, "acknowledged while the server was down"
    assert refused and max(refused) < APPEND_TIMEOUT_S + SLACK_S
    assert {event_id: stored[event_id] for event_id in acked} == dict.fromkeys(acked, 1)
    assert {event_id: seqs[event_id] for event_id in acked} == acked
    assert max(stored.values()) == 1  # refused appends may have landed (commit in doubt), once


async def test_a_hung_server_fails_appends_and_reads_within_deadlines(
    postgres_server: PostgresServer, restartable_dsn: str
) -> None:
    async with trio_asyncio.open_loop(), running(restartable_dsn) as store:
        project = (await store.default_project()).id
        await store.append([make_event(project)])
        postgres_server.pause()
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await store.append([make_event(project)])
            assert time.monotonic() - started < APPEND_TIMEOUT_S + SLACK_S
            with trio.fail_after(15), pytest.raises(StoreError):
                await store.ping()
        finally:
            postgres_server.resume()
        with trio.fail_after(STEP_S):
            while True:  # the first append after the pause may still meet a dying connection
                try:
                    (ok,) = await store.append([make_event(project)])
                    break
                except StoreUnavailable:
                    await trio.sleep(0.1)
        assert (await store.events_after(project, ok.seq - 1, limit=10))[0].seq == ok.seq


async def test_shutdown_with_a_hung_server_is_bounded(postgres_server: PostgresServer, restartable_dsn: str) -> None:
    async with trio_asyncio.open_loop():
        started = 0.0
        try:
            async with running(restartable_dsn) as store:
                project = (await store.default_project()).id
                postgres_server.pause()
                async with trio.open_nursery() as nursery:
                    for _ in range(5):
                        nursery.start_soon(_append_ignoring_failure, store, project)
                    await trio.testing.wait_all_tasks_blocked()  # the writer holds their group
                    started = time.monotonic()
                    nursery.cancel_scope.cancel()
            # The group in flight meets its deadline, the flush and the close theirs.
            bound = COMMIT_TIMEOUT_S + SHUTDOWN_FLUSH_S + SHUTDOWN_CLOSE_S + 2 * ROLLBACK_TIMEOUT_S
            assert time.monotonic() - started < bound + SLACK_S
        finally:
            postgres_server.resume()


async def _append_ignoring_failure(store: PostgresStore, project: str) -> None:
    try:
        await store.append([make_event(project)])
    except StoreUnavailable:
        pass


async def test_a_server_down_at_start_fails_run() -> None:
    store = PostgresStore("postgresql://postgres@127.0.0.1:1/nothing")  # nothing listens on port 1
    async with trio_asyncio.open_loop():
        async with trio.open_nursery() as nursery:
            with trio.fail_after(STEP_S), pytest.raises(StoreUnavailable, match="cannot open the store"):
                await nursery.start(store.run)
    with pytest.raises(StoreUnavailable):
        await store.append([make_event("prj_x")])
