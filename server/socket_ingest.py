"""Events sent over a socket (WebSocket), acknowledged like an HTTP ingest.

Shared by both socket endpoints: decode with the same protocol functions as the HTTP routes, run
the same pipeline, and answer with an ``ack``/``batch_ack`` (or ``error``) carrying the requestId.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from actors.pipeline import Overloaded
from protocol.behavioral import BehavioralEvent
from protocol.errors import InvalidInput
from protocol.normalize import (
    Decoded,
    as_json,
    behavioral_event,
    check_event_name,
    decode_as,
    decode_behavioral_items,
    decode_track_batch,
    tracking_event,
)
from protocol.privacy import Dropped
from protocol.record import AppendOutcome
from protocol.stream import Ack, BatchAck, ErrorMessage
from protocol.tracking import AIEventPayload
from server.context import Pulse
from server.ingest_routes import BatchCounts, event_rows, fired_triggers, now_ms
from storage.base import StoreError


def _row(index: int, outcome: AppendOutcome | None, why: Dropped | None, processed: bool) -> dict[str, Any]:
    if outcome is None:  # accepted, not stored (consent: actors/privacy/consent.py)
        return {"index": index, "eventId": None, "status": "dropped", "processed": processed, "dropped": why}
    return {"index": index, "eventId": outcome.id, "status": "duplicate" if outcome.duplicate else "stored",
            "processed": processed}


async def ingest_decoded(pulse: Pulse, decoded: Decoded, request_id: str | None, started: float,
                         gpc: bool = False) -> Any:
    if not decoded.accepted:
        return BatchAck(requestId=request_id, rejected=decoded.rejected)
    events = [event for _, event in decoded.accepted]
    result = await pulse.pipeline.ingest(events, started=started, rejected=len(decoded.rejected), gpc=gpc)
    rows = event_rows([index for index, _ in decoded.accepted], result)
    counts = BatchCounts(rows)
    return BatchAck(
        requestId=request_id,
        processed=counts.stored + counts.duplicates,
        stored=counts.stored,
        duplicates=counts.duplicates,
        results=[_row(index, outcome, why, result.processed) for index, outcome, why in rows],
        rejected=decoded.rejected,
        processingTime=round(result.elapsed_ms, 3),
        triggers=fired_triggers(result),
    )


async def ingest_one(pulse: Pulse, project: str, raw: bytes, *, behavioral: bool, name: str | None,
                     user_id: str | None, request_id: str | None, msgpack: bool, gpc: bool = False) -> Any:
    started = time.perf_counter()
    try:
        if behavioral:
            parsed = decode_as(BehavioralEvent, raw, msgpack=msgpack, root="$.event")
            event = behavioral_event(project, as_json(raw, msgpack=msgpack), parsed, received_at=now_ms(), root="$.event")
        else:
            check_event_name(name or "", "$.eventName")
            body = raw or (b"\x80" if msgpack else b"{}")
            payload = decode_as(AIEventPayload, body, msgpack=msgpack, root="$.payload")
            event = tracking_event(project, name or "", as_json(body, msgpack=msgpack), payload, user_id=user_id,
                                   received_at=now_ms())
        result = await pulse.pipeline.ingest([event], started=started, gpc=gpc)
    except (InvalidInput, Overloaded, StoreError) as err:
        return error_message(err, request_id)
    _, outcome, why = event_rows(range(1), result)[0]
    if outcome is None:  # the ack's fields, and why the event was not stored
        return {"type": "ack", "requestId": request_id, "eventId": None, "processed": result.processed,
                "duplicate": False, "processingTime": round(result.elapsed_ms, 3), "triggers": [],
                "stored": False, "dropped": why}
    return Ack(
        requestId=request_id,
        eventId=outcome.id,
        processed=result.processed,
        duplicate=outcome.duplicate,
        processingTime=round(result.elapsed_ms, 3),
        triggers=fired_triggers(result),
    )


async def ingest_batch(pulse: Pulse, project: str, items: list[msgspec.Raw], *, behavioral: bool,
                       user_id: str | None, request_id: str | None, msgpack: bool,
                       batch_body: bytes | None = None, sent_at: float | str | None = None,
                       gpc: bool = False) -> Any:
    started = time.perf_counter()
    try:
        if behavioral:
            accepted, rejected = decode_behavioral_items(project, items, received_at=now_ms(), msgpack=msgpack,
                                                         sent_at=sent_at)
            decoded = Decoded(None, accepted, rejected)
        else:
            decoded = decode_track_batch(project, batch_body or b"{}", user_id=user_id, received_at=now_ms(), msgpack=msgpack)
        return await ingest_decoded(pulse, decoded, request_id, started, gpc)
    except (InvalidInput, Overloaded, StoreError) as err:
        return error_message(err, request_id)


def error_message(err: InvalidInput | Overloaded | StoreError, request_id: str | None) -> ErrorMessage:
    """The socket form of what HTTP answers with 4xx/503 (server/app.py)."""
    if isinstance(err, InvalidInput):
        return ErrorMessage(requestId=request_id, code=err.code, field=err.field, reason=err.reason)
    if isinstance(err, Overloaded):
        return ErrorMessage(requestId=request_id, code="overloaded", reason=err.reason, retryAfter=err.retry_after)
    return ErrorMessage(requestId=request_id, code="unavailable", reason=str(err), retryAfter=1.0)
