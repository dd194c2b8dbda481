"""Seed 004 wire shapes: ``/api/events/*`` (track, batch, query, services, statistics, suggestions).

Field names are the seed's camelCase. Optional fields default to ``None`` and are omitted on output
when unset, so answers carry only what was computed from data. New fields go last, with defaults.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from protocol.privacy import Dropped

MAX_NAME: Final = 200  # event names, ids, service names
MAX_TEXT: Final = 4096  # user agents, referrers

Name = Annotated[str, Meta(min_length=1, max_length=MAX_NAME)]
Ident = Annotated[str, Meta(max_length=MAX_NAME)]
Text = Annotated[str, Meta(max_length=MAX_TEXT)]
Timestamp = float | str  # unix ms (seeds) or ISO 8601


class AIEventPayload(Struct, kw_only=True, omit_defaults=True):
    userAgent: Text | None = None
    referrer: Text | None = None
    sessionId: Ident | None = None
    userRole: Ident | None = None
    correlationId: Ident | None = None
    # a float, so 404.0 is accepted as JSON Schema's "integer" allows; a fraction is refused on decoding
    statusCode: Annotated[float, Meta(ge=0, le=999)] | None = None
    responseTimeMs: Annotated[float, Meta(ge=0)] | None = None
    serviceName: Ident | None = None
    metadata: dict[str, Any] | None = None
    # Not in the seed's interface but sent by its own client examples, or expected by SDK users:
    userId: Ident | None = None
    timestamp: Timestamp | None = None
    sentAt: Timestamp | None = None
    eventId: Ident | None = None
    messageId: Ident | None = None
    insertId: Ident | None = None
    deviceType: Ident | None = None


class BatchTrackEventItem(Struct, kw_only=True):
    eventName: Name
    payload: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)  # decoded per item, so one bad item rejects only itself


class BatchTrackEventRequest(Struct, kw_only=True):
    events: list[msgspec.Raw]  # decoded per item into BatchTrackEventItem
    batchId: Ident | None = None
    sentAt: Timestamp | None = None


class SuggestionAction(Struct, kw_only=True, omit_defaults=True):
    label: str
    href: str | None = None
    method: str | None = None


class SuggestionBasis(Struct, kw_only=True):
    eventPattern: str
    sampleSize: int
    confidence: float


class AISuggestion(Struct, kw_only=True, omit_defaults=True):
    id: str
    title: str
    description: str | None = None
    score: float | None = None
    action: SuggestionAction | None = None
    tags: list[str] | None = None
    basedOn: SuggestionBasis | None = None


class RejectedEvent(Struct, kw_only=True):
    """One event of a batch that was not stored, and why."""

    index: int
    field: str
    reason: str


class EventResult(Struct, kw_only=True):
    """What happened to one accepted event of a batch: ``stored`` or ``duplicate`` of ``eventId``."""

    index: int
    eventId: str | None  # null when dropped
    status: str  # "stored" | "duplicate" | "dropped"
    processed: bool = True  # false: stored, but the live actors could not take it in time
    dropped: Dropped | UnsetType = UNSET  # why a "dropped" event was not stored (protocol/privacy.py)


class TrackEventResponse(Struct, kw_only=True):
    success: bool
    message: str
    suggestions: list[AISuggestion]
    eventId: str | None  # null when the event was dropped (``dropped`` says why)
    timestamp: str  # ISO 8601 of the stored (skew-corrected) event time
    duplicate: bool = False
    processingTime: float = 0.0  # ms spent storing and processing
    processed: bool = True  # false: stored, but the live actors could not take it in time
    # only when the event was accepted but not stored (consent, sampling: protocol/privacy.py)
    stored: bool | UnsetType = UNSET
    dropped: Dropped | UnsetType = UNSET


class BatchTrackEventResponse(Struct, kw_only=True):
    success: bool  # true when every event was accepted
    processedCount: int  # events accepted (stored now or already stored)
    suggestions: list[AISuggestion]
    # The client's batchId, omitted when it sent none (the seed's type is ``string``: never null)
    batchId: str | UnsetType | None = UNSET
    timestamp: str
    storedCount: int = 0
    duplicateCount: int = 0
    rejectedCount: int = 0
    results: list[EventResult] = []
    rejected: list[RejectedEvent] = []
    processingTime: float = 0.0
    processed: bool = True  # false: stored, but the live actors could not take them all in time
    droppedCount: int | UnsetType = UNSET  # events accepted but not stored; omitted when none

    def __post_init__(self) -> None:
        if self.batchId is None:
            self.batchId = UNSET


class StoredEvent(Struct, kw_only=True):
    id: str
    name: str
    userId: str | None
    serviceName: str | UnsetType = UNSET  # omitted when the event named no service (seed: ``serviceName?: string``)
    payload: msgspec.Raw
    timestamp: int  # unix ms
    sessionId: str | None = None
    receivedAt: int = 0
    seq: int = 0


class TimeRange(Struct, kw_only=True):
    # omitted (never null) when the query had no bound and no event matched
    from_: str | UnsetType = msgspec.field(default=UNSET, name="from")
    to: str | UnsetType = UNSET


class EventsQueryResponse(Struct, kw_only=True):
    events: list[StoredEvent]
    total: int  # events stored in the project
    filtered: int  # events matching the filters (all pages)
    services: list[str]
    timeRange: TimeRange
    nextCursor: str | None = None  # pass as ?cursor= for the next page; null on the last page


class EventCountOut(Struct, kw_only=True):
    eventName: str
    count: int
    percentage: float


class ServiceStats(Struct, kw_only=True, omit_defaults=True):
    serviceName: str  # "unknown" for the events sent without one
    eventCount: int
    uniqueEvents: int
    lastSeen: str
    topEvents: list[EventCountOut]
    avgResponseTime: float | None = None  # only when some events carried responseTimeMs
    errorRate: float | None = None  # percent of events with a statusCode that had statusCode >= 400


class ServicesSummary(Struct, kw_only=True, omit_defaults=True):
    totalServices: int
    totalEvents: int
    avgResponseTime: float | None = None
    overallErrorRate: float | None = None


class HistoryBucket(Struct, kw_only=True, omit_defaults=True):
    start: str  # ISO 8601 start of the bucket
    eventCount: int
    avgResponseTime: float | None = None  # only when some events of the bucket carried responseTimeMs
    errorRate: float | None = None  # only when some events of the bucket carried a statusCode


class ServiceHistory(Struct, kw_only=True):
    from_: str = msgspec.field(name="from")  # start of the first bucket
    to: str  # end of the last bucket (inclusive, ms)
    intervalMs: int  # bucket width: one hour, or whole hours when the range is long
    buckets: list[HistoryBucket]


class ServicesResponse(Struct, kw_only=True):
    services: list[ServiceStats]
    summary: ServicesSummary
    # With ?serviceName=X, that service's figures at the top level too (seed 004's
    # analyzeServicePerformance reads them there); absent otherwise.
    serviceName: str | UnsetType = UNSET
    eventCount: int | UnsetType = UNSET
    avgResponseTime: float | UnsetType = UNSET  # absent when no event carried responseTimeMs
    errorRate: float | UnsetType = UNSET  # absent when no event carried a statusCode
    responseTimes: list[float] | UnsetType = UNSET  # of the latest responseTimesSampleSize events, oldest first
    responseTimesSampleSize: int | UnsetType = UNSET
    historicalResponseTimes: list[float] | UnsetType = UNSET  # per bucket that had response times
    historicalErrorRates: list[float] | UnsetType = UNSET  # per bucket that had status codes
    historicalVolumes: list[int] | UnsetType = UNSET  # per bucket, every bucket of the range
    history: ServiceHistory | UnsetType = UNSET  # the buckets behind the three series


class DayCountOut(Struct, kw_only=True):
    date: str
    count: int


class EventStatistics(Struct, kw_only=True):
    totalEventCount: int
    totalUniqueEvents: int
    totalServices: int
    perDay: list[DayCountOut]
    topEvents: list[EventCountOut]
    serviceBreakdown: list[ServiceStats]


class SuggestionsContext(Struct, kw_only=True, omit_defaults=True):
    timeRange: str
    totalEvents: int
    serviceName: str | None = None
    eventName: str | None = None
    userId: str | None = None
    userEvents: int | None = None  # with userId: the user's latest events (last 24 h) the filter looked at


class SuggestionsResponse(Struct, kw_only=True):
    suggestions: list[AISuggestion]
    context: SuggestionsContext
