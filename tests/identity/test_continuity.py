"""The continuity figures and the unified profile of a link (actors/identity/continuity.py) on
generated sessions: each figure against its definition, and its bounds over random sessions."""

from __future__ import annotations

import random

import msgspec
import pytest

from actors.identity.continuity import (
    EVENT_SAMPLE,
    PROXIMITY_HALF_LIFE_MS,
    SessionFacts,
    behavior_continuity,
    behavior_pattern,
    contextual_continuity,
    conversion_stage,
    facts_of,
    intent_continuity,
    link_figures,
)
from actors.insights.insight import BasedOn, EngagementOut, IntentOut, PatternOut, SessionInsights
from actors.session import PageVisit, SessionView
from protocol.record import Event

MINUTE = 60_000


def facts(session: str = "s", *, types: dict[str, int] | None = None, routes: tuple[str, ...] = (),
          span: tuple[int, int] | None = (0, MINUTE), intent: float | None = 0.5,
          patterns: tuple[tuple[str, float], ...] = (), converted: bool = False) -> SessionFacts:
    types = {"page_view": 1} if types is None else types
    return SessionFacts(
        session_id=session, user_id=None, device_type="mobile", device_id=session, event_types=types,
        sampled_events=sum(types.values()), routes=frozenset(routes), current_page=None,
        started_at=span[0] if span else None, last_activity=span[1] if span else None, engagement=0.5,
        intent=intent, patterns=patterns, behavior_pattern=patterns[0][0] if patterns else None,
        converted=converted, event_count=sum(types.values()),
    )


def test_behaviour_continuity_is_the_overlap_of_the_event_type_mix() -> None:
    same_mix = behavior_continuity(facts(types={"page_view": 2, "scroll": 2}), facts(types={"page_view": 5, "scroll": 5}))
    assert same_mix == 1.0
    disjoint = behavior_continuity(facts(types={"page_view": 3}), facts(types={"click": 3}))
    assert disjoint == 0.0
    # 50 % / 50 % against 25 % / 75 %: min(.5, .25) + min(.5, .75)
    assert behavior_continuity(facts(types={"a": 1, "b": 1}), facts(types={"a": 1, "b": 3})) == 0.75
    assert behavior_continuity(facts(types={}), facts()) is None  # nothing to compare


def test_intent_continuity_is_one_minus_the_intent_gap() -> None:
    assert intent_continuity(facts(intent=0.72), facts(intent=0.68)) == 0.96
    assert intent_continuity(facts(intent=0.0), facts(intent=1.0)) == 0.0
    assert intent_continuity(facts(intent=None), facts()) is None


def test_contextual_continuity_is_page_overlap_and_time_proximity() -> None:
    concurrent = contextual_continuity(facts(routes=("product", "pricing")), facts(routes=("product",)))
    assert concurrent == round((1 / 2 + 1.0) / 2, 4)
    later = facts(routes=("product",), span=(MINUTE + PROXIMITY_HALF_LIFE_MS, 2 * MINUTE + PROXIMITY_HALF_LIFE_MS))
    assert contextual_continuity(facts(routes=("product",)), later) == round((1.0 + 0.5) / 2, 4)  # half-life apart
    # neither saw a page: the proximity alone
    assert contextual_continuity(facts(), facts()) == 1.0
    assert contextual_continuity(facts(span=None), facts(span=None)) is None


def test_the_profile_takes_the_strongest_shared_pattern_and_the_furthest_stage() -> None:
    a = facts(patterns=(("comparison_behavior", 0.6), ("price_sensitive", 0.5)))
    b = facts(patterns=(("price_sensitive", 0.4),))
    assert behavior_pattern(a, b) == "cross_device_deal_seeker"  # 0.9 over both against 0.6
    assert behavior_pattern(facts(), facts()) == "cross_device_browser"
    assert conversion_stage(facts(intent=0.1), facts(intent=0.2)) == "awareness"
    assert conversion_stage(facts(intent=0.1), facts(intent=0.35)) == "consideration"
    assert conversion_stage(facts(intent=0.1, patterns=(("research_focused", 0.3),)), facts(intent=0.1)) == "consideration"
    assert conversion_stage(facts(intent=0.1, routes=("cart",)), facts(intent=0.1)) == "decision"
    assert conversion_stage(facts(intent=0.65), facts(intent=0.1)) == "decision"
    assert conversion_stage(facts(converted=True, intent=0.0), facts()) == "purchase"


@pytest.mark.parametrize("seed", range(20))
def test_every_figure_stays_in_bounds_and_is_symmetric(seed: int) -> None:
    rng = random.Random(seed)
    names = ["page_view", "scroll", "click", "purchase", "input"]
    routes = ["home", "product", "pricing", "cart", "blog"]

    def generated(name: str) -> SessionFacts:
        start = rng.randrange(0, 10 * PROXIMITY_HALF_LIFE_MS)
        return facts(name, types={n: rng.randrange(1, 50) for n in rng.sample(names, rng.randrange(1, 5))},
                     routes=tuple(rng.sample(routes, rng.randrange(0, 5))),
                     span=(start, start + rng.randrange(0, 3_600_000)), intent=round(rng.random(), 4))

    a, b = generated("a"), generated("b")
    forward, backward = link_figures(a, b)["continuity"], link_figures(b, a)["continuity"]
    for name, value in forward.items():
        assert value is not None and 0.0 <= value <= 1.0, (name, value)
        assert abs(value - backward[name]) <= 1e-4, name  # the order of the two sessions does not matter


def view(session: str, pages: list[str], *, intent: float, user: str | None = None) -> SessionView:
    insights = SessionInsights(
        engagement=EngagementOut(score=0.4, trend="stable", confidence=0.5, components={}),
        intent=IntentOut(purchase_intent=intent, interaction_intent=0.2, exit_intent=0.3, source="rules"),
        behavior_pattern="casual_browsing", patterns=[PatternOut(pattern="price_sensitive", confidence=0.7, indicators=[])],
        next_action=None, conversion_probability=None, recommended_action="none", recommendation_confidence=0.1,
        converted=False, based_on=BasedOn(events=3, pages=len(pages), journeys=0, model_types=0, model_version=0),
    )
    return SessionView(
        session_id=session, user_id=user, device_type="tablet", event_count=7, page_views=len(pages),
        pages=[PageVisit(url=u, entered_at=i * 1000, time_on_page_ms=1000) for i, u in enumerate(pages)],
        pages_dropped=0, current_page=pages[-1] if pages else None, time_on_page_ms=0, scroll_depth=0.0,
        max_scroll_depth=0.0, started_at=0, last_activity=5000, last_event_type="click", insights=insights,
    )


def stored(name: str, payload: dict[str, object], seq: int) -> Event:
    return Event(id=f"e{seq}", project="p", name=name, source="behavioral", timestamp=seq, received_at=seq,
                 payload=msgspec.Raw(msgspec.json.encode(payload)), seq=seq, session_id="s")


def test_facts_come_from_the_live_view_and_the_newest_events() -> None:
    newest_first = [stored("Click", {"deviceId": "dev-new"}, 3), stored("click", {"deviceId": "dev-old"}, 2),
                    stored("page_view", {}, 1)]
    found = facts_of(view("s", ["/product/1", "/product/2?x=1", "/"], intent=0.3, user="u"), newest_first)
    assert found.event_types == {"click": 2, "page_view": 1} and found.sampled_events == 3
    assert found.device_id == "dev-new"  # the newest device id the client sent
    assert found.routes == frozenset({"product", "home"})
    assert (found.intent, found.engagement, found.user_id, found.event_count) == (0.3, 0.4, "u", 7)
    assert found.patterns == (("price_sensitive", 0.7),)
    anonymous = facts_of(view("t", [], intent=0.1), [stored("click", {}, 1)])
    assert anonymous.device_id == "t" and anonymous.routes == frozenset()  # no device id sent: the session's
    assert EVENT_SAMPLE >= 100
