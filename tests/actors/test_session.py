"""SessionActor: the view math (pages, time on page, scroll depth), lenient payloads, the activation
skip rule, and rebuilding from snapshot + replay after a crash or passivation."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from actors.payload import extract, normalize_scroll
from actors.projection import ApplyEvents, GetView
from actors.runtime import ActorCrashed, ActorKey, ActorSystem
from actors.session import PAGES_KEPT, SessionActor, SessionSummary, SessionView, session_factory
from protocol.record import Event
from storage.base import Snapshot
from tests.actors.memory_store import MemoryStore, make_event

KEY: ActorKey = ("session", "p1", "s1")


def covered(snapshot: Snapshot) -> set[int]:
    """The seqs a snapshot says it holds: everything up to upto_seq, and the listed ones above."""
    from actors.projection import _SNAPSHOT_DECODER

    return {seq for seq in _SNAPSHOT_DECODER.decode(snapshot.state).seen if seq > snapshot.upto_seq}


async def fresh_actor(store: MemoryStore | None = None) -> SessionActor:
    actor = SessionActor(KEY, store or MemoryStore())
    await actor.activate()
    return actor


async def apply(actor: SessionActor, *events: Event) -> SessionView:
    summary = await actor.receive(ApplyEvents(events=list(events)))
    assert isinstance(summary, SessionSummary)
    view = await actor.receive(GetView())
    assert isinstance(view, SessionView)
    return view


def page(url: str, ts: int, name: str = "page_view", **extra: Any) -> Event:
    return make_event(name, ts=ts, payload={"eventData": {"url": url}, **extra})


def scroll(depth: object, ts: int, where: str = "eventData") -> Event:
    if where == "top":
        return make_event("scroll", ts=ts, payload={"scrollDepth": depth})
    return make_event("scroll", ts=ts, payload={where: {"scrollDepth": depth}})


# view math ---------------------------------------------------------------------------------------
async def test_pages_in_order_with_time_on_page() -> None:
    actor = await fresh_actor()
    view = await apply(
        actor,
        page("/a", 1_000),
        make_event("click", ts=1_500),
        page("/b", 3_000),
        make_event("scroll", ts=4_000),
    )
    assert [(p.url, p.entered_at, p.time_on_page_ms) for p in view.pages] == [
        ("/a", 1_000, 2_000),
        ("/b", 3_000, 1_000),
    ]
    assert view.current_page == "/b"
    assert view.time_on_page_ms == 1_000
    assert (view.event_count, view.page_views, view.pages_dropped) == (4, 2, 0)
    assert (view.started_at, view.last_activity, view.last_event_type) == (1_000, 4_000, "scroll")


async def test_batch_is_applied_by_timestamp_and_late_pages_are_inserted_in_order() -> None:
    actor = await fresh_actor()
    view = await apply(actor, make_event("click", ts=5_000), page("/b", 3_000), page("/a", 1_000))
    assert [p.url for p in view.pages] == ["/a", "/b"]
    assert view.last_event_type == "click"
    view = await apply(actor, page("/between", 2_000), make_event("late", ts=1_200))
    assert [(p.url, p.time_on_page_ms) for p in view.pages] == [
        ("/a", 1_000),
        ("/between", 1_000),
        ("/b", 2_000),
    ]
    assert view.current_page == "/b"
    assert (view.started_at, view.last_activity, view.last_event_type) == (1_000, 5_000, "click")


async def test_page_view_names_and_url_sources() -> None:
    actor = await fresh_actor()
    view = await apply(
        actor,
        make_event("PageView", ts=1, payload={"url": "/top"}),
        make_event("$pageview", ts=2, payload={"metadata": {"url": "/meta-url"}}),
        make_event("page-view", ts=3, payload={"metadata": {"page": "/meta-page"}}),
        make_event("page", ts=4, payload={"metadata": {"path": "/meta-path", "page": 7}}),
        make_event("page_view", ts=5, payload={"eventData": {"url": "/data"}, "url": "/ignored"}),
        make_event("click", ts=6, payload={"url": "/not-a-page-view"}),
        make_event("page_view", ts=7, payload={}),  # counted, but without a url it is not listed
    )
    assert [p.url for p in view.pages] == ["/top", "/meta-url", "/meta-page", "/meta-path", "/data"]
    assert view.page_views == 6
    assert view.current_page == "/data"


async def test_scroll_depth_percent_fraction_and_per_page() -> None:
    actor = await fresh_actor()
    view = await apply(
        actor, scroll(0.2, 500), page("/a", 1_000), scroll(75, 1_100), scroll(0.5, 1_200, "top")
    )
    assert view.scroll_depth == 0.75
    assert view.max_scroll_depth == 0.75
    view = await apply(actor, page("/b", 2_000), scroll(30, 2_100, "metadata"))
    assert view.scroll_depth == 0.3  # the current page only
    assert view.max_scroll_depth == 0.75  # the whole session
    view = await apply(actor, scroll(150, 2_200), scroll(-4, 2_300))
    assert (view.scroll_depth, view.max_scroll_depth) == (1.0, 1.0)
    # a late scroll event is credited to the page that was open then, not to the current one
    actor2 = await fresh_actor()
    await apply(actor2, page("/a", 1_000), page("/b", 2_000))
    view = await apply(actor2, scroll(0.9, 1_500))
    assert (view.scroll_depth, view.max_scroll_depth) == (0.0, 0.9)


def test_normalize_scroll() -> None:
    assert normalize_scroll(0.5) == 0.5
    assert normalize_scroll(1) == 1.0
    assert normalize_scroll(1.5) == 0.015
    assert normalize_scroll(100) == 1.0
    assert normalize_scroll(250) == 1.0
    assert normalize_scroll(-0.1) == 0.0
    for bad in (True, "80", None, [1], {"v": 1}, float("nan"), float("inf")):
        assert normalize_scroll(bad) is None


async def test_bad_payload_types_are_ignored() -> None:
    actor = await fresh_actor()
    view = await apply(
        actor,
        make_event("page_view", ts=1, payload={"eventData": "not-an-object", "url": 5, "metadata": [1, 2]}),
        make_event("page_view", ts=2, payload={"eventData": {"url": ["/x"]}, "metadata": {"url": None}}),
        make_event("scroll", ts=3, payload={"scrollDepth": "75%", "eventData": {"scrollDepth": True}}),
        make_event("scroll", ts=4, payload={"eventData": {"scrollDepth": "x"}, "scrollDepth": 40}),
        make_event("page_view", ts=5, raw_payload=b"[1, 2, 3]"),
        make_event("page_view", ts=6, raw_payload=b'"just a string"'),
        make_event("page_view", ts=7, raw_payload=b"{not json"),
        make_event("click", ts=8, payload={"deviceType": 3, "deviceId": {"x": 1}}),
    )
    assert view.event_count == 8
    assert view.page_views == 5
    assert view.pages == []
    assert view.current_page is None
    assert view.scroll_depth == 0.4  # the first usable value; the others were skipped
    assert view.device_type is None


async def test_user_and_device_are_the_last_non_null() -> None:
    actor = await fresh_actor()
    view = await apply(
        actor,
        make_event("a", ts=1, user="u1", device_type="mobile"),
        make_event("b", ts=2, user=None, payload={"deviceType": "tablet"}),
        make_event("c", ts=3, user=None),
    )
    assert (view.user_id, view.device_type) == ("u1", "tablet")


async def test_pages_are_bounded() -> None:
    actor = await fresh_actor()
    view = await apply(actor, *(page(f"/p{i}", 1_000 + i) for i in range(PAGES_KEPT + 5)))
    assert len(view.pages) == PAGES_KEPT
    assert (view.page_views, view.pages_dropped) == (PAGES_KEPT + 5, 5)
    assert view.pages[0].url == "/p5"
    assert view.current_page == f"/p{PAGES_KEPT + 4}"


def test_view_encodes_camel_case() -> None:
    info = extract(make_event("x", payload={"sessionContext": {"deviceId": "d1", "deviceType": "tv"}}))
    assert (info.device_id, info.device_type) == ("d1", "tv")
    from msgspec import json

    view = SessionView(
        session_id="s", user_id=None, device_type=None, event_count=0, page_views=0, pages=[], pages_dropped=0,
        current_page=None, time_on_page_ms=0, scroll_depth=0.0, max_scroll_depth=0.0, started_at=None,
        last_activity=None, last_event_type=None,
    )  # fmt: skip
    encoded = json.decode(json.encode(view))
    assert {"sessionId", "timeOnPageMs", "maxScrollDepth", "lastEventType", "pagesDropped"} <= set(encoded)


# snapshot, replay and the skip rule -------------------------------------------------------------
async def test_activation_skip_rule_counts_each_event_once() -> None:
    store = MemoryStore()
    e1, e2, e3 = store.add(page("/a", 1_000), make_event("click", ts=1_100), page("/b", 1_200))
    actor = SessionActor(KEY, store)
    await actor.activate()  # replays e1..e3
    assert actor.replayed_upto == e3.seq
    view = await apply(actor, e2, e3)  # the batch that triggered the activation: already counted
    assert (view.event_count, view.page_views) == (3, 2)
    (e4,) = store.add(make_event("click", ts=1_300))
    view = await apply(actor, e3, e4)
    assert view.event_count == 4
    view = await apply(actor, make_event("uncommitted", ts=1_400))  # seq 0: never in the log
    assert view.event_count == 5
    snapshot = actor.snapshot()
    assert snapshot is not None and covered(snapshot) == {e1.seq, e2.seq, e3.seq, e4.seq}


async def test_snapshot_round_trip_and_replay_after_it() -> None:
    store = MemoryStore()
    events = store.add(page("/a", 1_000), scroll(0.6, 1_100), page("/b", 2_000))
    actor = await fresh_actor(store)
    before = actor.view()
    snapshot = actor.snapshot()
    assert snapshot is not None
    await store.save_snapshot("p1", "session", "s1", snapshot)
    assert (await fresh_actor(store)).snapshot() is None  # nothing new since: no rewrite
    store.add(make_event("click", ts=2_500))  # committed after the snapshot
    again = await fresh_actor(store)
    assert again.replayed_upto == events[-1].seq + 1
    view = again.view()
    assert view.event_count == before.event_count + 1
    assert view.pages[0] == before.pages[0]
    assert view.last_activity == 2_500


async def test_unreadable_snapshot_rebuilds_from_the_log() -> None:
    store = MemoryStore()
    (event,) = store.add(page("/a", 1_000))
    await store.save_snapshot("p1", "session", "s1", Snapshot(state=b"\xc1garbage", upto_seq=event.seq))
    actor = await fresh_actor(store)
    assert actor.view().event_count == 1


async def test_crash_rebuilds_state_from_replay(autojump_clock: MockClock, nursery: trio.Nursery) -> None:
    store = MemoryStore()
    system = ActorSystem(store, {"session": session_factory})
    await nursery.start(system.run)
    events = store.add(page("/a", 1_000), page("/b", 2_000), make_event("click", ts=2_500))
    assert (await system.ask(KEY, ApplyEvents(events=events), timeout=1)).event_count == 3
    before = await system.ask(KEY, GetView(), timeout=1)
    with pytest.raises(ActorCrashed) as caught:
        await system.ask(KEY, "not a message", timeout=1)
    assert isinstance(caught.value.__cause__, TypeError)
    assert await system.ask(KEY, GetView(), timeout=1) == before
    assert system.stats().restarts == 1


async def test_passivation_round_trip(autojump_clock: MockClock, nursery: trio.Nursery) -> None:
    store = MemoryStore()
    system = ActorSystem(store, {"session": session_factory}, idle_ttl=30)
    await nursery.start(system.run)
    events = store.add(page("/a", 1_000), scroll(80, 1_500), page("/b", 2_000))
    await system.ask(KEY, ApplyEvents(events=events), timeout=1)
    before = await system.ask(KEY, GetView(), timeout=1)
    begin = trio.current_time()
    await trio.sleep_until(begin + 30)
    await trio.testing.wait_all_tasks_blocked()
    assert store.save_times == [begin + 30]
    assert covered(store.snapshots[("p1", "session", "s1")]) == {e.seq for e in events}
    assert await system.ask(KEY, GetView(), timeout=1) == before
    # an event whose delivery never happened (committed, then the request died) is caught up by replay
    store.add(make_event("click", ts=3_000))
    await trio.sleep(31)
    view = await system.ask(KEY, GetView(), timeout=1)
    assert (view.event_count, view.last_activity) == (4, 3_000)
    assert system.stats().passivations == 2


async def test_read_only_activation_writes_no_snapshot(
    autojump_clock: MockClock, nursery: trio.Nursery
) -> None:
    store = MemoryStore()
    system = ActorSystem(store, {"session": session_factory}, idle_ttl=30)
    await nursery.start(system.run)
    view = await system.ask(KEY, GetView(), timeout=1)  # a session nobody has seen
    assert view.event_count == 0 and view.current_page is None
    await trio.sleep(0.1)
    assert system.stats().live_total == 0  # not kept in memory for a mistyped id
    await trio.sleep(31)
    assert store.saves == []


async def test_the_view_does_not_depend_on_the_order_events_arrive_in() -> None:
    """Events of one session may arrive in any order (concurrent requests, several nodes): a scroll
    that arrives before its page view is credited to that page once the page view arrives."""
    import random

    events = []
    for i in range(40):
        ts = 10_000 + i * 1_000
        events.append(page(f"/p{i % 7}", ts) if i % 4 == 0 else scroll(((i * 37) % 100) / 100, ts))
    for i, event in enumerate(events, start=1):
        event.seq = i
    in_order = await fresh_actor()
    expected = await apply(in_order, *events)
    rng = random.Random(7)
    for _ in range(20):
        shuffled = events[:]
        rng.shuffle(shuffled)
        actor = await fresh_actor()
        for event in shuffled:  # one event per message: the worst case for attribution
            view = await apply(actor, event)
        assert view == expected


async def test_an_event_committed_late_with_a_lower_seq_survives_a_snapshot() -> None:
    """Across nodes seqs are not commit order: seq 5 may be applied and snapshotted before seq 4
    is committed. The snapshot must not claim seq 4, so a rebuild replays it."""
    store = MemoryStore()
    early, late = make_event("click", ts=1_000), make_event("click", ts=1_100)
    early.seq, late.seq = 5, 4
    store.events.append(early)  # seq 5 committed first (another node's seq 4 is still on its way)
    actor = await fresh_actor(store)
    snapshot = actor.snapshot()
    assert snapshot is not None
    await store.save_snapshot("p1", "session", "s1", snapshot)
    store.events.append(late)  # now seq 4 commits
    rebuilt = await fresh_actor(store)
    assert rebuilt.view().event_count == 2
    assert (await apply(rebuilt, late, early)).event_count == 2  # and a re-delivery counts nothing twice
