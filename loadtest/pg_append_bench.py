"""Batch append throughput of the PostgreSQL store: concurrent appenders, events/s per process.

    .venv/bin/python -m loadtest.pg_append_bench                       # a throwaway server
    .venv/bin/python -m loadtest.pg_append_bench --dsn postgresql://postgres@127.0.0.1:5432/bench

With ``--dsn`` the database must exist (its tables are created; data from earlier runs stays).
Without it a private server is started from the installed PostgreSQL binaries (fsync off; see
tests/services/postgres.py) and removed afterwards.

Each of ``--appenders`` tasks appends ``--rounds`` batches of ``--batch`` events; the figure is
events committed per second of wall time over all rounds, after one warm-up round. CPU time per
event is printed too (this process, and the throwaway server's processes): unlike events/s it
hardly depends on what else the machine is doing.
"""

from __future__ import annotations

import trio_asyncio  # first: before anything imports asyncpg

# isort: split
import argparse
import os
import pathlib
import random
import time
from collections.abc import Callable

import msgspec
import trio

from protocol.normalize import new_event_id
from protocol.record import SOURCE_EVENTS, Event
from storage.postgres import PostgresStore

SERVICES = ["web-analytics", "api-gateway", "user-service", "payment-service", "search-service"]
NAMES = [f"event-{n}" for n in range(25)]
PAYLOAD = msgspec.Raw(b'{"metadata":{"url":"/checkout/step-2","referrer":"/cart","k":1}}')


def make_batch(project: str, size: int, rng: random.Random, client_ids: bool) -> list[Event]:
    now = time.time_ns() // 1_000_000
    return [
        Event(
            id=new_event_id(), project=project, name=rng.choice(NAMES), source=SOURCE_EVENTS,
            timestamp=now - rng.randrange(60_000), received_at=now, payload=PAYLOAD,
            user_id=f"user-{rng.randrange(20_000)}", session_id=f"s-{rng.randrange(200_000)}",
            service_name=rng.choice(SERVICES), correlation_id=f"c-{rng.randrange(1_000_000)}",
            status_code=500 if rng.random() < 0.03 else 200, response_time_ms=float(rng.randrange(20, 900)),
            client_id=new_event_id() if client_ids else None,
        )  # fmt: skip
        for _ in range(size)
    ]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the given processes (Linux /proc), as far as they still exist."""
    total = 0
    for pid in pids:
        try:
            fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


async def bench(
    dsn: str, appenders: int, batch: int, rounds: int, client_ids: bool, server_pids: Callable[[], list[int]] | None
) -> None:
    rng = random.Random(7)
    store = PostgresStore(dsn)
    async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
        await nursery.start(store.run)
        project = (await store.default_project()).id
        # Batches are built before the clock starts: this measures the store, not event creation.
        batches = [[make_batch(project, batch, rng, client_ids) for _ in range(rounds + 1)] for _ in range(appenders)]

        async def appender(mine: list[list[Event]], done: list[int]) -> None:
            for events in mine:
                stored = await store.append(events)
                done[0] += len(stored)  # not ``+= len(await ...)``: that reads done[0] before waiting

        warm = [0]
        async with trio.open_nursery() as warmup:
            for mine in batches:
                warmup.start_soon(appender, mine[:1], warm)
        done = [0]
        pids = server_pids() if server_pids else []
        server_cpu, client_cpu = cpu_seconds(pids), time.process_time()
        started = time.perf_counter()
        async with trio.open_nursery() as timed:
            for mine in batches:
                timed.start_soon(appender, mine[1:], done)
        elapsed = time.perf_counter() - started
        client_cpu = time.process_time() - client_cpu
        print(
            f"{done[0]} events in {elapsed:.2f} s: {done[0] / elapsed:,.0f} events/s"
            f" ({appenders} appenders x {rounds} rounds x {batch} events, client ids: {client_ids})"
        )
        cpu = f"CPU per event: pulse {client_cpu / done[0] * 1e6:.1f} us"
        if pids:
            server_cpu = cpu_seconds(pids) - server_cpu
            cpu += f", postgresql {server_cpu / done[0] * 1e6:.1f} us"
        print(cpu)
        nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", help="an existing database (default: a throwaway server)")
    parser.add_argument("--appenders", type=int, default=100)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--client-ids", action="store_true", help="give every event a client id (dedup path)")
    args = parser.parse_args()
    if args.dsn:
        trio.run(bench, args.dsn, args.appenders, args.batch, args.rounds, args.client_ids, None)
        return
    from tests.services.postgres import acquire_server, release_server

    server = acquire_server()
    if server is None:
        raise SystemExit("no PostgreSQL binaries found: pass --dsn")
    try:
        dsn = server.create_database()
        trio.run(bench, dsn, args.appenders, args.batch, args.rounds, args.client_ids, server.pids)
    finally:
        release_server()


if __name__ == "__main__":
    main()
