"""Time to erase one user with many events, through the Store directly (no HTTP, no actors).

    .venv/bin/python -m loadtest.delete_user_bench --data-dir /tmp/pulse-delete-bench -n 100000
    .venv/bin/python -m loadtest.delete_user_bench --database-url postgresql://... -n 100000
    .venv/bin/python -m loadtest.delete_user_bench -n 100000 --retention-days 7     (the retention job)

Fills a fresh store with ``-n`` events of one user over ``--sessions`` sessions (plus as many
anonymous events in those sessions as ``--anonymous``, and ``--others`` events of other users), then
times ``delete_user_data`` (cascade, as the route's default). Meanwhile a probe appends one event of
another user every 10 ms and records how long each append waited: on SQLite the deletion shares the
one writer with ingestion, so the probe's worst wait is what a deletion costs everyone else. Prints
the deletion's time, its counts, and the probe's p50 / p99 / max append latency.
"""

from __future__ import annotations

import trio_asyncio  # first: before anything imports asyncpg

# isort: split
import argparse
import itertools
import pathlib
import shutil
import statistics
import time

import msgspec
import trio

from protocol.record import SOURCE_EVENTS, Event
from storage.base import Store, StoreError
from storage.postgres import PostgresStore
from storage.sqlite import SqliteStore

BATCH = 5_000
PROBE_EVERY_S = 0.01
_ids = itertools.count()


def event(project: str, ts: int, user: str | None, session: str | None, i: int) -> Event:
    n = next(_ids)
    payload = msgspec.json.encode({"url": f"/p/{i % 50}", "userId": user, "ref": "bench"})
    return Event(
        id=f"evt_{n}", project=project, name=("page_view", "click", "scroll")[i % 3], source=SOURCE_EVENTS,
        timestamp=ts, received_at=ts, payload=msgspec.Raw(payload), user_id=user, session_id=session,
        service_name=("web", "api")[i % 2], status_code=200 if i % 7 else 500, response_time_ms=float(i % 300),
        client_id=f"c{n}",
    )  # fmt: skip


async def fill(store: Store, project: str, n: int, sessions: int, anonymous: int, others: int) -> None:
    start = time.time_ns() // 1_000_000 - 30 * 86_400_000
    rows: list[Event] = []
    for i in range(n):  # the user's events: ~2 s apart, spread over the sessions
        rows.append(event(project, start + i * 2_000, "bench-user", f"bench-s{i % sessions}", i))
    for i in range(anonymous):
        rows.append(event(project, start + i * 2_000 + 1, None, f"bench-s{i % sessions}", i))
    for i in range(others):
        rows.append(event(project, start + i * 2_000 + 2, f"other-{i % 1000}", f"other-s{i % 3000}", i))
    rows.sort(key=lambda e: e.timestamp)
    for first in range(0, len(rows), BATCH):
        await store.append(rows[first : first + BATCH])


async def probe(store: Store, project: str, waits: list[float], stop: trio.Event) -> None:
    i = 0
    while not stop.is_set():
        began = time.perf_counter()
        try:
            await store.append([event(project, time.time_ns() // 1_000_000, "probe", "probe-s", i)])
        except StoreError as exc:
            print(f"probe append failed after {time.perf_counter() - began:.1f} s: {exc}")
        waits.append(time.perf_counter() - began)
        i += 1
        await trio.sleep(PROBE_EVERY_S)


async def bench(store: Store, args: argparse.Namespace) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        project = (await store.default_project()).id
        began = time.perf_counter()
        await fill(store, project, args.n, args.sessions, args.anonymous, args.others)
        print(f"filled {args.n + args.anonymous + args.others} events in {time.perf_counter() - began:.1f} s")
        baseline: list[float] = []
        stop = trio.Event()
        nursery.start_soon(probe, store, project, baseline, stop)
        await trio.sleep(2)
        stop.set()
        waits: list[float] = []
        stop = trio.Event()
        nursery.start_soon(probe, store, project, waits, stop)
        began = time.perf_counter()
        if args.retention_days is not None:  # the retention job's work: every filled event is older
            expired = await store.delete_expired(time.time_ns() // 1_000_000, {project: args.retention_days})
            took = time.perf_counter() - began
            stop.set()
            count = sum(expired.values())
            print(f"delete_expired: {took:.2f} s for {count} events ({count / took:,.0f} events/s)")
        else:
            removed = await store.delete_user_data(project, "bench-user", anonymize_only=False)
            took = time.perf_counter() - began
            stop.set()
            print(f"delete_user_data: {took:.2f} s for {removed.events} events ({removed.events / took:,.0f} "
                  f"events/s), sessions {removed.sessions}, profiles {removed.profiles}")
        for name, sample in (("before", baseline), ("during", waits)):
            ms = sorted(w * 1000 for w in sample)
            if ms:
                p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
                print(f"probe appends {name} the deletion: {len(ms)}, p50 {statistics.median(ms):.1f} ms, "
                      f"p99 {p99:.1f} ms, max {ms[-1]:.1f} ms")
        nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=pathlib.Path, default=pathlib.Path("/tmp/pulse-delete-bench"),
                        help="SQLite: a directory emptied first")
    parser.add_argument("--database-url", default=None, help="PostgreSQL instead (an empty database)")
    parser.add_argument("-n", type=int, default=100_000, help="the user's events")
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--anonymous", type=int, default=2_000, help="anonymous events in the user's sessions")
    parser.add_argument("--others", type=int, default=100_000, help="other users' events")
    parser.add_argument("--retention-days", type=int, default=None,
                        help="time the retention job's delete_expired with this project retention instead "
                             "(every filled event is 27 to 30 days old)")
    args = parser.parse_args()
    if args.database_url:
        store: Store = PostgresStore(args.database_url)

        async def run_pg() -> None:
            async with trio_asyncio.open_loop():
                await bench(store, args)

        trio.run(run_pg)
    else:
        shutil.rmtree(args.data_dir, ignore_errors=True)
        trio.run(bench, SqliteStore(args.data_dir, synchronous="FULL"), args)


if __name__ == "__main__":
    main()
