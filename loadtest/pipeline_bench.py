"""CPU cost of Pulse's per-event path inside one process, without HTTP: decode, commit, actors.

    taskset -c 0 .venv/bin/python -m loadtest.pipeline_bench [--cases spread,hot,batch] [--repeat 3]

Builds the node the way server/main.py's ``_run_node`` does (SqliteStore with ``synchronous=NORMAL``
in a temporary directory, InsightService, ActorSystem with the session and user actors, the router,
the fan-out and the IngestPipeline; then ``gc.freeze()`` and the server's GC thresholds), and drives
``IngestPipeline.ingest`` from concurrent caller tasks with seed-000 behavioral bodies (the body of
loadtest/wrk/behavioral_hot.lua, with its sessionId, userId, url and eventData.timestamp varied),
decoded with ``protocol.normalize`` as the edge does. Cases:

- ``spread``: single events over 500 sessions of 50 users, 50 concurrent callers;
- ``hot``: single events on one session (session_123 / user_456), 50 concurrent callers;
- ``batch``: 100-event batches (``decode_behavioral_batch``), 8 concurrent callers, every batch over
  the same 40 sessions (as loadtest/wrk/batch100.lua) of 10 users: 50 actor messages per batch.

Each run starts a fresh node, warms it up (every actor activated), then measures
``time.process_time()`` (every thread of the process: the trio thread, the SQLite writer and
readers) and the wall time over the measured events. Reported per case: CPU microseconds per event
(the median of ``--repeat`` runs, and every run; of which the trio thread's own, from
``time.thread_time()``) and events per second. Pin the whole process to one
core (``taskset -c 0``) so the figures are comparable; the machine is shared, so take the median.
Nobody subscribes to streams, so nothing is published (``Fanout.wanted`` is false), as with wrk.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import itertools
import json
import logging
import pstats
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final

import trio

from actors.cluster import OP_APPLY, OP_VIEW, ActorRouter
from actors.fanout import Fanout
from actors.hub import Hub
from actors.insights.service import InsightService
from actors.metrics import Metrics
from actors.pipeline import IngestPipeline
from actors.runtime import ActorSystem
from actors.session import SessionActor, SessionSummary, SessionView
from actors.user import UserActor, UserSummary, UserView
from protocol.normalize import decode_behavioral, decode_behavioral_batch
from storage.sqlite import SqliteStore

SESSIONS: Final = 500
USERS: Final = 50
BATCH_SIZE: Final = 100
BATCH_SESSIONS: Final = 40  # the sessions of every batch (as loadtest/wrk/batch100.lua)
BATCH_USERS: Final = 10  # their users (4 sessions each)
BASE_TS: Final = 1703123456789  # the seed's eventData.timestamp

# seed 000's example event (loadtest/wrk/behavioral_hot.lua), with the varied parts as fields
_BODY: Final = (
    '{{"sessionId":"{session}","userId":"{user}","deviceType":"mobile","eventType":"page_view",'
    '"eventData":{{"url":"/product/{product}","referrer":"https://google.com","timestamp":{ts},'
    '"viewport":{{"width":375,"height":812}},"performance":{{"loadTime":1250,"renderTime":850,"interactionTime":200}}}},'
    '"elementContext":{{"element":"button","elementId":"cta-primary","className":"btn-primary","text":"Get Started",'
    '"position":{{"x":187,"y":400}}}},"interactionContext":{{"interaction":"click","duration":150,"force":0.8,'
    '"previousElement":"input_email","nextElement":null}}}}'
)


def event_body(session: str, user: str, n: int) -> str:
    """The n-th event of a session: one page view a second, over 20 products."""
    return _BODY.format(session=session, user=user, product=n % 20, ts=BASE_TS + n * 1000)


class Bodies:
    """Request bodies in order, each session with its own event counter (timestamps only grow)."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def one(self, session: str, user: str) -> str:
        n = self._counts.get(session, 0)
        self._counts[session] = n + 1
        return event_body(session, user, n)

    def spread(self, i: int) -> bytes:
        k = i % SESSIONS
        return self.one(f"s{k}", f"u{k % USERS}").encode()

    def hot(self, i: int) -> bytes:
        return self.one("session_123", "user_456").encode()

    def batch(self, i: int) -> bytes:
        events = []
        for j in range(BATCH_SIZE):
            k = (i * 7 + j) % BATCH_SESSIONS
            events.append(self.one(f"b{k}", f"bu{k % BATCH_USERS}"))
        return ('{"events":[' + ",".join(events) + "]}").encode()


@dataclass
class Case:
    name: str
    callers: int
    requests: int  # measured requests (events = requests * per_request)
    warmup: int  # requests before the measurement (activates every actor)
    per_request: int
    body: Callable[[Bodies, int], bytes]


CASES: Final = {
    "spread": Case("spread", 50, 20_000, 2 * SESSIONS, 1, Bodies.spread),
    "hot": Case("hot", 50, 20_000, 200, 1, Bodies.hot),
    "batch": Case("batch", 8, 400, 16, BATCH_SIZE, Bodies.batch),
}


@dataclass
class Node:
    store: SqliteStore
    actors: ActorSystem
    pipeline: IngestPipeline
    project: str


async def start_node(nursery: trio.Nursery, data_dir: Path) -> Node:
    """The services of server/main.py's _run_node that ingestion touches, started the same way."""
    metrics = Metrics()
    hub = Hub(metrics)
    store = SqliteStore(data_dir, synchronous="NORMAL")
    await nursery.start(store.run)
    insights = InsightService(store)
    sessions = partial(SessionActor, insights=insights)
    actors = ActorSystem(store, {"session": sessions, "user": UserActor})
    await nursery.start(actors.run)
    router = ActorRouter(
        actors,
        None,
        {
            ("session", OP_APPLY): SessionSummary,
            ("session", OP_VIEW): SessionView,
            ("user", OP_APPLY): UserSummary,
            ("user", OP_VIEW): UserView,
        },
    )
    fanout = Fanout(hub, metrics, None)
    fanout.on_journey(insights)
    await nursery.start(insights.run)
    # The insight service rebuilds its models from the stored log at start, and that rebuild reads
    # on until it finds no newer event: started under load it chases the live log (re-observing
    # what the actors observe) and its cost lands in the measurement. Let it finish on the empty
    # store first.
    with trio.fail_after(30):
        await trio.sleep(0.05)
        while insights.rebuilding:  # noqa: ASYNC110 (the service has no event for it)
            await trio.sleep(0.01)
    pipeline = IngestPipeline(store, actors, router, fanout, metrics)
    pipeline.start_from(await store.max_seq())
    project = (await store.default_project()).id
    return Node(store, actors, pipeline, project)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def drive(node: Node, case: Case, bodies: list[bytes]) -> int:
    """Send ``bodies`` from ``case.callers`` concurrent callers; returns the events processed."""
    index = itertools.count()
    processed = 0
    project = node.project
    ingest = node.pipeline.ingest

    async def caller() -> None:
        nonlocal processed
        while (i := next(index)) < len(bodies):
            started = time.perf_counter()
            if case.per_request == 1:
                event = decode_behavioral(project, bodies[i], received_at=now_ms())
                result = await ingest([event], started=started)
            else:
                decoded = decode_behavioral_batch(project, bodies[i], received_at=now_ms())
                events = [event for _, event in decoded.accepted]
                result = await ingest(events, started=started, rejected=len(decoded.rejected))
            if result.processed:
                processed += len(result.outcomes)

    async with trio.open_nursery() as callers:
        for _ in range(case.callers):
            callers.start_soon(caller)
    return processed


async def run_once(case: Case, *, profile: cProfile.Profile | None = None) -> dict[str, float]:
    bodies = Bodies()
    warm = [case.body(bodies, i) for i in range(case.warmup)]
    measured = [case.body(bodies, case.warmup + i) for i in range(case.requests)]
    with tempfile.TemporaryDirectory(prefix="pulse-bench-") as tmp:
        async with trio.open_nursery() as nursery:
            node = await start_node(nursery, Path(tmp))
            await drive(node, case, warm)
            gc.collect()
            gc.freeze()  # as the server does after start-up
            gc.set_threshold(50_000, 50, 100)
            wall0, cpu0, trio0 = time.perf_counter(), time.process_time(), time.thread_time()
            if profile is not None:
                profile.enable()
            processed = await drive(node, case, measured)
            if profile is not None:
                profile.disable()
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            trio_cpu = time.thread_time() - trio0
            events = case.requests * case.per_request
            if processed != events:
                raise RuntimeError(f"{case.name}: {events - processed} of {events} events not processed")
            await node.actors.drain(deadline=5)
            nursery.cancel_scope.cancel()
        gc.unfreeze()
        gc.set_threshold(700, 10, 10)
        gc.collect()
    return {
        "cpu_us_per_event": cpu / events * 1e6,
        "trio_us_per_event": trio_cpu / events * 1e6,
        "events_per_s": events / wall,
        "events": events,
    }


def summarize(name: str, runs: list[dict[str, float]]) -> dict[str, Any]:
    cpu = [r["cpu_us_per_event"] for r in runs]
    rate = [r["events_per_s"] for r in runs]
    return {
        "case": name,
        "cpu_us_per_event": round(statistics.median(cpu), 1),
        "trio_us_per_event": round(statistics.median(r["trio_us_per_event"] for r in runs), 1),
        "events_per_s": round(statistics.median(rate)),
        "runs_cpu_us": [round(c, 1) for c in cpu],
        "runs_events_per_s": [round(r) for r in rate],
    }


async def main_async(args: argparse.Namespace, emit: Callable[[dict[str, Any]], Awaitable[None] | None]) -> None:
    for name in args.cases.split(","):
        case = CASES[name.strip()]
        if args.requests:
            case = Case(case.name, case.callers, args.requests, case.warmup, case.per_request, case.body)
        runs = []
        for _ in range(args.repeat):
            profile = cProfile.Profile() if args.profile else None
            runs.append(await run_once(case, profile=profile))
            if profile is not None:
                path = f"{args.profile}.{case.name}.prof"
                profile.dump_stats(path)
                pstats.Stats(profile).sort_stats("tottime").print_stats(args.profile_lines)
        emit(summarize(case.name, runs))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="pipeline_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="spread,hot,batch", help="comma-separated: spread, hot, batch")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (the median is reported)")
    parser.add_argument("--requests", type=int, default=0, help="measured requests per run (default per case)")
    parser.add_argument("--json", action="store_true", help="one JSON object per case instead of a table row")
    parser.add_argument("--profile", metavar="PREFIX", help="cProfile the trio thread; writes PREFIX.<case>.prof")
    parser.add_argument("--profile-lines", type=int, default=40)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    def emit(row: dict[str, Any]) -> None:
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            print(
                f"{row['case']:>7}: {row['cpu_us_per_event']:7.1f} µs CPU/event (runs {row['runs_cpu_us']};"
                f" trio thread {row['trio_us_per_event']}), {row['events_per_s']:>7} events/s",
                flush=True,
            )

    trio.run(main_async, args, emit)


if __name__ == "__main__":
    main()
