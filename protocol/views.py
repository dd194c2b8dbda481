"""Outbound views of stored events: the seed 004 StoredEvent and the seed 000 stream message."""

from __future__ import annotations

from typing import Any, Final

import msgspec

from protocol.record import Event
from protocol.tracking import StoredEvent


def stored_event(event: Event) -> StoredEvent:
    return StoredEvent(
        id=event.id,
        name=event.name,
        userId=event.user_id,
        serviceName=event.service_name if event.service_name is not None else msgspec.UNSET,
        payload=event.payload,
        timestamp=event.timestamp,
        sessionId=event.session_id,
        receivedAt=event.received_at,
        seq=event.seq,
    )


def event_message(event: Event) -> dict[str, Any]:
    """Seed 004 stream message: ``{"type": "event", "data": StoredEvent}``."""
    return {"type": "event", "data": stored_event(event)}


_decode_object = msgspec.json.Decoder(dict[str, Any]).decode
_NESTED: Final = ("eventData", "metadata")  # the client's fields that the flat event lifts up


def flat_event(event: Event) -> dict[str, Any]:
    """Seed 000's flat ``event``: ``eventType`` and the fields of ``eventData`` (seed 000) or
    ``metadata`` (seed 004) at the top level, beside the payload's other top-level fields."""
    try:
        payload = _decode_object(event.payload)
    except (msgspec.DecodeError, msgspec.ValidationError):
        payload = {}
    flat: dict[str, Any] = {"eventType": event.name}
    for key, value in payload.items():
        if key not in _NESTED and key != "eventType":
            flat[key] = value
    for key in _NESTED:
        nested = payload.get(key)
        if isinstance(nested, dict):
            for inner, value in nested.items():
                flat.setdefault(inner, value)
    return flat


def behavioral_message(event: Event, session: Any | None, step: Any | None = None) -> dict[str, Any]:
    """Seed 000 ``behavioral_event`` stream message: the flat event with the session's engagement
    and purchase intent after it, and the insights (pattern, likely next action, recommended
    action). ``session`` is the session's summary after the batch (None without a session);
    ``step`` the state right after this event, when the actor reported it."""
    flat = flat_event(event)
    message: dict[str, Any] = {
        "type": "behavioral_event",
        "timestamp": event.timestamp,
        "eventId": event.id,
        "eventType": event.name,
        "sessionId": event.session_id,
        "userId": event.user_id,
        "event": flat,
    }
    if session is None:
        return message
    insights = getattr(session, "insights", None)
    time_on_page = getattr(session, "time_on_page_ms", None)
    if step is not None:
        engagement, intent, pattern, next_action, recommended, time_on_page = (
            step.engagement, step.intent, step.pattern, step.next_action, step.recommended, step.time_on_page)
    elif insights is not None:
        engagement, intent, pattern, recommended = (insights.engagement.score, insights.intent.purchase_intent,
                                                    insights.behavior_pattern, insights.recommended_action)
        next_action = insights.next_action.action if insights.next_action else None
    else:
        message["session"] = session
        return message
    flat.setdefault("timeOnPage", time_on_page)  # the client's own figure wins
    flat["engagementScore"] = engagement
    flat["intentProbability"] = intent
    message["insights"] = {"behaviorPattern": pattern, "nextActionPrediction": next_action, "recommendedAction": recommended}
    message["session"] = session
    return message


def metrics_message(session: Any) -> dict[str, Any]:
    """Seed 000 ``engagement_metrics`` subscription: a session's live metrics after a batch."""
    return {"type": "session_metrics", "sessionId": getattr(session, "session_id", None), "metrics": session}
