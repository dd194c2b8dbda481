"""One Segment or PostHog message as an ordinary Pulse event (source "events", as seed 004's track).

The stored payload is an AIEventPayload-compatible object (protocol/tracking.py): the fields Pulse
indexes and shows at the top (userId, sessionId, serviceName, userAgent, referrer, deviceType, the
client's id), and everything else the SDK sent (properties, traits, context, ids) under
``metadata``, so /api/events, the streams and the actors (actors/payload.py reads ``metadata.url``)
treat it like any other tracked event.
"""

from __future__ import annotations

from typing import Any

import msgspec

from protocol.normalize import checked, new_event_id
from protocol.record import SOURCE_EVENTS, Event

_encoder = msgspec.json.Encoder()


class CompatPayload(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The stored payload: a subset of AIEventPayload's fields, with the SDK's message in metadata."""

    userId: str
    serviceName: str
    sessionId: str | None = None
    userAgent: str | None = None
    referrer: str | None = None
    deviceType: str | None = None
    messageId: str | None = None  # Segment's messageId
    eventId: str | None = None  # PostHog's uuid
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)


def compat_event(
    project: str,
    name: str,
    payload: CompatPayload,
    *,
    client_id: str | None,
    timestamp: int,
    flags: int,
    received_at: int,
    root: str,
) -> Event:
    return checked(Event(
        id=new_event_id(),
        project=project,
        name=name,
        source=SOURCE_EVENTS,
        timestamp=timestamp,
        received_at=received_at,
        payload=msgspec.Raw(_encoder.encode(payload)),
        user_id=payload.userId,
        session_id=payload.sessionId,
        service_name=payload.serviceName,
        device_type=payload.deviceType,
        client_id=client_id,
        flags=flags,
    ), root)


def present(**fields: Any) -> dict[str, Any]:
    """The given fields that have a value (None means the SDK did not send it)."""
    return {key: value for key, value in fields.items() if value is not None}
