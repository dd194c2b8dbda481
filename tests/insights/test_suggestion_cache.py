"""The per-project suggestion cache (server/suggestions.py) over a fake store: the track routes'
lookup never reads the store, the refresher computes what is asked for, computations are
single-flight, and a caller never gets a result read before writes it must see."""

from __future__ import annotations

import trio
import trio.testing

from protocol.record import SOURCE_EVENTS, Event
from server import suggestions as cache_module
from server.suggestions import SuggestionCache
from storage.base import EventFilter, EventPage, ServiceAggregate, StoreUnavailable
from tests.insights.test_suggestions import agg, around

NOW_MS = 1_700_000_000_000


class FakeStore:
    """service_stats answers the 24 h window with a slow payment-service; the hourly windows are
    empty. query_events answers the latest response times. Each read takes ``delay`` seconds."""

    def __init__(self) -> None:
        self.seq = 1
        self.stats_reads = 0
        self.sample_reads = 0
        self.delay = 0.0
        self.fail: Exception | None = None
        self.day = [agg("payment-service", 40, timed=40, mean_ms=900.0, names={"payment-completed": 40}),
                    agg("user-service", 100, timed=100, mean_ms=90.0, names={"user-login": 100})]

    async def max_seq(self) -> int:
        return self.seq

    async def service_stats(self, project: str, *, since_ms: int | None = None, until_ms: int | None = None,
                            service_name: str | None = None, top: int = 10) -> list[ServiceAggregate]:
        self.stats_reads += 1
        await trio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        return self.day if until_ms is None else []

    async def query_events(self, flt: EventFilter, *, limit: int, cursor: object) -> EventPage:
        self.sample_reads += 1
        times = around(900, 60, 40)
        events = [
            Event(id=f"e{i}", project=flt.project, name="payment-completed", source=SOURCE_EVENTS,
                  timestamp=NOW_MS - i, received_at=NOW_MS, payload=b"{}", service_name=flt.service_name,
                  response_time_ms=t)
            for i, t in enumerate(times)
        ]
        return EventPage(events=events, filtered=len(events), next_cursor=None)


def make(store: FakeStore) -> SuggestionCache:
    return SuggestionCache(store, clock=trio.current_time, wall_ms=lambda: NOW_MS)  # type: ignore[arg-type]


async def test_track_lookup_is_empty_until_computed_then_about_the_event() -> None:
    store = FakeStore()
    cache = make(store)
    assert cache.for_event("p1", "payment-service", "payment-completed") == []
    assert store.stats_reads == 0  # the hot path never reads
    await cache.refresh_once()  # the project was wanted: computed now
    [slow] = cache.for_event("p1", "payment-service", "payment-completed")
    assert slow.id == "sug-slow-payment-service" and slow.basedOn is not None and slow.basedOn.sampleSize == 40
    assert cache.for_event("p1", "user-service", "user-login") == []
    assert [s.id for s in cache.for_event("p1", None, "payment-completed")] == ["sug-slow-payment-service"]
    assert cache.for_event("p1", "payment-service", "payment-completed") is cache.for_event("p1", "payment-service", "payment-completed")
    assert store.sample_reads == 1  # only the slow-on-average service is sampled


async def test_refresh_only_when_read_and_something_changed(autojump_clock: trio.testing.MockClock) -> None:
    store = FakeStore()
    cache = make(store)
    cache.for_event("p1", "x", "y")
    await cache.refresh_once()
    reads = store.stats_reads
    cache.for_event("p1", "x", "y")
    await cache.refresh_once()
    assert store.stats_reads == reads  # read, but nothing committed since
    store.seq += 1
    await cache.refresh_once()
    assert store.stats_reads == reads  # committed, but nobody read the cache since the last pass
    cache.for_event("p1", "x", "y")
    await cache.refresh_once()
    assert store.stats_reads == 2 * reads
    await trio.sleep(cache_module.IDLE_DROP_S + 1)
    await cache.refresh_once()
    assert cache.for_event("p1", "x", "y") == []  # forgotten after being idle, and wanted again


async def test_concurrent_callers_share_one_computation(autojump_clock: trio.testing.MockClock) -> None:
    store = FakeStore()
    store.delay = 0.5
    cache = make(store)
    results = []

    async def ask() -> None:
        results.append(await cache.fresh("p1", max_age=10.0))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(ask)
    assert len(results) == 5 and all(r is results[0] for r in results)
    assert store.stats_reads == 4  # four windows, read once


async def test_a_caller_never_gets_reads_older_than_its_writes(autojump_clock: trio.testing.MockClock) -> None:
    store = FakeStore()
    cache = make(store)
    first = await cache.fresh("p1", max_age=10.0)
    assert await cache.fresh("p1", max_age=10.0) is first  # nothing committed since
    store.seq += 1
    second = await cache.fresh("p1", max_age=10.0)
    assert second is not first and second.upto_seq == store.seq
    await trio.sleep(11)
    assert await cache.fresh("p1", max_age=10.0) is not second  # too old, even with nothing new

    # a computation already running when new writes land is not taken: the caller waits for its own
    store.delay = 1.0
    got = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: cache.fresh("p1", max_age=0.0))
        await trio.sleep(0.5)
        store.seq += 1

        async def late() -> None:
            got.append(await cache.fresh("p1", max_age=0.0))

        nursery.start_soon(late)
    assert got[0].upto_seq == store.seq


async def test_store_failures_and_slowness_are_store_errors(autojump_clock: trio.testing.MockClock) -> None:
    store = FakeStore()
    cache = make(store)
    store.fail = StoreUnavailable("disk on fire")
    errors = []

    async def ask() -> None:
        try:
            await cache.fresh("p1", max_age=0.0)
        except StoreUnavailable as err:
            errors.append(str(err))

    store.delay = 0.1
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask)
        nursery.start_soon(ask)
    assert errors == ["disk on fire", "disk on fire"]
    store.fail, store.delay = None, cache_module.COMPUTE_TIMEOUT_S + 1
    errors.clear()
    await ask()
    assert errors and "took over" in errors[0]
    await cache.refresh_once()  # the refresher logs and carries on


async def test_the_refresher_computes_a_newly_wanted_project_promptly(autojump_clock: trio.testing.MockClock) -> None:
    store = FakeStore()
    cache = make(store)
    async with trio.open_nursery() as nursery:
        await nursery.start(cache.run)
        cache.for_event("p1", "payment-service", "payment-completed")
        await trio.sleep(0.05)  # the refresher's period is REFRESH_S: only the wake-up explains a result now
        assert [s.id for s in cache.for_event("p1", "payment-service", "payment-completed")] == ["sug-slow-payment-service"]
        nursery.cancel_scope.cancel()


async def test_a_cancelled_computation_leaves_its_waiters_to_compute(autojump_clock: trio.testing.MockClock) -> None:
    store = FakeStore()
    store.delay = 1.0
    cache = make(store)
    got = []

    async def waiter() -> None:
        got.append(await cache.fresh("p1", max_age=10.0))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)  # runs once the owner below is reading: it joins the owner's flight
        with trio.move_on_after(0.5):  # the owner goes away mid-read
            await cache.fresh("p1", max_age=10.0)
    assert len(got) == 1 and got[0].findings  # computed by the waiter itself
    assert store.stats_reads == 1 + 4  # the owner's first (cut-short) read, then the waiter's four
