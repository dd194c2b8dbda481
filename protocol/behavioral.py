"""Seed 000 wire shapes: ``/api/v1/behavioral/*`` ingestion and its answers.

The seed's event carries free-form objects (eventData, elementContext, interactionContext); we type
the fields Pulse reads and keep the rest as the client sent it (the stored payload is the raw JSON).
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import Struct

from protocol.privacy import Dropped
from protocol.tracking import Ident, Name, RejectedEvent, Timestamp


class BehavioralEvent(Struct, kw_only=True, omit_defaults=True):
    eventType: Name
    sessionId: Ident | None = None
    userId: Ident | None = None
    deviceType: Ident | None = None
    eventData: dict[str, Any] | None = None
    elementContext: dict[str, Any] | None = None
    interactionContext: dict[str, Any] | None = None
    performanceMetrics: dict[str, Any] | None = None
    timestamp: Timestamp | None = None
    sentAt: Timestamp | None = None
    eventId: Ident | None = None
    messageId: Ident | None = None
    insertId: Ident | None = None
    serviceName: Ident | None = None
    correlationId: Ident | None = None
    deviceId: Ident | None = None


class BehavioralBatch(Struct, kw_only=True):
    events: list[msgspec.Raw]  # decoded per item, so one bad item rejects only itself
    batchId: Ident | None = None
    sentAt: Timestamp | None = None


class TriggerResult(Struct, kw_only=True):
    triggerId: str
    executed: bool
    result: str


class BehavioralIngestResponse(Struct, kw_only=True):
    eventId: str | None  # null when the event was dropped (``dropped`` says why)
    processed: bool
    processingTime: float  # ms from receipt to stored and processed
    triggers: list[TriggerResult]
    duplicate: bool = False
    timestamp: int = 0  # the stored (skew-corrected) event time, unix ms
    # only when the event was accepted but not stored (consent, sampling: protocol/privacy.py)
    stored: bool | msgspec.UnsetType = msgspec.UNSET
    dropped: Dropped | msgspec.UnsetType = msgspec.UNSET


class BatchEventResult(Struct, kw_only=True):
    index: int
    eventId: str | None  # null when dropped
    status: str  # "stored" | "duplicate" | "dropped"
    processed: bool = True  # false: stored, but the live actors could not take it in time
    dropped: Dropped | msgspec.UnsetType = msgspec.UNSET  # why a "dropped" event was not stored


class BehavioralBatchResponse(Struct, kw_only=True):
    processed: int  # events accepted (stored now or already stored)
    stored: int
    duplicates: int
    rejected: list[RejectedEvent]
    results: list[BatchEventResult]
    processingTime: float
    triggers: list[TriggerResult]
    batchId: str | msgspec.UnsetType | None = msgspec.UNSET  # the client's; omitted (never null) without one
    dropped: int | msgspec.UnsetType = msgspec.UNSET  # events accepted but not stored; omitted when none

    def __post_init__(self) -> None:
        if self.batchId is None:
            self.batchId = msgspec.UNSET
