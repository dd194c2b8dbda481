"""The normalized event record: what every ingest path produces and every layer after it consumes.

Both seed APIs (``/api/events/*`` and ``/api/v1/behavioral/*``) decode into this one shape, so the
store, the actors and the streams never care which door an event came through.
"""

from __future__ import annotations

from typing import Final

import msgspec

SOURCE_EVENTS: Final = "events"  # seed 004: /api/events/track/*
SOURCE_BEHAVIORAL: Final = "behavioral"  # seed 000: /api/v1/behavioral/*

# Event.flags bits
FLAG_CLAMPED_FUTURE: Final = 1  # the client's timestamp was in the future and was clamped to receivedAt
FLAG_SKEW_CORRECTED: Final = 2  # the timestamp was corrected with the client's sentAt


class Event(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One stored event. ``seq`` is 0 until the store assigns it (monotonic per process store)."""

    id: str  # server-assigned id ("evt_..."), or the original id when a duplicate is detected
    project: str  # project id
    name: str  # eventName (seed 004) or eventType (seed 000)
    source: str  # SOURCE_EVENTS | SOURCE_BEHAVIORAL
    timestamp: int  # unix ms, skew-corrected and clamped
    received_at: int  # unix ms, server clock
    payload: msgspec.Raw  # the client's event object as JSON bytes (seed 004: AIEventPayload)
    seq: int = 0
    user_id: str | None = None
    session_id: str | None = None
    service_name: str | None = None
    correlation_id: str | None = None
    device_type: str | None = None
    status_code: int | None = None
    response_time_ms: float | None = None
    client_id: str | None = None  # eventId / messageId / insertId sent by the client, for dedup
    flags: int = 0
    # unix ms after which the retention job removes the event (a privacy-compliant event's
    # ``retention``); None: the project's retention applies (storage/retention, issue 14)
    expires_at: int | None = None


class AppendOutcome(msgspec.Struct, frozen=True):
    """What the store did with one event of an append: stored now, or a duplicate of ``id``."""

    id: str
    seq: int
    duplicate: bool
