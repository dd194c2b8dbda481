"""Engagement, intent, behaviour patterns and the recommended action of one journey.

Every number is computed from the journey's own events (and, for purchase and exit intent, from
the project's learned model when there is one); docs/insights.md gives each rule. Sans-IO.
"""

from __future__ import annotations

import math
from typing import Final

import msgspec

from actors.insights.journey import JourneyState, current_dwell_ms
from actors.insights.model import EXIT, Journey, Prediction, Step

TREND_STEP: Final = 0.05  # a change of the score smaller than this is "stable"
PRICE_ROUTES: Final = frozenset({"pricing", "plans", "prices", "price", "deals", "offers", "sale", "coupons", "discounts"})
COMPARE_ROUTES: Final = frozenset({"compare", "comparison", "vs"})
CART_ROUTES: Final = frozenset({"cart", "basket", "checkout", "bag"})
# the same as actions (JourneyState.routes counts the kept steps per action)
PRICE_ACTIONS: Final = frozenset("view_" + r for r in PRICE_ROUTES)
COMPARE_ACTIONS: Final = frozenset("view_" + r for r in COMPARE_ROUTES)
CART_ACTIONS: Final = frozenset("view_" + r for r in CART_ROUTES)


class Engagement(msgspec.Struct, kw_only=True):
    score: float  # 0..1
    trend: str  # increasing | stable | decreasing
    confidence: float  # 0..1, grows with the events seen
    dwell: float  # the four components, each 0..1
    scroll: float
    interaction: float
    pages: float


class Intent(msgspec.Struct, kw_only=True):
    purchase_intent: float
    interaction_intent: float
    exit_intent: float
    source: str  # "model" (learned) or "rules" (no model yet)


class Pattern(msgspec.Struct, kw_only=True):
    pattern: str
    confidence: float
    indicators: list[str]


def _saturate(value: float, scale: float) -> float:
    return 1.0 - math.exp(-max(0.0, value) / scale)


def _components(pages: int, dwell_ms: int, timed_pages: int, scroll_sum: float, scrolled_pages: int,
                interactions: int) -> tuple[float | None, ...]:
    """dwell, scroll, interaction and pages components in [0, 1]; None for a signal never seen (a
    site that sends no scroll events is not scored as one nobody scrolls on)."""
    return (
        _saturate(dwell_ms / 1000 / timed_pages, 60.0) if timed_pages else None,  # a minute per page is engaged
        scroll_sum / scrolled_pages if scrolled_pages else None,
        _saturate(interactions / max(pages, 1), 3.0),  # ~3 interactions per page is engaged
        _saturate(pages, 5.0),
    )


_WEIGHTS: Final = (0.35, 0.25, 0.25, 0.15)


def _score(parts: tuple[float | None, ...]) -> float:
    """The weighted mean of the components that have evidence (weights renormalised)."""
    weight = sum(w for w, p in zip(_WEIGHTS, parts, strict=True) if p is not None)
    total = sum(w * p for w, p in zip(_WEIGHTS, parts, strict=True) if p is not None)
    return round(total / weight, 4) if weight else 0.0


def engagement(state: JourneyState) -> Engagement:
    """The journey's engagement now (the current page counted once it has time or signals), its
    trend against the score when the current page opened, and the confidence."""
    completed = state.pages_completed
    current = state.steps[-1] if state.steps else None
    dwell_now = current_dwell_ms(state)
    scrolled = state.scrolled_pages
    scroll_sum = state.scroll_sum
    clicks = state.clicks_sum
    timed = completed
    if current is not None:
        clicks += current.clicks
        if current.scroll >= 0:
            scrolled += 1
            scroll_sum += current.scroll
        if dwell_now > 0:
            timed += 1
    pages = completed + (1 if current else 0)
    # clicks, inputs, hovers...: every in-page event but scrolls (they have their own component)
    now = _components(pages, state.dwell_sum_ms + dwell_now, timed, scroll_sum, scrolled, clicks)
    before = _components(completed, state.dwell_sum_ms, completed, state.scroll_sum, state.scrolled_pages, state.clicks_sum)
    score, previous = _score(now), _score(before)
    trend = "stable"
    if completed and score - previous > TREND_STEP:
        trend = "increasing"
    elif completed and previous - score > TREND_STEP:
        trend = "decreasing"
    return Engagement(
        score=score,
        trend=trend,
        confidence=round(_saturate(state.events, 8.0), 4),
        dwell=round(now[0] or 0.0, 4),
        scroll=round(now[1] or 0.0, 4),
        interaction=round(now[2] or 0.0, 4),
        pages=round(now[3] or 0.0, 4),
    )


def intent(state: JourneyState, prediction: Prediction | None) -> Intent:
    """Purchase and exit intent from the learned model (the chance of converting, the chance that
    the next action is leaving); without a model, from the journey's own route mix. Interaction
    intent: the Laplace-smoothed share of the journey's events that were in-page interactions."""
    interaction = (state.interactions + 1) / (state.events + 2)
    if prediction is not None:
        exit_p = next((p for a, p in prediction.next_actions if a == EXIT), 0.0)
        return Intent(purchase_intent=round(prediction.conversion, 4), interaction_intent=round(interaction, 4),
                      exit_intent=round(1.0 if state.ended else exit_p, 4), source="model")
    toward = sum(n for a, n in state.routes.items() if a in CART_ACTIONS or a in PRICE_ACTIONS)
    purchase = 1.0 if state.converted else (toward + 0.5) / (len(state.steps) + 2)
    exit_p = 1.0 if state.ended else 1.0 / (state.pages_completed + 2)  # the shorter, the likelier to leave
    return Intent(purchase_intent=round(purchase, 4), interaction_intent=round(interaction, 4),
                  exit_intent=round(exit_p, 4), source="rules")


def patterns(state: JourneyState, eng: Engagement, it: Intent) -> list[Pattern]:
    """The documented behaviour patterns the journey shows, strongest first."""
    found: list[Pattern] = []
    routes = state.routes  # action -> kept steps ("view_pricing": 2)
    pages = len(state.steps)
    mean_dwell_s = state.dwell_sum_ms / 1000 / state.pages_completed if state.pages_completed else 0.0
    evidence = eng.confidence

    def add(name: str, strength: float, indicators: list[str]) -> None:
        found.append(Pattern(pattern=name, confidence=round(min(1.0, strength) * evidence, 4), indicators=indicators))

    if state.converted:
        add("converted", 1.0, ["conversion_event"])
    if pages >= 3 and mean_dwell_s >= 30:
        research = min(1.0, pages / 5) * min(1.0, mean_dwell_s / 60)
        if it.purchase_intent >= 0.5 and not state.converted:
            add("high_intent_researcher", research * it.purchase_intent, ["multiple_page_views", "long_dwell_time", "purchase_intent"])
        add("research_focused", research, ["multiple_page_views", "long_dwell_time"])
    carted = any(a in CART_ACTIONS for a in routes)
    if carted and not state.converted and (state.ended or it.exit_intent >= 0.5):
        add("cart_abandonment_risk", max(it.exit_intent, 0.5), ["cart_visited", "no_conversion", "exit_signal"])
    repeats = max((n for a, n in routes.items() if a.startswith("view_")), default=0)
    if any(a in COMPARE_ACTIONS for a in routes) or repeats >= 3:
        add("comparison_behavior", min(1.0, repeats / 4) if repeats >= 3 else 0.8, ["comparison_behavior"])
    if any(a in PRICE_ACTIONS for a in routes):
        add("price_sensitive", 0.5 + 0.5 * min(1.0, sum(n for a, n in routes.items() if a in PRICE_ACTIONS) / 2), ["pricing_viewed"])
    if eng.score >= 0.6:
        add("high_engagement", eng.score, ["long_dwell_time" if eng.dwell >= 0.5 else "interactions", "scroll_depth"])
    if pages == 1 and current_dwell_ms(state) < 10_000 and state.interactions == 0:
        add("bounce_risk", 1.0 - current_dwell_ms(state) / 10_000, ["single_page", "short_dwell"])
    found.sort(key=lambda p: -p.confidence)
    return found


def completed(state: JourneyState, session_id: str) -> Journey:
    """The journey as the models learn it and the historical analytics read it: a copy of its
    steps (the state goes on changing) with its engagement, conversions and patterns."""
    steps = [Step(s.action, s.dwell_ms, s.scroll, s.clicks) for s in state.steps]
    eng = engagement(state)
    found = patterns(state, eng, intent(state, None))
    return Journey(
        key=state.key(session_id), ended_at=state.last_at, steps=steps, started_at=state.started_at,
        user_id=state.user_id, device_type=state.device_type, persona=state.persona, engagement=eng.score,
        converted=state.converted, conversions=sum(1 for s in state.steps if not s.action.startswith("view_")),
        pattern=dominant(found), patterns=[p.pattern for p in found],
    )


def dominant(found: list[Pattern]) -> str:
    return found[0].pattern if found else "casual_browsing"


def recommended_action(state: JourneyState, found: list[Pattern], it: Intent) -> tuple[str, float]:
    """The action to take now and how sure we are, from the patterns and the intents."""
    names = {p.pattern for p in found}
    if "cart_abandonment_risk" in names:
        return "trigger_cart_recovery", it.exit_intent
    if not state.converted and it.purchase_intent >= 0.6:
        return "trigger_conversion_assist", it.purchase_intent
    if not state.converted and it.exit_intent >= 0.5:
        return "show_exit_offer", it.exit_intent
    if "research_focused" in names or "high_intent_researcher" in names:
        return "provide_detailed_info", next(p.confidence for p in found if p.pattern in ("research_focused", "high_intent_researcher"))
    if "price_sensitive" in names:
        return "highlight_value_proposition", next(p.confidence for p in found if p.pattern == "price_sensitive")
    return "continue_monitoring", 1.0 - max(it.purchase_intent, it.exit_intent)
