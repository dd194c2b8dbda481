"""Outbound views of stored events: the seed 004 StoredEvent and the seed 000 stream message."""

from __future__ import annotations

from typing import Any

from protocol.record import Event
from protocol.tracking import StoredEvent


def stored_event(event: Event) -> StoredEvent:
    return StoredEvent(
        id=event.id,
        name=event.name,
        userId=event.user_id,
        serviceName=event.service_name,
        payload=event.payload,
        timestamp=event.timestamp,
        sessionId=event.session_id,
        receivedAt=event.received_at,
        seq=event.seq,
    )


def event_message(event: Event) -> dict[str, Any]:
    """Seed 004 stream message: ``{"type": "event", "data": StoredEvent}``."""
    return {"type": "event", "data": stored_event(event)}


def behavioral_message(event: Event, session: Any | None) -> dict[str, Any]:
    """Seed 000 ``behavioral_event`` stream message. ``event`` is the client's event as sent;
    ``session`` is the session's live state after this batch (when the event had a session)."""
    message: dict[str, Any] = {
        "type": "behavioral_event",
        "timestamp": event.timestamp,
        "eventId": event.id,
        "eventType": event.name,
        "sessionId": event.session_id,
        "userId": event.user_id,
        "event": event.payload,
    }
    if session is not None:
        message["session"] = session
    return message


def metrics_message(session: Any) -> dict[str, Any]:
    """Seed 000 ``engagement_metrics`` subscription: a session's live metrics after a batch."""
    return {"type": "session_metrics", "sessionId": getattr(session, "session_id", None), "metrics": session}
