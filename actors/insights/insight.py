"""A session's insights as published: engagement, intent, patterns, next action, conversion.

``InsightCache`` lives beside a SessionActor. The model's prediction for a session changes only
when the session takes an action (a page view, a conversion) or the project's model is refitted,
so it is cached on (model version, journey key, step count); in-page events (scrolls, clicks) only
move the engagement and the rules, which are a few arithmetic operations.
"""

from __future__ import annotations

from typing import Final

import msgspec

from actors.insights import scores
from actors.insights.journey import JourneyState, current_dwell_ms
from actors.insights.model import Prediction
from actors.insights.service import InsightService

TOP_ACTIONS: Final = 5


class ActionProbability(msgspec.Struct, rename="camel"):
    action: str
    probability: float


class NextAction(msgspec.Struct, kw_only=True, rename="camel"):
    action: str
    probability: float
    distribution: list[ActionProbability]  # the TOP_ACTIONS most likely, most likely first


class BasedOn(msgspec.Struct, kw_only=True, rename="camel"):
    events: int  # events of the session's current journey
    pages: int  # actions of the journey
    journeys: int  # completed journeys the project's model learned from (0: no model yet)
    model_types: int  # visitor types the model found (0: no model)
    model_version: int


class IntentOut(msgspec.Struct, kw_only=True, rename="camel"):
    purchase_intent: float
    interaction_intent: float
    exit_intent: float
    source: str


class EngagementOut(msgspec.Struct, kw_only=True, rename="camel"):
    score: float
    trend: str
    confidence: float
    components: dict[str, float]


class PatternOut(msgspec.Struct, kw_only=True, rename="camel"):
    pattern: str
    confidence: float
    indicators: list[str]


class SessionInsights(msgspec.Struct, kw_only=True, rename="camel"):
    engagement: EngagementOut
    intent: IntentOut
    behavior_pattern: str
    patterns: list[PatternOut]
    next_action: NextAction | None  # None until the project has a model that knows this action
    conversion_probability: float | None
    recommended_action: str
    recommendation_confidence: float
    converted: bool
    based_on: BasedOn


class StepInsight(msgspec.Struct, array_like=True):
    """The state after one event, for its stream message: engagement, purchase intent, pattern,
    the most likely next action (or None) and the recommended action."""

    engagement: float
    intent: float
    pattern: str
    next_action: str | None
    recommended: str
    time_on_page: int  # ms on the current page at this event (event time)


class InsightCache:
    __slots__ = ("_key", "_prediction")

    def __init__(self) -> None:
        self._key: tuple[int, str, int, int] | None = None
        self._prediction: Prediction | None = None

    def prediction(self, project: str, session_id: str, journey: JourneyState, service: InsightService) -> tuple[Prediction | None, int, int]:
        models = service.projects.get(project)
        model = models.model if models is not None else None
        if model is None or not journey.steps:
            return None, 0, 0
        key = (models.version if models else 0, journey.key(session_id), len(journey.steps) + journey.steps_dropped,
               int(journey.converted))
        if key != self._key:
            self._key = key
            self._prediction = model.predict(journey.steps)
        return self._prediction, model.journeys, model.types

    def step(self, project: str, session_id: str, journey: JourneyState, service: InsightService) -> StepInsight:
        prediction, _, _ = self.prediction(project, session_id, journey, service)
        eng = scores.engagement(journey)
        it = scores.intent(journey, prediction)
        found = scores.patterns(journey, eng, it)
        action, _ = scores.recommended_action(journey, found, it)
        top = prediction.next_actions[0][0] if prediction and prediction.next_actions else None
        return StepInsight(eng.score, it.purchase_intent, scores.dominant(found), top, action, current_dwell_ms(journey))

    def insights(self, project: str, session_id: str, journey: JourneyState, service: InsightService) -> SessionInsights:
        prediction, journeys, types = self.prediction(project, session_id, journey, service)
        models = service.projects.get(project)
        eng = scores.engagement(journey)
        it = scores.intent(journey, prediction)
        found = scores.patterns(journey, eng, it)
        action, confidence = scores.recommended_action(journey, found, it)
        next_action = None
        if prediction is not None and prediction.next_actions:
            top = [ActionProbability(a, round(p, 4)) for a, p in prediction.next_actions[:TOP_ACTIONS]]
            next_action = NextAction(action=top[0].action, probability=top[0].probability, distribution=top)
        return SessionInsights(
            engagement=EngagementOut(
                score=eng.score, trend=eng.trend, confidence=eng.confidence,
                components={"dwell": eng.dwell, "scroll": eng.scroll, "interaction": eng.interaction, "pages": eng.pages},
            ),
            intent=IntentOut(purchase_intent=it.purchase_intent, interaction_intent=it.interaction_intent,
                             exit_intent=it.exit_intent, source=it.source),
            behavior_pattern=scores.dominant(found),
            patterns=[PatternOut(pattern=p.pattern, confidence=p.confidence, indicators=p.indicators) for p in found],
            next_action=next_action,
            conversion_probability=round(prediction.conversion, 4) if prediction is not None else None,
            recommended_action=action,
            recommendation_confidence=round(confidence, 4),
            converted=journey.converted,
            based_on=BasedOn(events=journey.events, pages=len(journey.steps) + journey.steps_dropped,
                             journeys=journeys, model_types=types, model_version=models.version if models else 0),
        )
