"""Session insights (sans-IO rules and the SessionActor's journey): actions from URLs, dwell in
event time, journeys split by gaps and end events, engagement ordering, patterns, and the insight
state across a snapshot."""

from __future__ import annotations

from typing import Any

from actors.insights import scores
from actors.insights.journey import DEFAULT_CONVERSIONS, SESSION_GAP_MS, JourneyState, observe, route_of
from actors.insights.model import Journey
from actors.insights.service import InsightService
from actors.insights.tracker import JourneyLog, JourneyTracker
from actors.projection import ApplyEvents, GetView
from actors.session import SessionActor, SessionView
from protocol.record import Event
from tests.actors.memory_store import MemoryStore, make_event

KEY = ("session", "p1", "s1")


def fold(events: list[tuple[str, int, dict[str, Any]]]) -> JourneyState:
    state = JourneyState()
    for name, ts, data in events:
        state, _ = observe(state, name, ts, url=data.get("url"), scroll=data.get("scroll"),
                           is_page_view=name == "page_view", conversions=DEFAULT_CONVERSIONS)
    return state


def test_route_of_takes_the_first_path_segment() -> None:
    assert route_of("/product/123") == "product"
    assert route_of("/") == "home"
    assert route_of("") == "home"
    assert route_of("https://shop.example/Pricing?plan=pro#x") == "pricing"
    assert route_of("/blog/?utm=1") == "blog"


def test_actions_dwell_and_signals_in_event_time() -> None:
    state = fold([
        ("page_view", 1_000, {"url": "/"}),
        ("scroll", 3_000, {"scroll": 0.4}),
        ("click", 4_000, {}),
        ("page_view", 11_000, {"url": "/product/9"}),
        ("purchase", 20_000, {}),
    ])
    assert [s.action for s in state.steps] == ["view_home", "view_product", "purchase"]
    home = state.steps[0]
    assert (home.dwell_ms, home.scroll, home.clicks) == (10_000, 0.4, 1)
    assert state.steps[1].dwell_ms == 9_000
    assert state.steps[-1].dwell_ms == -1  # the current page: not known yet
    assert state.converted


def test_a_gap_or_an_end_event_starts_a_new_journey() -> None:
    state = JourneyState()
    state, seen = observe(state, "page_view", 0, url="/a", scroll=None, is_page_view=True, conversions=DEFAULT_CONVERSIONS)
    state, seen = observe(state, "page_view", SESSION_GAP_MS + 1, url="/b", scroll=None, is_page_view=True,
                          conversions=DEFAULT_CONVERSIONS)
    assert seen.finished is not None and [s.action for s in seen.finished.steps] == ["view_a"]
    assert [s.action for s in state.steps] == ["view_b"] and state.journeys == 1
    state, seen = observe(state, "session_end", SESSION_GAP_MS + 5, url=None, scroll=None, is_page_view=False,
                          conversions=DEFAULT_CONVERSIONS)
    assert seen.ended_now and state.ended
    state, seen = observe(state, "page_view", SESSION_GAP_MS + 6, url="/c", scroll=None, is_page_view=True,
                          conversions=DEFAULT_CONVERSIONS)
    assert seen.finished is None  # the ended journey was already handed over by its end event
    assert [s.action for s in state.steps] == ["view_c"] and state.journeys == 2


def test_engagement_orders_engaged_over_skimming_over_bouncing() -> None:
    engaged = fold([("page_view", 0, {"url": "/"}), ("scroll", 20_000, {"scroll": 0.9}), ("click", 30_000, {}),
                    ("click", 40_000, {}), ("page_view", 90_000, {"url": "/product/1"}), ("scroll", 120_000, {"scroll": 1.0}),
                    ("click", 150_000, {}), ("page_view", 200_000, {"url": "/pricing"})])
    skimming = fold([("page_view", 0, {"url": "/"}), ("scroll", 2_000, {"scroll": 0.2}), ("page_view", 6_000, {"url": "/a"}),
                     ("page_view", 9_000, {"url": "/b"})])
    bouncing = fold([("page_view", 0, {"url": "/"})])
    e, s, b = (scores.engagement(x) for x in (engaged, skimming, bouncing))
    assert 0 <= b.score < s.score < e.score <= 1
    assert b.confidence < s.confidence < e.confidence  # grows with the evidence
    assert scores.dominant(scores.patterns(bouncing, b, scores.intent(bouncing, None))) == "bounce_risk"
    found = {p.pattern for p in scores.patterns(engaged, e, scores.intent(engaged, None))}
    assert {"research_focused", "price_sensitive", "high_engagement"} <= found


def test_trend_follows_the_current_page() -> None:
    state = fold([("page_view", 0, {"url": "/"}), ("scroll", 1_000, {"scroll": 0.1}), ("page_view", 2_000, {"url": "/a"})])
    assert scores.engagement(state).trend == "stable"
    for i in range(6):
        state, _ = observe(state, "click", 10_000 + i * 20_000, url=None, scroll=None, is_page_view=False,
                           conversions=DEFAULT_CONVERSIONS)
    state, _ = observe(state, "scroll", 130_000, url=None, scroll=1.0, is_page_view=False, conversions=DEFAULT_CONVERSIONS)
    assert scores.engagement(state).trend == "increasing"


def page(url: str, ts: int) -> Event:
    return make_event("page_view", ts=ts, payload={"eventData": {"url": url}})


async def session(store: MemoryStore, service: InsightService) -> SessionActor:
    actor = SessionActor(KEY, store, insights=service)
    await actor.activate()
    return actor


async def test_a_far_past_page_view_never_becomes_a_dwell_time() -> None:
    """Seed 000's example carries a December 2023 timestamp; an event sent now without one must not
    give that page three years of dwell: the gap starts a new journey."""
    actor = await session(MemoryStore(), InsightService())
    now = 1_790_000_000_000
    await actor.receive(ApplyEvents(events=[page("/product/123", 1_703_123_456_789)]))
    await actor.receive(ApplyEvents(events=[make_event("scroll", ts=now, payload={"eventData": {"scrollDepth": 0.5}})]))
    view = await actor.receive(GetView())
    assert isinstance(view, SessionView)
    assert view.time_on_page_ms == 0
    assert all(p.time_on_page_ms == 0 for p in view.pages)
    assert view.insights is not None and view.insights.based_on.events == 1  # the new journey


async def test_journeys_reach_the_service_and_insights_survive_a_snapshot() -> None:
    store = MemoryStore()
    service = InsightService()
    actor = await session(store, service)
    events = [page("/", 1_000), make_event("scroll", ts=5_000, payload={"eventData": {"scrollDepth": 0.8}}),
              page("/cart", 30_000), make_event("purchase", ts=40_000), make_event("session_end", ts=45_000)]
    for i, event in enumerate(events, start=1):
        event.seq = i
    await actor.receive(ApplyEvents(events=events[:3]))
    before = await actor.receive(GetView())
    snap = actor.snapshot()
    assert snap is not None
    await store.save_snapshot("p1", "session", "s1", snap)
    revived = await session(store, service)
    assert await revived.receive(GetView()) == before
    await revived.receive(ApplyEvents(events=events[3:]))
    journeys = list(service.project("p1").journeys.values())
    assert len(journeys) == 1
    journey: Journey = journeys[0]
    assert [s.action for s in journey.steps] == ["view_home", "view_cart", "purchase"]
    assert journey.converted and journey.steps[0].dwell_ms == 29_000 and journey.steps[0].scroll == 0.8


async def test_the_sweep_ends_idle_journeys_by_event_time_or_wall_time() -> None:
    service = InsightService()

    def tracked(journey: JourneyState) -> JourneyTracker:
        return JourneyTracker(JourneyLog(journey=journey), conversions=lambda: DEFAULT_CONVERSIONS, on_finished=lambda j: None)

    service.touch("p1", "old", tracked(fold([("page_view", 0, {"url": "/"})])))
    # the project's newest event: 10 gaps after "old"
    service.touch("p1", "live", tracked(fold([("page_view", 10 * SESSION_GAP_MS, {"url": "/"})])))
    assert service.sweep(now=0, now_ms=0) == 0  # just touched: a replaying client may still be sending
    import time

    later = time.monotonic() + 5
    assert service.sweep(now=later, now_ms=0) == 1  # "old" is a gap behind the project's newest event
    assert list(service.project("p1").journeys) == ["old@0"]
    # "live" is the newest event; the wall clock a gap later ends it too
    assert service.sweep(now=later, now_ms=10 * SESSION_GAP_MS) == 0
    assert service.sweep(now=later, now_ms=11 * SESSION_GAP_MS + 1) == 1
