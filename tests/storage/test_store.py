"""The Store contract, checked against a real database (see conftest.BACKENDS)."""

from __future__ import annotations

import contextlib
import datetime
import itertools
import os
import pathlib
import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterable

import msgspec
import pytest
import trio
import trio.testing

from protocol.record import SOURCE_BEHAVIORAL, SOURCE_EVENTS, AppendOutcome, Event
from storage.base import (
    Cursor,
    DayCount,
    EventCount,
    EventFilter,
    History,
    MinuteRow,
    ServiceAggregate,
    Snapshot,
    Store,
    StoreUnavailable,
)

from .conftest import StoreOpener, make_store

ROOT = pathlib.Path(__file__).resolve().parents[2]
MINUTE = 60_000
DAY = 86_400_000
T0 = 20_000 * DAY  # 2024-10-04T00:00:00Z, a day boundary
_ids = itertools.count(1)


def make_event(project: str, *, name: str = "click", ts: int = T0 + 1_000, **fields: object) -> Event:
    n = next(_ids)
    payload = msgspec.json.encode({"n": n, "name": name})
    return Event(
        id=f"evt_{n}", project=project, name=name, source=SOURCE_EVENTS, timestamp=ts,
        received_at=ts + 5, payload=msgspec.Raw(payload), **fields,  # type: ignore[arg-type]
    )  # fmt: skip


def stored(ev: Event, seq: int) -> Event:
    return msgspec.structs.replace(ev, seq=seq)


async def project_id(store: Store) -> str:
    return (await store.default_project()).id


async def all_events(store: Store, project: str) -> list[Event]:
    return await store.events_after(project, 0, limit=1_000_000)


# appends ------------------------------------------------------------------------------------------
async def test_empty_store_has_max_seq_zero_and_answers_ping(store: Store) -> None:
    assert await store.max_seq() == 0
    await store.ping()


async def test_append_assigns_increasing_seqs_and_keeps_ids(store: Store) -> None:
    project = await project_id(store)
    first = [make_event(project) for _ in range(3)]
    second = [make_event(project) for _ in range(2)]
    out1 = await store.append(first)
    out2 = await store.append(second)
    assert [o.id for o in out1 + out2] == [e.id for e in first + second]
    seqs = [o.seq for o in out1 + out2]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5 and seqs[0] >= 1
    assert not any(o.duplicate for o in out1 + out2)
    assert await store.max_seq() == seqs[-1]
    assert await store.append([]) == []


async def test_events_read_back_identical(store: Store) -> None:
    project = await project_id(store)
    full = Event(
        id="evt_full", project=project, name="checkout", source=SOURCE_BEHAVIORAL, timestamp=T0 + 7,
        received_at=T0 + 9, payload=msgspec.Raw(b'{"a": [1, 2.5, "\xc3\xa9"], "b": null}'),
        user_id="u1", session_id="s1", service_name="pay", correlation_id="c1", device_type="mobile",
        status_code=502, response_time_ms=12.75, client_id="cid-1", flags=3,
    )  # fmt: skip
    bare = make_event(project)
    outcomes = await store.append([full, bare])
    events = await all_events(store, project)
    assert events == [stored(full, outcomes[0].seq), stored(bare, outcomes[1].seq)]
    assert bytes(events[0].payload) == bytes(full.payload)


async def test_dedup_within_a_batch(store: Store) -> None:
    project = await project_id(store)
    a, b, a_again = (make_event(project, client_id=c) for c in ("a", "b", "a"))
    out = await store.append([a, b, a_again])
    assert out[2].duplicate and (out[2].id, out[2].seq) == (a.id, out[0].seq)
    assert [o.duplicate for o in out[:2]] == [False, False]
    assert [e.id for e in await all_events(store, project)] == [a.id, b.id]
    assert await store.count_events(project) == 2


async def test_dedup_across_batches_and_only_by_client_id(store: Store) -> None:
    project = await project_id(store)
    original = make_event(project, client_id="x")
    (first,) = await store.append([original])
    out = await store.append([make_event(project, client_id="x"), make_event(project), make_event(project)])
    assert out[0] == AppendOutcome(original.id, first.seq, True)
    assert not out[1].duplicate and not out[2].duplicate  # no client id: never deduped
    assert await store.count_events(project) == 3


async def test_dedup_is_per_project(store: Store) -> None:
    other = await store.create_project("other")
    project = await project_id(store)
    out = await store.append([make_event(project, client_id="same"), make_event(other.id, client_id="same")])
    assert not any(o.duplicate for o in out)


async def test_dedup_across_concurrent_appends(store: Store) -> None:
    project = await project_id(store)
    shared: list[AppendOutcome] = []

    async def append_one() -> None:
        outcomes = await store.append([make_event(project, client_id="shared"), make_event(project)])
        shared.append(outcomes[0])

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(append_one)
    originals = [o for o in shared if not o.duplicate]
    assert len(originals) == 1
    assert {(o.id, o.seq) for o in shared} == {(originals[0].id, originals[0].seq)}
    assert await store.count_events(project) == 21


async def test_concurrent_appends_are_all_committed(store: Store) -> None:
    project = await project_id(store)
    seqs: list[int] = []

    async def appender() -> None:
        for _ in range(4):
            outcomes = await store.append([make_event(project) for _ in range(5)])
            seqs.extend(o.seq for o in outcomes)

    async with trio.open_nursery() as nursery:
        for _ in range(50):
            nursery.start_soon(appender)
    assert len(seqs) == len(set(seqs)) == 1000
    assert await store.max_seq() == max(seqs)
    assert await store.count_events(project) == 1000
    assert sorted(e.seq for e in await all_events(store, project)) == sorted(seqs)


async def test_a_failing_group_fails_its_callers_and_the_store_goes_on(store: Store) -> None:
    project = await project_id(store)
    with pytest.raises(StoreUnavailable):
        await store.append([make_event(project, ts=2**70)])  # no 64-bit column holds it
    (ok,) = await store.append([make_event(project)])
    assert [e.seq for e in await all_events(store, project)] == [ok.seq]


async def test_name_filter_folds_non_ascii_case(store: Store) -> None:
    project = await project_id(store)
    await store.append([make_event(project, name=n) for n in ("ÜBERWEISUNG-done", "überweisung", "uber")])
    page = await store.query_events(
        EventFilter(project=project, name_contains="Überw"), limit=10, cursor=None
    )
    assert sorted(e.name for e in page.events) == ["ÜBERWEISUNG-done", "überweisung"]


# lifecycle and durability -------------------------------------------------------------------------
async def test_data_and_dedup_survive_a_restart(open_store: StoreOpener) -> None:
    async with open_store() as store:
        project = await project_id(store)
        events = [make_event(project, client_id="k1"), make_event(project, user_id="u")]
        outcomes = await store.append(events)
    async with open_store() as store:
        assert await project_id(store) == project
        assert await store.max_seq() == outcomes[-1].seq
        assert await all_events(store, project) == [
            stored(e, o.seq) for e, o in zip(events, outcomes, strict=True)
        ]
        (again,) = await store.append([make_event(project, client_id="k1")])
        assert (again.id, again.seq, again.duplicate) == (events[0].id, outcomes[0].seq, True)
        (fresh,) = await store.append([make_event(project)])
        assert fresh.seq > outcomes[-1].seq
        assert await store.count_events(project) == 3


async def test_writes_handed_over_before_shutdown_are_committed(
    open_store: StoreOpener, backend: str
) -> None:
    if backend != "sqlite":
        pytest.skip("blocks the embedded writer thread to keep writes queued")
    results: list[object] = []

    async def appender(store: Store, project: str) -> None:
        try:
            results.append(await store.append([make_event(project)]))
        except StoreUnavailable as exc:
            results.append(exc)

    async def release_when_all_blocked(gate: threading.Event) -> None:
        await trio.testing.wait_all_tasks_blocked()  # the store is cancelled by now
        gate.set()

    gate = threading.Event()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            async with open_store() as store:
                project = await project_id(store)
                # the writer thread runs this job and waits: everything handed over after it queues
                nursery.start_soon(store._on_writer, gate.wait)  # type: ignore[attr-defined]
                await trio.testing.wait_all_tasks_blocked()
                for _ in range(30):
                    nursery.start_soon(appender, store, project)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(release_when_all_blocked, gate)
            # Leaving open_store cancelled run() while 30 writes were queued behind a busy writer:
            # all of them must be committed.
    assert len(results) == 30
    assert all(isinstance(r, list) for r in results), results
    async with open_store() as store:
        assert await store.count_events(project) == 30


async def test_closed_store_refuses_work(
    open_store: StoreOpener, backend: str, data_dir: pathlib.Path
) -> None:
    never_run = make_store(backend, data_dir)
    with pytest.raises(StoreUnavailable):
        await never_run.append([make_event("prj_x")])
    async with open_store() as store:
        project = await project_id(store)
    with pytest.raises(StoreUnavailable):
        await store.append([make_event(project)])
    with pytest.raises(StoreUnavailable):
        await store.ping()
    with pytest.raises(StoreUnavailable):
        await store.events_after(project, 0, limit=10)
    with trio.fail_after(5):  # answered at once, not left waiting for a loader that is gone
        with pytest.raises(StoreUnavailable):
            await store.load_history(project, "session", "s1")


CRASH_SCRIPT = """
import pathlib, sys, trio, msgspec
from protocol.record import Event
from storage.sqlite import SqliteStore

async def main():
    store = SqliteStore(pathlib.Path(sys.argv[1]))
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        project = (await store.default_project()).id
        for batch in range(1_000_000):
            events = [
                Event(id=f"evt_{batch}_{i}", project=project, name="tick", source="events",
                      timestamp=1_000 + batch, received_at=1_000 + batch, payload=msgspec.Raw(b"{}"))
                for i in range(20)
            ]
            outcomes = await store.append(events)
            print(" ".join(f"{o.id}:{o.seq}" for o in outcomes), flush=True)

trio.run(main)
"""


async def test_acknowledged_appends_survive_sigkill(
    open_store: StoreOpener, backend: str, data_dir: pathlib.Path
) -> None:
    if backend != "sqlite":
        pytest.skip("the crash script drives the embedded backend")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", CRASH_SCRIPT, str(data_dir)]
    proc = await trio.lowlevel.open_process(cmd, stdout=subprocess.PIPE, cwd=ROOT, env=env)
    assert proc.stdout is not None
    acked: dict[str, int] = {}
    buffer = b""
    try:
        with trio.fail_after(60):
            while len(acked) < 2_000:
                chunk = await proc.stdout.receive_some()
                assert chunk, f"writer exited early with code {proc.poll()!r}"
                *lines, buffer = (buffer + chunk).split(b"\n")
                for line in lines:
                    for item in line.decode().split():
                        event_id, seq = item.split(":")
                        acked[event_id] = int(seq)
    finally:
        proc.send_signal(signal.SIGKILL)  # mid-run: it is appending as fast as it can
        with trio.move_on_after(10):
            await proc.wait()
        await proc.stdout.aclose()
    assert proc.returncode == -signal.SIGKILL
    async with open_store() as store:
        found = {e.id: e.seq for e in await all_events(store, await project_id(store))}
    assert {k: found.get(k) for k in acked} == acked


# queries ------------------------------------------------------------------------------------------
def expected_page(events: Iterable[Event], flt: EventFilter) -> list[str]:
    def matches(e: Event) -> bool:
        return (
            e.project == flt.project
            and (flt.since_ms is None or e.timestamp >= flt.since_ms)
            and (flt.until_ms is None or e.timestamp <= flt.until_ms)
            and (flt.name_contains is None or flt.name_contains.lower() in e.name.lower())
            and all(
                want is None or getattr(e, field) == want
                for field, want in (
                    ("name", flt.event_name),
                    ("service_name", flt.service_name),
                    ("user_id", flt.user_id),
                    ("session_id", flt.session_id),
                    ("correlation_id", flt.correlation_id),
                )
            )
        )

    chosen = sorted((e for e in events if matches(e)), key=lambda e: (e.timestamp, e.seq), reverse=True)
    return [e.id for e in chosen]


async def seeded_events(
    store: Store, project: str, count: int, *, seed: int = 7, distinct_stamps: int = 3 * 86_400
) -> list[Event]:
    rng = random.Random(seed)
    events = [
        make_event(
            project,
            name=rng.choice(["Page-View", "page_load", "Checkout", "api-call", "LOGIN"]),
            ts=T0 + rng.randrange(distinct_stamps) * (3 * DAY // distinct_stamps),
            service_name=rng.choice([None, "web", "pay", "auth"]),
            user_id=rng.choice([None, "u1", "u2", "u3"]),
            session_id=rng.choice([None, "s1", "s2"]),
            correlation_id=rng.choice([None, "c1", "c2", "c3", "c4"]),
        )
        for _ in range(count)
    ]
    result = []
    for start in range(0, count, 500):
        batch = events[start : start + 500]
        outcomes = await store.append(batch)
        result += [stored(e, o.seq) for e, o in zip(batch, outcomes, strict=True)]
    return result


QUERY_FILTERS = [
    {},
    {"since_ms": T0 + DAY},
    {"until_ms": T0 + DAY},
    {"since_ms": T0 + DAY // 2, "until_ms": T0 + 2 * DAY},
    {"name_contains": "PAGE"},
    {"name_contains": "-"},
    {"name_contains": "_"},  # a LIKE wildcard elsewhere: here only a literal underscore
    {"name_contains": "nothing"},
    {"event_name": "Checkout"},
    {"service_name": "pay"},
    {"user_id": "u2"},
    {"session_id": "s1"},
    {"correlation_id": "c3"},
    {"service_name": "web", "user_id": "u1", "name_contains": "page", "since_ms": T0 + DAY // 3},
    {"session_id": "s2", "correlation_id": "c1", "until_ms": T0 + 2 * DAY},
]


@pytest.mark.parametrize("fields", QUERY_FILTERS, ids=lambda f: ",".join(f) or "none")
async def test_query_filters(store: Store, fields: dict[str, object]) -> None:
    project = await project_id(store)
    events = await seeded_events(store, project, 600)
    noise = (await store.create_project("noise")).id
    await store.append([make_event(noise, service_name="pay", user_id="u2") for _ in range(5)])
    flt = EventFilter(project=project, **fields)  # type: ignore[arg-type]
    page = await store.query_events(flt, limit=1000, cursor=None)
    want = expected_page(events, flt)
    assert [e.id for e in page.events] == want
    assert page.filtered == len(want)
    assert page.next_cursor is None


@pytest.mark.parametrize(
    ("fields", "limit"), [({}, 100), ({}, 333), ({"service_name": "pay"}, 47), ({"session_id": "s2"}, 10)]
)
async def test_pagination_visits_every_event_once(
    store: Store, fields: dict[str, object], limit: int
) -> None:
    project = await project_id(store)
    events = await seeded_events(store, project, 2500, seed=11, distinct_stamps=40)  # ties: by seq
    flt = EventFilter(project=project, **fields)  # type: ignore[arg-type]
    want = expected_page(events, flt)
    seen: list[str] = []
    cursor: Cursor | None = None
    for _ in range(len(want) // limit + 1):
        page = await store.query_events(flt, limit=limit, cursor=cursor)
        assert page.filtered == len(want)
        seen += [e.id for e in page.events]
        cursor = page.next_cursor
        if cursor is None:
            break
        assert len(page.events) == limit
        assert cursor == Cursor(page.events[-1].timestamp, page.events[-1].seq)
    assert cursor is None
    assert seen == want


@pytest.mark.parametrize(
    ("fields", "limit"),
    [
        ({}, 1000),
        ({}, 97),
        ({"service_name": "pay"}, 47),
        ({"session_id": "s2"}, 10),
        ({"correlation_id": "c1", "since_ms": T0 + DAY // 2}, 13),
        ({"name_contains": "page", "until_ms": T0 + 2 * DAY}, 50),
    ],
    ids=lambda v: ",".join(v) or "none" if isinstance(v, dict) else str(v),
)
async def test_ascending_scan_visits_every_event_once_oldest_first(
    store: Store, fields: dict[str, object], limit: int
) -> None:
    """The export's scan: the same matches as query_events, in (timestamp, seq) order, ties by seq."""
    project = await project_id(store)
    events = await seeded_events(store, project, 2500, seed=5, distinct_stamps=40)
    noise = (await store.create_project("noise")).id
    await store.append([make_event(noise, service_name="pay", session_id="s2") for _ in range(5)])
    flt = EventFilter(project=project, **fields)  # type: ignore[arg-type]
    want = expected_page(events, flt)[::-1]
    seen: list[str] = []
    after: Cursor | None = None
    for _ in range(len(want) // limit + 2):
        page = await store.query_events_ascending(flt, limit=limit, after=after)
        seen += [e.id for e in page]
        if len(page) < limit:
            break
        after = Cursor(page[-1].timestamp, page[-1].seq)
    assert seen == want
    by_id = {e.id: e for e in events}
    assert page == [by_id[i] for i in want[len(want) - len(page) :]]  # whole events read back


async def test_ascending_scan_of_nothing(store: Store) -> None:
    project = await project_id(store)
    assert await store.query_events_ascending(EventFilter(project=project), limit=10, after=None) == []
    await store.append([make_event(project, ts=T0)])
    flt = EventFilter(project=project, since_ms=T0 + 1)
    assert await store.query_events_ascending(flt, limit=10, after=None) == []
    assert await store.query_events_ascending(EventFilter(project=project), limit=10, after=Cursor(T0, 10**9)) == []


async def test_events_after_and_replays(store: Store) -> None:
    project = await project_id(store)
    other = (await store.create_project("elsewhere")).id
    mine = [make_event(project, user_id=f"u{i % 2}", session_id=f"s{i % 3}") for i in range(12)]
    out = await store.append(mine + [make_event(other, user_id="u0", session_id="s0")])
    seqs = [o.seq for o in out[:12]]
    after = await store.events_after(project, seqs[3], limit=5)
    assert [e.seq for e in after] == seqs[4:9]
    assert await store.events_after(project, seqs[-1], limit=5) == []
    session = await store.session_events(project, "s1", seqs[1])
    assert [e.seq for e in session] == [s for i, s in enumerate(seqs) if i % 3 == 1 and s > seqs[1]]
    user = await store.user_events(project, "u0", 0)
    assert [e.seq for e in user] == [s for i, s in enumerate(seqs) if i % 2 == 0]
    assert await store.user_events(project, "nobody", 0) == []


async def test_actor_histories_read_together(store: Store) -> None:
    """load_history answers many concurrent activations (batched into a few reads) with each key's
    own snapshot and only its events after the snapshot, whatever the batch mixes."""
    project = await project_id(store)
    other = (await store.create_project("elsewhere")).id
    mine = [make_event(project, user_id=f"u{i % 2}", session_id=f"s{i % 3}") for i in range(30)]
    out = await store.append(mine + [make_event(other, user_id="u0", session_id="s0")])
    seqs = [o.seq for o in out]
    await store.save_snapshot(project, "session", "s1", Snapshot(state=b"s1-state", upto_seq=seqs[10]))
    await store.save_snapshot(project, "user", "u1", Snapshot(state=b"u1-state", upto_seq=seqs[-2]))
    await store.save_snapshot(project, "session", "nobody", Snapshot(state=b"empty", upto_seq=3))

    def want(kind: str, key: str, after: int) -> list[int]:
        field = "session_id" if kind == "session" else "user_id"
        return [seq for ev, seq in zip(mine, seqs, strict=False) if getattr(ev, field) == key and seq > after]

    asks = [(project, "session", f"s{i}") for i in range(3)] + [(project, "user", "u0"), (project, "user", "u1"),
            (project, "session", "nobody"), (project, "user", "never"), (other, "session", "s0"),
            (project, "session", "s1")]  # fmt: skip
    answers: dict[int, History] = {}

    async def ask(i: int) -> None:
        answers[i] = await store.load_history(*asks[i])

    async with trio.open_nursery() as nursery:
        for i in range(len(asks)):
            nursery.start_soon(ask, i)
    by_key = {asks[i]: answers[i] for i in range(len(asks))}
    s0, s1, s2 = (by_key[(project, "session", f"s{i}")] for i in range(3))
    assert (s0.snapshot, [e.seq for e in s0.events]) == (None, want("session", "s0", 0))
    assert s1.snapshot == Snapshot(state=b"s1-state", upto_seq=seqs[10])
    assert [e.seq for e in s1.events] == want("session", "s1", seqs[10]) and s1.events
    assert [e.seq for e in s2.events] == want("session", "s2", 0)
    assert s2.events[0] == stored(mine[2], seqs[2])  # whole events, payload included
    u0, u1 = by_key[(project, "user", "u0")], by_key[(project, "user", "u1")]
    assert [e.seq for e in u0.events] == want("user", "u0", 0)
    assert u1 == History(Snapshot(state=b"u1-state", upto_seq=seqs[-2]), [])
    assert by_key[(project, "session", "nobody")] == History(Snapshot(state=b"empty", upto_seq=3), [])
    assert by_key[(project, "user", "never")] == History(None, [])
    assert [e.seq for e in by_key[(other, "session", "s0")].events] == [seqs[-1]]
    assert answers[1] == answers[len(asks) - 1]  # the same key twice in a batch


# aggregates ---------------------------------------------------------------------------------------
async def test_minute_series_sums_event_names_per_service_and_minute(store: Store) -> None:
    project = await project_id(store)
    other = (await store.create_project("elsewhere")).id
    spec = [
        # service, name, status, rt, ts
        ("pay", "charge", 200, 100.0, T0 + 10),
        ("pay", "refund", 500, 300.0, T0 + 59_999),  # same minute, another name: summed
        ("pay", "charge", None, None, T0 + MINUTE + 1),
        ("pay", "charge", 404, 20.0, T0 + 3 * MINUTE),
        ("auth", "login", 401, 5.5, T0 + 2 * MINUTE),
        (None, "ping", None, None, T0 + 10),
        ("pay", "charge", 200, 1.0, T0 - 1),  # the minute before the range
        ("pay", "charge", 200, 1.0, T0 + 4 * MINUTE),  # the minute after it
    ]
    await store.append([make_event(project, name=n, service_name=svc, status_code=st, response_time_ms=rt, ts=ts)
                        for svc, n, st, rt, ts in spec])  # fmt: skip
    await store.append([make_event(other, service_name="pay", ts=T0 + 10)])
    rows = await store.minute_series(project, since_ms=T0 + 30_000, until_ms=T0 + 3 * MINUTE + 5)
    m0 = T0 // MINUTE
    # events without a service ('' in the tables) come as None, first or last depending on collation
    assert [r for r in rows if r.service_name is None] == [MinuteRow(None, m0, 1, 0, 0, 0, 0.0)]
    named = [r for r in rows if r.service_name is not None]
    assert named == [
        MinuteRow("auth", m0 + 2, 1, 1, 1, 1, 5.5),
        MinuteRow("pay", m0, 2, 2, 1, 2, 400.0),
        MinuteRow("pay", m0 + 1, 1, 0, 0, 0, 0.0),
        MinuteRow("pay", m0 + 3, 1, 1, 1, 1, 20.0),
    ]
    only_pay = await store.minute_series(project, since_ms=T0 - MINUTE, until_ms=T0 + 10 * MINUTE, service_name="pay")
    assert [(r.minute - m0, r.count) for r in only_pay] == [(-1, 1), (0, 2), (1, 1), (3, 1), (4, 1)]
    assert await store.minute_series(project, since_ms=T0 + DAY, until_ms=T0 + 2 * DAY) == []
    # "" selects the events sent without a serviceName
    assert await store.minute_series(project, since_ms=T0, until_ms=T0 + DAY, service_name="") == [
        MinuteRow(None, m0, 1, 0, 0, 0, 0.0)
    ]
    assert await store.minute_series(other, since_ms=T0, until_ms=T0 + MINUTE) == [MinuteRow("pay", m0, 1, 0, 0, 0, 0.0)]


async def test_service_stats_from_known_inputs(store: Store) -> None:
    project = await project_id(store)
    spec = [
        # service, name, status, rt, ts
        ("pay", "charge", 200, 100.0, T0 + 10),
        ("pay", "charge", 500, 300.0, T0 + 20),
        ("pay", "charge", 404, None, T0 + 30),
        ("pay", "refund", None, 50.5, T0 + 5 * MINUTE),
        ("pay", "quote", None, None, T0 + 2 * DAY),
        ("auth", "login", 401, 20.0, T0 + 40),
        (None, "page", None, None, T0 + 50),
        (None, "page", None, None, T0 + 60),
    ]
    events = [
        make_event(project, service_name=s, name=n, status_code=c, response_time_ms=rt, ts=ts)
        for s, n, c, rt, ts in spec
    ]
    await store.append(events)
    # The same event twice: stored once (no status, no response time), the copy is not counted.
    await store.append([make_event(project, service_name="pay", name="charge", client_id="d", ts=T0)] * 2)
    pay = ServiceAggregate(
        service_name="pay", event_count=6, unique_events=3, with_status=3, errors=2, with_response_time=3,
        response_time_sum=450.5, last_seen_ms=T0 + 2 * DAY,
        top_events=[EventCount("charge", 4), EventCount("quote", 1)],  # ties: by name
    )  # fmt: skip
    none = ServiceAggregate(
        service_name=None, event_count=2, unique_events=1, with_status=0, errors=0, with_response_time=0,
        response_time_sum=0.0, last_seen_ms=T0 + 60, top_events=[EventCount("page", 2)],
    )  # fmt: skip
    auth = ServiceAggregate(
        service_name="auth", event_count=1, unique_events=1, with_status=1, errors=1, with_response_time=1,
        response_time_sum=20.0, last_seen_ms=T0 + 40, top_events=[EventCount("login", 1)],
    )  # fmt: skip
    assert await store.service_stats(project, top=2) == [pay, none, auth]
    assert await store.service_stats(project, service_name="auth") == [auth]
    assert await store.service_stats(project, service_name="nope") == []
    assert await store.top_events(project, limit=3) == [
        EventCount("charge", 4), EventCount("page", 2), EventCount("login", 1),
    ]  # fmt: skip
    assert await store.service_names(project) == ["auth", "pay"]
    assert await store.count_events(project) == 9
    assert await store.count_events("prj_missing") == 0


async def test_per_day_across_day_boundaries(store: Store) -> None:
    project = await project_id(store)
    stamps = [T0 - 1, T0, T0 + 1, T0 + DAY - 1, T0 + DAY, T0 + 3 * DAY + 5]
    await store.append([make_event(project, ts=ts) for ts in stamps])
    assert await store.per_day(project) == [
        DayCount("2024-10-03", 1), DayCount("2024-10-04", 3), DayCount("2024-10-05", 1),
        DayCount("2024-10-07", 1),
    ]  # fmt: skip
    assert await store.per_day(project, since_ms=T0, until_ms=T0 + DAY - 1) == [DayCount("2024-10-04", 3)]


def brute_service_stats(events: list[Event], top: int) -> list[ServiceAggregate]:
    by_service: dict[str | None, list[Event]] = {}
    for e in events:
        by_service.setdefault(e.service_name, []).append(e)
    stats = []
    for service, evs in by_service.items():
        names = Counter(e.name for e in evs)
        stats.append(
            ServiceAggregate(
                service_name=service,
                event_count=len(evs),
                unique_events=len(names),
                with_status=sum(e.status_code is not None for e in evs),
                errors=sum(e.status_code is not None and e.status_code >= 400 for e in evs),
                with_response_time=sum(e.response_time_ms is not None for e in evs),
                response_time_sum=float(sum(e.response_time_ms or 0.0 for e in evs)),
                last_seen_ms=max(e.timestamp for e in evs),
                top_events=[EventCount(n, c) for n, c in sorted(names.items(), key=lambda i: (-i[1], i[0]))][
                    :top
                ],
            )
        )
    return sorted(stats, key=lambda s: (-s.event_count, s.service_name or ""))


def brute_per_day(events: list[Event]) -> list[DayCount]:
    days = Counter(datetime.datetime.fromtimestamp(e.timestamp / 1000, datetime.UTC).date() for e in events)
    return [DayCount(d.isoformat(), c) for d, c in sorted(days.items())]


def brute_top(events: list[Event], limit: int) -> list[EventCount]:
    names = Counter(e.name for e in events)
    return [EventCount(n, c) for n, c in sorted(names.items(), key=lambda i: (-i[1], i[0]))][:limit]


RANGES = [
    (None, None),
    (T0 + 100 * MINUTE, T0 + 900 * MINUTE),  # inside one day
    (T0 + 100 * MINUTE, T0 + (2 * 1440 + 500) * MINUTE),  # partial, whole, partial
    (T0 + DAY, T0 + 3 * DAY),  # exactly whole days
    (T0 + 1439 * MINUTE, T0 + (1440 + 1) * MINUTE),  # two edge minutes around midnight
    (T0 + (1440 + 77) * MINUTE, None),
    (None, T0 + (2 * 1440 + 13) * MINUTE),
    (T0 + 10 * DAY, T0 + 11 * DAY),  # no data
]


@pytest.mark.parametrize(("since", "until"), RANGES)
async def test_range_aggregates_match_brute_force(store: Store, since: int | None, until: int | None) -> None:
    # Minute-aligned bounds (until ends a minute): the edges are exact at minute granularity.
    until_ms = None if until is None else until - 1
    project = await project_id(store)
    rng = random.Random(3)
    events = [
        make_event(
            project,
            name=rng.choice(["a", "b", "c", "d"]),
            ts=T0 - DAY // 2 + rng.randrange(4 * DAY),
            service_name=rng.choice([None, "web", "pay"]),
            status_code=rng.choice([None, 200, 302, 400, 503]),
            response_time_ms=rng.choice([None, float(rng.randrange(1, 900))]),
        )
        for _ in range(3000)
    ]
    await store.append(events)
    inside = [
        e
        for e in events
        if (since is None or e.timestamp >= since) and (until_ms is None or e.timestamp <= until_ms)
    ]
    assert await store.service_stats(
        project, since_ms=since, until_ms=until_ms, top=3
    ) == brute_service_stats(inside, 3)
    assert await store.top_events(project, since_ms=since, until_ms=until_ms, limit=3) == brute_top(inside, 3)
    assert await store.per_day(project, since_ms=since, until_ms=until_ms) == brute_per_day(inside)
    web = await store.service_stats(project, since_ms=since, until_ms=until_ms, service_name="web", top=3)
    assert web == [s for s in brute_service_stats(inside, 3) if s.service_name == "web"]


async def test_sqlite_file_layout(store: Store, backend: str, data_dir: pathlib.Path) -> None:
    if backend != "sqlite":
        pytest.skip("embedded backend only")
    import sqlite3

    from storage.sqlite_schema import SCHEMA_VERSION

    with contextlib.closing(sqlite3.connect(data_dir / "pulse.db")) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


async def test_statistics_never_read_the_log(store: Store, backend: str, data_dir: pathlib.Path) -> None:
    if backend != "sqlite":
        pytest.skip("deletes rows behind the store's back")
    import sqlite3

    project = await project_id(store)
    await store.append([make_event(project, service_name="web", ts=T0 + i * DAY // 2) for i in range(6)])
    before = (await store.service_stats(project), await store.per_day(project, since_ms=T0 + 5))
    with contextlib.closing(sqlite3.connect(data_dir / "pulse.db")) as conn, conn:
        conn.execute("DELETE FROM events")
    assert (await store.service_stats(project), await store.per_day(project, since_ms=T0 + 5)) == before
    assert await store.count_events(project) == 6


# projects and snapshots ---------------------------------------------------------------------------
async def test_projects(store: Store) -> None:
    default = await store.default_project()
    assert default.name == "default"
    acme = await store.create_project("acme")
    assert (
        acme.id.startswith("prj_") and acme.public_key.startswith("pk_") and acme.secret_key.startswith("sk_")
    )
    assert acme.public_key != acme.secret_key
    assert {p.name for p in await store.list_projects()} == {"default", "acme"}
    assert await store.project_by_key(acme.public_key) == acme
    assert await store.project_by_key(acme.secret_key) == acme
    assert await store.project_by_key(default.secret_key) == default
    assert await store.project_by_key("pk_unknown") is None
    with pytest.raises(ValueError, match="project 'acme' already exists"):
        await store.create_project("acme")


async def test_projects_survive_a_restart(open_store: StoreOpener) -> None:
    async with open_store() as store:
        default = await store.default_project()
        acme = await store.create_project("acme")
    async with open_store() as store:
        assert await store.default_project() == default
        assert await store.project_by_key(acme.public_key) == acme


async def test_snapshots_round_trip(open_store: StoreOpener) -> None:
    async with open_store() as store:
        assert await store.load_snapshot("p", "session", "s1") is None
        await store.save_snapshot("p", "session", "s1", Snapshot(state=b"one", upto_seq=5))
        await store.save_snapshot("p", "session", "s2", Snapshot(state=b"two", upto_seq=6))
        await store.save_snapshot("p", "session", "s1", Snapshot(state=b"\x00three", upto_seq=9))
        assert await store.load_snapshot("p", "session", "s1") == Snapshot(state=b"\x00three", upto_seq=9)
        assert await store.load_snapshot("p", "user", "s1") is None
    async with open_store() as store:
        assert await store.load_snapshot("p", "session", "s2") == Snapshot(state=b"two", upto_seq=6)
