"""How much two sessions look like one person's journey across devices: the continuity figures and
the unified profile of ``POST /api/v1/behavioral/cross-device/link`` (seed 000). Sans-IO: facts in,
figures out; the route gathers the facts (live session views from the actors, the newest stored
events of each session) and calls ``link_figures``.

Every figure is in [0, 1], rounded to 4 places, and computed from the two sessions:

- **behaviorContinuity**: the overlap of the two sessions' event-type distributions (the share of
  each event type among the session's newest EVENT_SAMPLE events), measured as the histogram
  intersection ``sum over types of min(p_a(type), p_b(type))`` = 1 - total variation distance.
  1: both did the same mix of things (40 % page views, 60 % scrolls on each); 0: nothing in common.
- **intentContinuity**: ``1 - |purchase intent a - purchase intent b|``, the purchase intents being
  the sessions' live insights (actors/insights/scores.py ``intent``): 1 when both are as close to
  buying, lower the further apart they are.
- **contextualContinuity**: the mean of *page overlap* and *temporal proximity*. Page overlap is the
  Jaccard index of the kinds of pages seen (the first path segment of each url the session's live
  state keeps: ``/product/1`` and ``/product/2`` are both ``product``); temporal proximity is
  ``0.5 ** (gap / PROXIMITY_HALF_LIFE_MS)``, the gap being the time between the two sessions'
  activity spans (0 when they overlap): 1 for concurrent sessions, 0.5 thirty minutes apart. When
  neither session has a page view, page overlap says nothing and the figure is the proximity alone.

The unified profile: each session's device type; ``behaviorPattern`` is ``cross_device_`` plus the
persona of the behaviour pattern with the highest summed confidence over both sessions' live
patterns (a pattern both show counts twice); ``conversionStage`` is the furthest stage either session
reached (STAGES: ``purchase`` if either converted; ``decision`` if either visited a cart or checkout
page, shows cart abandonment risk, or has purchase intent >= DECISION_INTENT; ``consideration`` if
either researched, compared or looked at prices, or has purchase intent >= CONSIDERATION_INTENT;
else ``awareness``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any, Final

import msgspec

from actors.insights.journey import route_of
from actors.insights.scores import CART_ACTIONS
from actors.payload import extract
from protocol.record import Event

EVENT_SAMPLE: Final = 1000  # the newest events of each session whose types are compared
PROXIMITY_HALF_LIFE_MS: Final = 30 * 60_000
CONSIDERATION_INTENT: Final = 0.3
DECISION_INTENT: Final = 0.6
STAGES: Final = ("awareness", "consideration", "decision", "purchase")
CONSIDERING_PATTERNS: Final = frozenset({"research_focused", "high_intent_researcher", "comparison_behavior",
                                         "price_sensitive"})
# the persona a behaviour pattern (actors/insights/scores.py patterns) stands for across devices
PERSONAS: Final = {
    "research_focused": "researcher",
    "high_intent_researcher": "researcher",
    "comparison_behavior": "comparer",
    "price_sensitive": "deal_seeker",
    "converted": "buyer",
    "cart_abandonment_risk": "cart_abandoner",
    "high_engagement": "engaged_visitor",
    "bounce_risk": "bouncer",
    "casual_browsing": "browser",
}


class SessionFacts(msgspec.Struct, kw_only=True, frozen=True):
    """What the figures need of one session."""

    session_id: str
    user_id: str | None  # the userId its events carry (the latest one)
    device_type: str | None
    device_id: str  # the events' deviceId, else the session id
    event_types: dict[str, int]  # lower-cased event type -> count among the sampled events
    sampled_events: int
    routes: frozenset[str]  # kinds of pages seen (first path segment of the kept pages' urls)
    current_page: str | None
    started_at: int | None  # unix ms
    last_activity: int | None
    engagement: float | None  # live insights; None when the session has none yet
    intent: float | None
    patterns: tuple[tuple[str, float], ...]  # (pattern, confidence), strongest first
    behavior_pattern: str | None
    converted: bool
    event_count: int


def facts_of(view: Any, newest_events: Iterable[Event]) -> SessionFacts:
    """The facts of a session from its live view (actors/session.py SessionView) and its newest
    stored events (newest first, at most EVENT_SAMPLE)."""
    types: Counter[str] = Counter()
    device_id: str | None = None
    sampled = 0
    for event in newest_events:
        sampled += 1
        types[event.name.lower()] += 1
        if device_id is None:
            device_id = extract(event).device_id  # the newest one the client sent
    ins = view.insights
    return SessionFacts(
        session_id=view.session_id,
        user_id=view.user_id,
        device_type=view.device_type,
        device_id=device_id or view.session_id,
        event_types=dict(types),
        sampled_events=sampled,
        routes=frozenset(route_of(page.url) for page in view.pages),
        current_page=view.current_page,
        started_at=view.started_at,
        last_activity=view.last_activity,
        engagement=None if ins is None else ins.engagement.score,
        intent=None if ins is None else ins.intent.purchase_intent,
        patterns=() if ins is None else tuple((p.pattern, p.confidence) for p in ins.patterns),
        behavior_pattern=None if ins is None else ins.behavior_pattern,
        converted=bool(ins is not None and ins.converted),
        event_count=view.event_count,
    )


def behavior_continuity(a: SessionFacts, b: SessionFacts) -> float | None:
    """Histogram intersection of the event-type distributions; None when either has no events."""
    total_a, total_b = sum(a.event_types.values()), sum(b.event_types.values())
    if not total_a or not total_b:
        return None
    shared = sum(min(n / total_a, b.event_types.get(name, 0) / total_b) for name, n in a.event_types.items())
    return round(min(1.0, shared), 4)


def intent_continuity(a: SessionFacts, b: SessionFacts) -> float | None:
    if a.intent is None or b.intent is None:
        return None
    return round(1.0 - abs(a.intent - b.intent), 4)


def page_overlap(a: SessionFacts, b: SessionFacts) -> float | None:
    """Jaccard index of the kinds of pages seen; None when neither saw a page."""
    union = a.routes | b.routes
    if not union:
        return None
    return len(a.routes & b.routes) / len(union)


def temporal_proximity(a: SessionFacts, b: SessionFacts) -> float | None:
    if None in (a.started_at, a.last_activity, b.started_at, b.last_activity):
        return None
    assert a.started_at is not None and a.last_activity is not None  # for mypy: checked above
    assert b.started_at is not None and b.last_activity is not None
    gap = max(0, max(a.started_at, b.started_at) - min(a.last_activity, b.last_activity))
    return 0.5 ** (gap / PROXIMITY_HALF_LIFE_MS)


def contextual_continuity(a: SessionFacts, b: SessionFacts) -> float | None:
    parts = [p for p in (page_overlap(a, b), temporal_proximity(a, b)) if p is not None]
    return round(sum(parts) / len(parts), 4) if parts else None


def behavior_pattern(a: SessionFacts, b: SessionFacts) -> str:
    strength: dict[str, float] = {}
    for facts in (a, b):
        for name, confidence in facts.patterns:
            strength[name] = strength.get(name, 0.0) + confidence
    if strength:
        best = max(strength.items(), key=lambda item: item[1])[0]  # first of the strongest on a tie
    else:
        best = a.behavior_pattern or b.behavior_pattern or "casual_browsing"
    return "cross_device_" + PERSONAS.get(best, best)


def conversion_stage(a: SessionFacts, b: SessionFacts) -> str:
    pair = (a, b)
    if any(f.converted for f in pair):
        return "purchase"
    intent = max((f.intent for f in pair if f.intent is not None), default=0.0)
    names = {name for f in pair for name, _ in f.patterns}
    carted = any("view_" + route in CART_ACTIONS for f in pair for route in f.routes)
    if carted or "cart_abandonment_risk" in names or intent >= DECISION_INTENT:
        return "decision"
    if names & CONSIDERING_PATTERNS or intent >= CONSIDERATION_INTENT:
        return "consideration"
    return "awareness"


def link_figures(primary: SessionFacts, secondary: SessionFacts) -> dict[str, Any]:
    """The seed's ``continuity`` and ``unifiedProfile`` blocks, and what they are based on."""
    overlap, proximity = page_overlap(primary, secondary), temporal_proximity(primary, secondary)
    return {
        "continuity": {
            "behaviorContinuity": behavior_continuity(primary, secondary),
            "intentContinuity": intent_continuity(primary, secondary),
            "contextualContinuity": contextual_continuity(primary, secondary),
        },
        "unifiedProfile": {
            "primaryDevice": primary.device_type or "unknown",
            "secondaryDevice": secondary.device_type or "unknown",
            "behaviorPattern": behavior_pattern(primary, secondary),
            "conversionStage": conversion_stage(primary, secondary),
        },
        "basedOn": {
            "primary": _based_on(primary),
            "secondary": _based_on(secondary),
            "pageOverlap": None if overlap is None else round(overlap, 4),
            "temporalProximity": None if proximity is None else round(proximity, 4),
        },
    }


def _based_on(facts: SessionFacts) -> dict[str, Any]:
    return {"sessionId": facts.session_id, "events": facts.event_count, "eventsCompared": facts.sampled_events,
            "eventTypes": len(facts.event_types), "pageKinds": len(facts.routes), "engagement": facts.engagement,
            "intent": facts.intent}
