"""IngestPipeline: commit, then every event to its session and user actors, then fan-out; one
request's events grouped per actor; backpressure before anything is stored; the resume watermark."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from actors.cluster import ActorRouter
from actors.fanout import Fanout
from actors.hub import Hub
from actors.metrics import Metrics
from actors.pipeline import BACKPRESSURE_S, IngestPipeline, Overloaded, _groups
from actors.projection import ApplyEvents
from actors.runtime import ActorSystem
from actors.session import SessionActor, SessionSummary
from actors.user import UserActor, UserSummary
from protocol.record import AppendOutcome, Event
from tests.actors.memory_store import MemoryStore, make_event

NOTHING = ApplyEvents(events=[])  # asks an actor for its summary


class AppendingStore(MemoryStore):
    """MemoryStore plus Store.append: seqs in order, client-id dedup, one checkpoint per commit."""

    def __init__(self) -> None:
        super().__init__()
        self.appends = 0
        self.gate: trio.Event | None = None  # append waits for it when set

    async def append(self, events: list[Event]) -> list[AppendOutcome]:
        self.appends += 1
        if self.gate is not None:
            await self.gate.wait()
        await trio.lowlevel.checkpoint()
        known = {(e.project, e.client_id): e for e in self.events if e.client_id}
        outcomes = []
        for event in events:
            original = known.get((event.project, event.client_id)) if event.client_id else None
            if original is not None:
                outcomes.append(AppendOutcome(original.id, original.seq, True))
                continue
            (stored,) = self.add(Event(**{f: getattr(event, f) for f in event.__struct_fields__}))
            known[(event.project, event.client_id)] = stored
            outcomes.append(AppendOutcome(stored.id, stored.seq, False))
        return outcomes


async def start(nursery: trio.Nursery, **options: Any) -> tuple[IngestPipeline, AppendingStore, ActorSystem]:
    store = AppendingStore()
    metrics = Metrics()
    actors = ActorSystem(store, {"session": SessionActor, "user": UserActor}, **options)
    await nursery.start(actors.run)
    router = ActorRouter(actors, None, {})
    pipeline = IngestPipeline(store, actors, router, Fanout(Hub(metrics), metrics), metrics)  # type: ignore[arg-type]
    return pipeline, store, actors


def event(ts: int, *, session: str | None = "s1", user: str | None = "u1", client_id: str | None = None) -> Event:
    e = make_event("page_view", ts=ts, session=session, user=user, payload={"eventData": {"url": f"/p{ts}"}})
    e.client_id = client_id
    return e


def test_groups_one_share_per_actor_sessions_first() -> None:
    one = event(1)
    assert _groups([one]) == [(("session", "p1", "s1"), [one]), (("user", "p1", "u1"), [one])]
    assert _groups([event(1, session=None, user=None)]) == []
    a, b, c = event(1), event(2, session="s2"), event(3, user=None)
    assert _groups([a, b, c]) == [
        (("session", "p1", "s1"), [a, c]),
        (("session", "p1", "s2"), [b]),
        (("user", "p1", "u1"), [a, b]),
    ]


async def test_a_single_event_is_stored_processed_and_answered(autojump_clock: MockClock, nursery: trio.Nursery) -> None:
    pipeline, store, actors = await start(nursery)
    result = await pipeline.ingest([event(1_000)], started=0.0)
    assert result.processed and [o.duplicate for o in result.outcomes] == [False]
    summary = result.sessions["s1"]
    assert isinstance(summary, SessionSummary) and summary.event_count == 1 and summary.current_page == "/p1000"
    user = await actors.ask(("user", "p1", "u1"), NOTHING, timeout=1)
    assert isinstance(user, UserSummary) and user.event_count == 1
    assert [e.seq for e in store.events] == [1] and pipeline.metrics.events_stored == 1


async def test_retries_are_answered_with_the_original_and_counted_once(
    autojump_clock: MockClock, nursery: trio.Nursery
) -> None:
    pipeline, store, _ = await start(nursery)
    first = await pipeline.ingest([event(1_000, client_id="k1"), event(2_000, client_id="k1")], started=0.0)
    assert [o.duplicate for o in first.outcomes] == [False, True]
    assert first.outcomes[0].id == first.outcomes[1].id
    assert first.sessions["s1"].event_count == 1  # the in-batch duplicate shares the seq: applied once
    again = await pipeline.ingest([event(1_000, client_id="k1")], started=0.0)  # a retry
    assert again.processed and again.outcomes[0].duplicate and again.sessions["s1"].event_count == 1
    mixed = await pipeline.ingest([event(3_000, client_id="k1"), event(4_000, client_id="k2")], started=0.0)
    assert [o.duplicate for o in mixed.outcomes] == [True, False] and mixed.sessions["s1"].event_count == 2
    assert len(store.events) == 2
    assert (pipeline.metrics.events_stored, pipeline.metrics.events_duplicate) == (2, 3)


async def test_nothing_to_store(autojump_clock: MockClock, nursery: trio.Nursery) -> None:
    pipeline, store, _ = await start(nursery)
    result = await pipeline.ingest([], started=0.0, rejected=2)
    assert (result.outcomes, result.processed, result.sessions) == ([], True, {})
    assert store.appends == 0 and pipeline.metrics.events_rejected == 2


async def test_a_full_mailbox_is_a_503_before_anything_is_stored(
    autojump_clock: MockClock, nursery: trio.Nursery
) -> None:
    gate = trio.Event()

    class Stuck(SessionActor):
        async def activate(self) -> None:
            await gate.wait()
            await super().activate()

    store = AppendingStore()
    metrics = Metrics()
    actors = ActorSystem(store, {"session": Stuck, "user": UserActor}, mailbox_size=1)
    await nursery.start(actors.run)
    pipeline = IngestPipeline(store, actors, ActorRouter(actors, None, {}), Fanout(Hub(metrics), metrics), metrics)  # type: ignore[arg-type]
    nursery.start_soon(partial(pipeline.ingest, [event(1)], started=0.0))  # fills the activating actor's mailbox
    await trio.testing.wait_all_tasks_blocked()
    appends = store.appends
    begin = trio.current_time()
    with pytest.raises(Overloaded):
        await pipeline.ingest([event(2)], started=0.0)
    assert trio.current_time() == begin + BACKPRESSURE_S
    assert store.appends == appends and metrics.drops["backpressure_503"] == 1
    gate.set()


async def test_a_client_going_away_after_the_commit_does_not_stop_processing(
    autojump_clock: MockClock, nursery: trio.Nursery
) -> None:
    pipeline, store, actors = await start(nursery)
    store.gate = trio.Event()
    with trio.CancelScope() as request:
        nursery.start_soon(_release_later, store.gate, request)
        await pipeline.ingest([event(1_000)], started=0.0)  # cancelled while its commit is on its way
    assert len(store.events) == 1
    summary = await actors.ask(("session", "p1", "s1"), NOTHING, timeout=1)
    assert summary.event_count == 1


async def _release_later(gate: trio.Event, request: trio.CancelScope) -> None:
    await trio.testing.wait_all_tasks_blocked()
    request.cancel()  # the client goes away while the write is being committed
    gate.set()


async def test_the_resume_watermark_keeps_no_history(autojump_clock: MockClock, nursery: trio.Nursery) -> None:
    pipeline, _, _ = await start(nursery)
    async with trio.open_nursery() as inner:
        for ts in range(50):
            inner.start_soon(partial(pipeline.ingest, [event(ts, session=f"s{ts % 7}")], started=0.0))
    assert pipeline.resume_floor() == 50
    assert pipeline._lows == [] and pipeline._in_flight == {}
