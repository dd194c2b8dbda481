"""The SQLite writer: one long-lived thread, group commit, each write's deadline kept by a watchdog
(no cancel scope per write), and the shutdown flush. SQLite only (the shared suite is test_store)."""

from __future__ import annotations

import math
import pathlib
import threading
from collections.abc import AsyncIterator

import msgspec
import pytest
import trio
import trio.testing
from trio.testing import MockClock

from protocol.record import SOURCE_BEHAVIORAL, Event
from storage.base import StoreUnavailable
from storage.sqlite import APPEND_TIMEOUT_S, WRITE_QUEUE_BATCHES, SqliteStore


def event(project: str, n: int) -> Event:
    return Event(
        id=f"evt_w{n}", project=project, name="tick", source=SOURCE_BEHAVIORAL, timestamp=1_000 + n,
        received_at=1_000 + n, payload=msgspec.Raw(b"{}"), session_id="s1",
    )  # fmt: skip


async def block_writer(store: SqliteStore, nursery: trio.Nursery) -> threading.Event:
    """Keep the writer thread busy (in a job of its own) until the returned gate is set."""
    entered, gate = threading.Event(), threading.Event()

    def busy() -> None:
        entered.set()
        gate.wait()

    nursery.start_soon(store._on_writer, busy)
    with trio.fail_after(10):
        while not entered.is_set():  # noqa: ASYNC110 (a thread's progress has no trio event)
            await trio.sleep(0.001)
    return gate


@pytest.fixture
async def store(tmp_path: pathlib.Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "data", synchronous="NORMAL")
    async with trio.open_nursery() as nursery:
        await nursery.start(opened.run)
        yield opened
        nursery.cancel_scope.cancel()


async def test_one_named_writer_thread_commits_every_group(store: SqliteStore) -> None:
    project = (await store.default_project()).id
    first = await store._on_writer(threading.get_ident)
    await store.append([event(project, 1)])
    await store.create_project("second")
    assert await store._on_writer(threading.get_ident) == first
    names = [t.name for t in threading.enumerate() if t.ident == first]
    assert names == ["pulse-sqlite-writer"]


async def test_writes_handed_over_while_the_writer_is_busy_commit_as_one_group(store: SqliteStore) -> None:
    project = (await store.default_project()).id
    groups: list[int] = []
    write_group = store._write_group

    def counting(group: list) -> list:  # type: ignore[type-arg]
        groups.append(len(group))
        return write_group(group)

    store._write_group = counting  # type: ignore[method-assign]
    seqs: list[int] = []

    async def append(n: int) -> None:
        (outcome,) = await store.append([event(project, n)])
        seqs.append(outcome.seq)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            gate = await block_writer(store, nursery)
            for n in range(20):
                nursery.start_soon(append, n)
            await trio.testing.wait_all_tasks_blocked()
            assert store.queue_depth() == 20  # the health route's "storeWriter" queue
            gate.set()
    assert groups == [20] and store.queue_depth() == 0
    assert sorted(seqs) == list(range(1, 21))
    assert await store.count_events(project) == 20


async def test_a_write_not_committed_in_time_fails_at_its_deadline_and_is_skipped(
    autojump_clock: MockClock, tmp_path: pathlib.Path
) -> None:
    store = SqliteStore(tmp_path / "data", synchronous="NORMAL")
    gate = threading.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        project = (await store.default_project()).id
        nursery.start_soon(store._on_writer, gate.wait)
        await trio.sleep(7)
        begin = trio.current_time()
        with pytest.raises(StoreUnavailable, match="not committed within"):
            await store.append([event(project, 1)])
        assert trio.current_time() == begin + APPEND_TIMEOUT_S
        autojump_clock.autojump_threshold = math.inf  # from here on the thread works in real time
        gate.set()  # the writer thread gets to the write only now: it skips it
        (ok,) = await store.append([event(project, 2)])
        assert await store.count_events(project) == 1
        assert await store.max_seq() == ok.seq
        nursery.cancel_scope.cancel()


async def test_a_full_write_queue_makes_appends_wait_for_room(store: SqliteStore) -> None:
    project = (await store.default_project()).id
    done: list[int] = []

    async def append(n: int) -> None:
        await store.append([event(project, n)])
        done.append(n)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            gate = await block_writer(store, nursery)
            for n in range(WRITE_QUEUE_BATCHES + 3):
                nursery.start_soon(append, n)
            await trio.testing.wait_all_tasks_blocked()
            assert len(store._in_flight) == WRITE_QUEUE_BATCHES  # three wait for room
            gate.set()
    assert sorted(done) == list(range(WRITE_QUEUE_BATCHES + 3))
    assert await store.count_events(project) == WRITE_QUEUE_BATCHES + 3


async def test_appends_after_shutdown_are_refused_and_the_thread_ends(tmp_path: pathlib.Path) -> None:
    store = SqliteStore(tmp_path / "data")
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        project = (await store.default_project()).id
        writer = await store._on_writer(threading.current_thread)
        nursery.cancel_scope.cancel()
    with pytest.raises(StoreUnavailable):
        await store.append([event(project, 1)])
    with trio.fail_after(5):
        while writer.is_alive():  # noqa: ASYNC110 (a thread's end has no trio event)
            await trio.sleep(0.01)
