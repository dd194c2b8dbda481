"""Fill a data directory with N synthetic events (straight into the store), for query benchmarks.

    .venv/bin/python -m loadtest.fill_store --data-dir /tmp/pulse-million -n 1000000

Events spread over the last 30 days, 8 services, 25 event names, 20,000 users, status codes with
~3% errors and response times; all in the default project.
"""

from __future__ import annotations

import argparse
import pathlib
import random
import time

import msgspec
import trio

from protocol.normalize import new_event_id
from protocol.record import SOURCE_EVENTS, Event
from storage.sqlite import SqliteStore

SERVICES = ["web-analytics", "api-gateway", "user-service", "payment-service", "notification-service",
            "content-service", "search-service", "custom-service"]
NAMES = [f"event-{n}" for n in range(25)]
BATCH = 1000


async def fill(data_dir: pathlib.Path, count: int) -> None:
    store = SqliteStore(data_dir, synchronous="NORMAL")
    rng = random.Random(7)
    now = time.time_ns() // 1_000_000
    span = 30 * 86_400_000
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        project = (await store.default_project()).id
        started = time.perf_counter()
        for done in range(0, count, BATCH):
            events = []
            for _ in range(min(BATCH, count - done)):
                ts = now - rng.randrange(span)
                status = 500 if rng.random() < 0.03 else 200
                events.append(Event(
                    id=new_event_id(), project=project, name=rng.choice(NAMES), source=SOURCE_EVENTS,
                    timestamp=ts, received_at=ts, payload=msgspec.Raw(b'{"metadata":{"k":1}}'),
                    user_id=f"user-{rng.randrange(20_000)}", session_id=f"s-{rng.randrange(200_000)}",
                    service_name=rng.choice(SERVICES), correlation_id=f"c-{rng.randrange(1_000_000)}",
                    status_code=status, response_time_ms=float(rng.randrange(20, 900)),
                ))
            await store.append(events)
        print(f"{count} events in {time.perf_counter() - started:.1f}s")
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=pathlib.Path, required=True)
    parser.add_argument("-n", type=int, default=1_000_000)
    args = parser.parse_args()
    trio.run(fill, args.data_dir, args.n)
