"""The hot ingest routes of both seed APIs, as plain ASGI handlers.

POST /api/events/track/{eventName}, POST /api/events/track/batch      (seed 004)
POST /api/v1/behavioral/events, POST /api/v1/behavioral/batch,
POST /api/v1/behavioral/events/privacy-compliant is not here yet        (seed 000)

Each answers only after the events are committed and processed (see actors/pipeline.py).
"""

from __future__ import annotations

import time

from actors.pipeline import IngestResult
from protocol.behavioral import BatchEventResult, BehavioralBatchResponse, BehavioralIngestResponse
from protocol.errors import InvalidInput
from protocol.normalize import (
    Decoded,
    decode_behavioral,
    decode_behavioral_batch,
    decode_track,
    decode_track_batch,
    iso_ms,
)
from protocol.record import Event
from protocol.tracking import AISuggestion, BatchTrackEventResponse, EventResult, TrackEventResponse
from server.context import Pulse
from server.http import Request, Send, encode_json, respond


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _suggestions_for_event(pulse: Pulse, event: Event) -> list[AISuggestion]:
    """The cached suggestions about this event's service or name (a dict lookup; server/suggestions.py)."""
    cache = pulse.suggestions
    return [] if cache is None else cache.for_event(event.project, event.service_name, event.name)


def _suggestions_for_batch(pulse: Pulse, decoded: Decoded) -> list[AISuggestion]:
    cache = pulse.suggestions
    if cache is None or not decoded.accepted:
        return []
    return cache.for_batch(decoded.accepted[0][1].project, (event for _, event in decoded.accepted))


async def track_one(pulse: Pulse, req: Request, send: Send, event_name: str, started: float) -> int:
    access = await pulse.access(req)
    msgpack = req.body_format()
    body = await req.body()
    event = decode_track(
        access.project.id,
        event_name,
        body,
        user_id=req.headers.get("x-user-id") or None,
        received_at=now_ms(),
        msgpack=msgpack,
    )
    result = await pulse.pipeline.ingest([event], started=started)
    outcome = result.outcomes[0]
    answer = TrackEventResponse(
        success=True,
        message="Event already tracked (duplicate id)" if outcome.duplicate else "Event tracked successfully",
        suggestions=_suggestions_for_event(pulse, event),
        eventId=outcome.id,
        timestamp=iso_ms(event.timestamp),
        duplicate=outcome.duplicate,
        processingTime=round(result.elapsed_ms, 3),
    )
    await respond(send, 200, encode_json(answer))
    return 200


def _batch_results(decoded: Decoded, result: IngestResult) -> tuple[list[tuple[int, str, bool]], int]:
    rows = [
        (index, outcome.id, outcome.duplicate)
        for (index, _), outcome in zip(decoded.accepted, result.outcomes, strict=True)
    ]
    return rows, sum(1 for row in rows if row[2])


async def _ingest_batch(pulse: Pulse, decoded: Decoded, started: float) -> IngestResult:
    if not decoded.accepted:
        first = decoded.rejected[0] if decoded.rejected else None
        if first is None:
            raise InvalidInput("$.events", "batch has no events")
        raise InvalidInput(first.field, f"no event in the batch was valid; first: {first.reason}")
    events: list[Event] = [event for _, event in decoded.accepted]
    return await pulse.pipeline.ingest(events, started=started, rejected=len(decoded.rejected))


async def track_batch(pulse: Pulse, req: Request, send: Send, started: float) -> int:
    access = await pulse.access(req)
    msgpack = req.body_format()
    body = await req.body()
    decoded = decode_track_batch(
        access.project.id, body, user_id=req.headers.get("x-user-id") or None, received_at=now_ms(), msgpack=msgpack
    )
    result = await _ingest_batch(pulse, decoded, started)
    rows, duplicates = _batch_results(decoded, result)
    answer = BatchTrackEventResponse(
        success=not decoded.rejected,
        processedCount=len(rows),
        suggestions=_suggestions_for_batch(pulse, decoded),
        batchId=decoded.batch_id,
        timestamp=iso_ms(now_ms()),
        storedCount=len(rows) - duplicates,
        duplicateCount=duplicates,
        rejectedCount=len(decoded.rejected),
        results=[EventResult(index=i, eventId=eid, status="duplicate" if dup else "stored") for i, eid, dup in rows],
        rejected=decoded.rejected,
        processingTime=round(result.elapsed_ms, 3),
    )
    await respond(send, 200, encode_json(answer))
    return 200


async def behavioral_one(pulse: Pulse, req: Request, send: Send, started: float) -> int:
    access = await pulse.access(req)
    msgpack = req.body_format()
    body = await req.body()
    event = decode_behavioral(access.project.id, body, received_at=now_ms(), msgpack=msgpack)
    result = await pulse.pipeline.ingest([event], started=started)
    outcome = result.outcomes[0]
    answer = BehavioralIngestResponse(
        eventId=outcome.id,
        processed=result.processed,
        processingTime=round(result.elapsed_ms, 3),
        triggers=[],
        duplicate=outcome.duplicate,
        timestamp=event.timestamp,
    )
    await respond(send, 200, encode_json(answer))
    return 200


async def behavioral_batch(pulse: Pulse, req: Request, send: Send, started: float) -> int:
    access = await pulse.access(req)
    msgpack = req.body_format()
    body = await req.body()
    decoded = decode_behavioral_batch(access.project.id, body, received_at=now_ms(), msgpack=msgpack)
    result = await _ingest_batch(pulse, decoded, started)
    rows, duplicates = _batch_results(decoded, result)
    answer = BehavioralBatchResponse(
        processed=len(rows),
        stored=len(rows) - duplicates,
        duplicates=duplicates,
        rejected=decoded.rejected,
        results=[BatchEventResult(index=i, eventId=eid, status="duplicate" if dup else "stored") for i, eid, dup in rows],
        processingTime=round(result.elapsed_ms, 3),
        triggers=[],
        batchId=decoded.batch_id,
    )
    await respond(send, 200, encode_json(answer))
    return 200
