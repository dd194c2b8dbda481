"""The hot ingest routes of both seed APIs, whichever edge read the request.

POST /api/events/track/{eventName}, POST /api/events/track/batch      (seed 004)
POST /api/v1/behavioral/events, POST /api/v1/behavioral/batch         (seed 000)
POST /api/v1/behavioral/events/privacy-compliant                      (seed 000, server/privacy/compliant_route.py)
POST /v1/batch, /v1/track, ... (Segment), /batch/, /e/, ... (PostHog)  (server/compat/, docs/compat.md)

Every one is rate limited per project (server/privacy/ingest_gate.py) before its body is read;
the pipeline's consent and sampling stages (actors/pipeline.py) apply to every one alike.

Each answers only after the events are committed and processed (see actors/pipeline.py). An event
accepted but not stored on purpose (consent, sampling: protocol/privacy.py) is answered 2xx with
``stored: false`` and ``dropped`` (batches: ``status: "dropped"`` and a count); ``event_rows`` is
where every answer learns what happened to each event. A
handler takes a ``HotRequest`` (the ASGI ``server.http.Request``, or the native edge's request in
server/edge/native.py) and returns the 200 answer's JSON; a refusal is raised (InvalidInput,
AuthError, Overloaded, StoreError) and turned into its 4xx/503 by ``error_answer``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Final

import msgspec

from actors.pipeline import IngestResult, Overloaded
from protocol.behavioral import (
    BatchEventResult,
    BehavioralBatchResponse,
    BehavioralIngestResponse,
    TriggerResult,
)
from protocol.errors import InvalidInput, error_body
from protocol.normalize import (
    Decoded,
    decode_behavioral,
    decode_behavioral_batch,
    decode_track,
    decode_track_batch,
    iso_ms,
)
from protocol.privacy import Dropped
from protocol.record import AppendOutcome, Event
from protocol.tracking import AISuggestion, BatchTrackEventResponse, EventResult, TrackEventResponse
from server.auth import AuthError
from server.compat import compat_route
from server.context import Pulse
from server.http import HotRequest, decode_body, encode_json, is_msgpack
from server.privacy import compliant_route
from server.privacy.ingest_gate import (
    RateLimited,
    admitted,
    has_gpc,
    rate_limited_body,
    retry_after_header,
)
from storage.base import StoreError

log = logging.getLogger("pulse.http")

TRACK_PREFIX: Final = "/api/events/track/"
_json = msgspec.json.Encoder()


Handler = Callable[[Pulse, HotRequest, float], Awaitable[bytes]]


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


async def _body(req: HotRequest) -> tuple[bool, bytes]:
    """(is MessagePack, the inflated body): the format is checked before the body is read."""
    msgpack = is_msgpack(req.headers)
    return msgpack, decode_body(req.headers, await req.read())


async def track_one(pulse: Pulse, req: HotRequest, event_name: str, started: float) -> bytes:
    access = await admitted(pulse, req)
    msgpack, body = await _body(req)
    event = decode_track(
        access.project.id,
        event_name,
        body,
        user_id=req.headers.get("x-user-id") or None,
        received_at=now_ms(),
        msgpack=msgpack,
    )
    result = await pulse.pipeline.ingest([event], started=started, gpc=has_gpc(req))
    _, outcome, why = event_rows(range(1), result)[0]
    if outcome is None:
        return encode_json(TrackEventResponse(
            success=True, message=f"Event not stored ({why.reason if why else 'dropped'})", suggestions=[],
            eventId=None, timestamp=iso_ms(event.timestamp), processingTime=round(result.elapsed_ms, 3),
            processed=result.processed, stored=False, dropped=why or msgspec.UNSET,
        ))  # fmt: skip
    answer = TrackEventResponse(
        success=True,
        message="Event already tracked (duplicate id)" if outcome.duplicate else "Event tracked successfully",
        suggestions=_suggestions_for_event(pulse, event),
        eventId=outcome.id,
        timestamp=iso_ms(event.timestamp),
        duplicate=outcome.duplicate,
        processingTime=round(result.elapsed_ms, 3),
        processed=result.processed,
    )
    return encode_json(answer)


EventRow = tuple[int, AppendOutcome | None, Dropped | None]  # index in the request, outcome, why not stored


def event_rows(indices: Iterable[int], result: IngestResult) -> list[EventRow]:
    """What happened to each accepted event, in request order: (its index, its outcome, None), or
    (its index, None, why) when it was accepted but not stored. The pipeline's ``result.dropped``
    says which were not stored; ``result.outcomes`` has the others, in order."""
    why_not = result.dropped
    if why_not is None:
        return [(index, outcome, None) for index, outcome in zip(indices, result.outcomes, strict=True)]
    stored = iter(result.outcomes)
    return [
        (index, None, why) if why is not None else (index, next(stored), None)
        for index, why in zip(indices, why_not, strict=True)
    ]


class BatchCounts:
    """The counts of a batch's answer, from its rows."""

    __slots__ = ("stored", "duplicates", "dropped")

    def __init__(self, rows: list[EventRow]) -> None:
        self.stored = self.duplicates = self.dropped = 0
        for _, outcome, _why in rows:
            if outcome is None:
                self.dropped += 1
            elif outcome.duplicate:
                self.duplicates += 1
            else:
                self.stored += 1

    def dropped_or_unset(self) -> int | msgspec.UnsetType:
        return self.dropped or msgspec.UNSET


def _status(outcome: AppendOutcome | None) -> str:
    return "dropped" if outcome is None else "duplicate" if outcome.duplicate else "stored"


def _indices(decoded: Decoded) -> list[int]:
    return [index for index, _ in decoded.accepted]


async def _ingest_batch(pulse: Pulse, decoded: Decoded, started: float, *, gpc: bool = False) -> IngestResult:
    if not decoded.accepted:
        first = decoded.rejected[0] if decoded.rejected else None
        if first is None:
            raise InvalidInput("$.events", "batch has no events")
        raise InvalidInput(first.field, f"no event in the batch was valid; first: {first.reason}")
    events: list[Event] = [event for _, event in decoded.accepted]
    return await pulse.pipeline.ingest(events, started=started, rejected=len(decoded.rejected), gpc=gpc)


async def track_batch(pulse: Pulse, req: HotRequest, started: float) -> bytes:
    access = await admitted(pulse, req)
    msgpack, body = await _body(req)
    decoded = decode_track_batch(
        access.project.id, body, user_id=req.headers.get("x-user-id") or None, received_at=now_ms(), msgpack=msgpack
    )
    result = await _ingest_batch(pulse, decoded, started, gpc=has_gpc(req))
    rows = event_rows(_indices(decoded), result)
    counts = BatchCounts(rows)
    answer = BatchTrackEventResponse(
        success=not decoded.rejected,
        processedCount=counts.stored + counts.duplicates,
        suggestions=_suggestions_for_batch(pulse, decoded),
        batchId=decoded.batch_id,
        timestamp=iso_ms(now_ms()),
        storedCount=counts.stored,
        duplicateCount=counts.duplicates,
        rejectedCount=len(decoded.rejected),
        results=[
            EventResult(index=i, eventId=outcome.id if outcome else None, status=_status(outcome),
                        processed=result.processed, dropped=why or msgspec.UNSET)
            for i, outcome, why in rows
        ],
        rejected=decoded.rejected,
        processingTime=round(result.elapsed_ms, 3),
        processed=result.processed,
        droppedCount=counts.dropped_or_unset(),
    )
    return encode_json(answer)


def fired_triggers(result: IngestResult) -> list[TriggerResult]:
    """The triggers this request's events fired (seed 000's ``triggers``; actors/automation/). The
    control variant of an A/B test fires nothing and is not listed (it is recorded as an exposure)."""
    return [
        TriggerResult(triggerId=fired.trigger_id, executed=True, result="automation_triggered")
        for _, _, fired in result.fired
        if fired.executed
    ]


async def behavioral_one(pulse: Pulse, req: HotRequest, started: float) -> bytes:
    access = await admitted(pulse, req)
    msgpack, body = await _body(req)
    event = decode_behavioral(access.project.id, body, received_at=now_ms(), msgpack=msgpack)
    result = await pulse.pipeline.ingest([event], started=started, gpc=has_gpc(req))
    _, outcome, why = event_rows(range(1), result)[0]
    if outcome is None:
        return encode_json(BehavioralIngestResponse(
            eventId=None, processed=result.processed, processingTime=round(result.elapsed_ms, 3), triggers=[],
            timestamp=event.timestamp, stored=False, dropped=why or msgspec.UNSET,
        ))  # fmt: skip
    answer = BehavioralIngestResponse(
        eventId=outcome.id,
        processed=result.processed,
        processingTime=round(result.elapsed_ms, 3),
        triggers=fired_triggers(result),
        duplicate=outcome.duplicate,
        timestamp=event.timestamp,
    )
    return encode_json(answer)


async def behavioral_batch(pulse: Pulse, req: HotRequest, started: float) -> bytes:
    access = await admitted(pulse, req)
    msgpack, body = await _body(req)
    decoded = decode_behavioral_batch(access.project.id, body, received_at=now_ms(), msgpack=msgpack)
    result = await _ingest_batch(pulse, decoded, started, gpc=has_gpc(req))
    rows = event_rows(_indices(decoded), result)
    counts = BatchCounts(rows)
    answer = BehavioralBatchResponse(
        processed=counts.stored + counts.duplicates,
        stored=counts.stored,
        duplicates=counts.duplicates,
        rejected=decoded.rejected,
        results=[
            BatchEventResult(index=i, eventId=outcome.id if outcome else None, status=_status(outcome),
                             processed=result.processed, dropped=why or msgspec.UNSET)
            for i, outcome, why in rows
        ],
        processingTime=round(result.elapsed_ms, 3),
        triggers=fired_triggers(result),
        batchId=decoded.batch_id,
        dropped=counts.dropped_or_unset(),
    )
    return encode_json(answer)


def hot_route(path: str) -> Handler | None:
    """The ingest handler of a POST to ``path``, or None when ``path`` is not an ingest route."""
    if path == "/api/v1/behavioral/events":
        return behavioral_one
    if path == "/api/v1/behavioral/batch":
        return behavioral_batch
    if path == compliant_route.PATH:
        return _privacy_compliant
    if path.startswith(TRACK_PREFIX):
        name = path[len(TRACK_PREFIX):]
        if name == "batch":
            return track_batch
        return lambda pulse, req, started: track_one(pulse, req, name, started)
    return compat_route(path)  # Segment's /v1/* and PostHog's capture paths (server/compat/)


_privacy_compliant: Final = compliant_route.handler(lambda result: fired_triggers(result))


def error_answer(err: Exception, method: str, path: str, pulse: Pulse) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """The answer to a refused hot request: (status, JSON body, extra headers). A refusal that is
    not one of ours is a bug: logged with its traceback and answered 500."""
    if isinstance(err, InvalidInput):
        pulse.metrics.events_rejected += 1 if method == "POST" else 0
        return err.status, encode_json(error_body(err)), []
    if isinstance(err, RateLimited):
        return 429, _json.encode(rate_limited_body(err)), retry_after_header(err)
    if isinstance(err, AuthError):
        code = "unauthorized" if err.status == 401 else "forbidden"
        return err.status, _json.encode({"success": False, "error": {"code": code, "reason": err.reason}}), []
    if isinstance(err, Overloaded):
        body = {"success": False, "error": {"code": "overloaded", "reason": err.reason}}
        return 503, _json.encode(body), [(b"retry-after", str(int(err.retry_after + 0.999)).encode())]
    if isinstance(err, StoreError):
        log.warning("storage unavailable: %s", err)
        body = {"success": False, "error": {"code": "storage_unavailable", "reason": str(err)}}
        return 503, _json.encode(body), [(b"retry-after", b"1")]
    log.error("unhandled error on %s %s", method, path, exc_info=err)
    body = {"success": False, "error": {"code": "internal_error", "reason": "internal server error"}}
    return 500, _json.encode(body), []
