"""Bytes in, Event records out: decoding, validation and time correction for every ingest path.

Sans-IO: no sockets, no trio. Each function takes the raw body (JSON or MessagePack) and the server's
receive time and returns normalized ``Event`` records, or raises ``InvalidInput`` naming the field.
Batches are decoded item by item so that one bad event rejects only itself.
"""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime
from typing import Final, TypeVar

import msgspec

from protocol.behavioral import BehavioralBatch, BehavioralEvent
from protocol.errors import InvalidInput, TooLarge, from_msgspec
from protocol.record import FLAG_CLAMPED_FUTURE, FLAG_SKEW_CORRECTED, SOURCE_BEHAVIORAL, SOURCE_EVENTS, Event
from protocol.tracking import (
    MAX_NAME,
    AIEventPayload,
    BatchTrackEventItem,
    BatchTrackEventRequest,
    Ident,
    Name,
    RejectedEvent,
    Timestamp,
)

MAX_BATCH: Final = 1000  # seed 000: maxBatchSize
MAX_FUTURE_MS: Final = 60_000  # a corrected timestamp further ahead of receivedAt than this is clamped
SECONDS_CUTOFF: Final = 100_000_000_000  # numbers below this are unix seconds (before 1973 in ms)
MAX_TIME_MS: Final = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z

T = TypeVar("T")

_json_decoders: dict[type, msgspec.json.Decoder] = {}
_msgpack_decoders: dict[type, msgspec.msgpack.Decoder] = {}
_json_encoder: Final = msgspec.json.Encoder()
_EMPTY_PAYLOAD: Final = AIEventPayload()


def _decoder(kind: type[T], msgpack: bool) -> msgspec.json.Decoder | msgspec.msgpack.Decoder:
    table: dict = _msgpack_decoders if msgpack else _json_decoders
    dec = table.get(kind)
    if dec is None:
        dec = table[kind] = (msgspec.msgpack.Decoder if msgpack else msgspec.json.Decoder)(kind)
    return dec


def decode_as(kind: type[T], data: bytes, *, msgpack: bool = False, root: str = "$") -> T:
    try:
        return _decoder(kind, msgpack).decode(data)  # type: ignore[no-any-return]
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise from_msgspec(exc, root=root) from None
    except RecursionError:
        raise InvalidInput(root, "json is nested too deeply", code="malformed_json") from None


def as_json(data: bytes, *, msgpack: bool) -> bytes:
    """The JSON form of an object we store as the event's payload."""
    if not msgpack:
        return data
    try:
        return _json_encoder.encode(msgspec.msgpack.decode(data))
    except (TypeError, ValueError, OverflowError) as exc:  # ext types, non-string keys, NaN...
        raise InvalidInput("$", f"messagepack value has no json form: {exc}") from None


_ID_PREFIX: Final = "evt_" + os.urandom(6).hex()  # random per process: ids never collide across restarts
_id_counter = itertools.count(1)


def new_event_id() -> str:
    """A unique event id: the process's random prefix and a counter (no syscall per event)."""
    return f"{_ID_PREFIX}{next(_id_counter):010x}"


def iso_ms(ms: int) -> str:
    """Unix ms -> ISO 8601 UTC with milliseconds and a Z (the seeds' form)."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_time(value: Timestamp, field: str) -> int:
    """Unix ms from a number (ms, or seconds when small) or an ISO 8601 string."""
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            try:
                return parse_time(float(text), field)
            except ValueError:
                raise InvalidInput(field, f"not unix milliseconds nor an iso 8601 time: {value!r}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        ms = int(parsed.timestamp() * 1000)
        if not 0 <= ms <= MAX_TIME_MS:
            raise InvalidInput(field, f"time out of range (1970 to 9999): {value!r}")
        return ms
    if value != value or value in (float("inf"), float("-inf")) or value < 0:
        raise InvalidInput(field, f"not a valid time: {value!r}")
    number = value * 1000 if value < SECONDS_CUTOFF else value
    if number > MAX_TIME_MS:
        raise InvalidInput(field, f"time out of range: {value!r}")
    return int(number)


def event_time(
    timestamp: Timestamp | None, sent_at: Timestamp | None, received_at: int, root: str
) -> tuple[int, int]:
    """(corrected timestamp, flags): skew-corrected with sentAt, clamped when in the future."""
    flags = 0
    if timestamp is None:
        return received_at, flags
    if sent_at is None and type(timestamp) is int and SECONDS_CUTOFF <= timestamp <= MAX_TIME_MS:
        # the common case, unix ms without sentAt: what parse_time and the rules below come to
        return (timestamp, 0) if timestamp <= received_at + MAX_FUTURE_MS else (max(received_at, 0), FLAG_CLAMPED_FUTURE)
    ts = parse_time(timestamp, f"{root}.timestamp")
    if sent_at is not None:
        sent = parse_time(sent_at, f"{root}.sentAt")
        ts = received_at - (sent - ts)
        flags |= FLAG_SKEW_CORRECTED
    if ts > received_at + MAX_FUTURE_MS:
        ts = received_at
        flags |= FLAG_CLAMPED_FUTURE
    return max(ts, 0), flags


def _client_id(obj: AIEventPayload | BehavioralEvent) -> str | None:
    return obj.eventId or obj.messageId or obj.insertId


# The fields stored as indexed text (and sent to PostgreSQL, whose text cannot hold NUL) with the
# JSON names a client used for them.
_TEXT_FIELDS: Final = (
    ("name", "eventName"), ("user_id", "userId"), ("session_id", "sessionId"), ("service_name", "serviceName"),
    ("correlation_id", "correlationId"), ("device_type", "deviceType"), ("client_id", "eventId"),
)  # fmt: skip


def checked(event: Event, root: str) -> Event:
    """Reject a NUL character in any identifier: no backend can index it the same way."""
    for attr, name in _TEXT_FIELDS:
        value = getattr(event, attr)
        if value is not None and "\x00" in value:
            raise InvalidInput(f"{root}.{name}", "must not contain the NUL character (\\u0000)")
    return event


# -- seed 004 ---------------------------------------------------------------------------------------


def check_event_name(name: str, field: str = "$.eventName") -> str:
    if not name or len(name) > MAX_NAME:
        raise InvalidInput(field, f"event name must be 1 to {MAX_NAME} characters")
    return name


def tracking_event(
    project: str,
    name: str,
    payload_json: bytes,
    payload: AIEventPayload,
    *,
    user_id: str | None,
    received_at: int,
    sent_at: Timestamp | None = None,
    root: str = "$",
) -> Event:
    ts, flags = event_time(payload.timestamp, payload.sentAt or sent_at, received_at, root)
    status = payload.statusCode
    if status is not None:
        if not status.is_integer():
            raise InvalidInput(f"{root}.statusCode", f"an HTTP status is a whole number, got {status!r}")
        status = int(status)
    return checked(Event(
        id=new_event_id(),
        project=project,
        name=name,
        source=SOURCE_EVENTS,
        timestamp=ts,
        received_at=received_at,
        payload=msgspec.Raw(payload_json),
        user_id=user_id or payload.userId,
        session_id=payload.sessionId,
        service_name=payload.serviceName,
        correlation_id=payload.correlationId,
        device_type=payload.deviceType,
        status_code=status,
        response_time_ms=payload.responseTimeMs,
        client_id=_client_id(payload),
        flags=flags,
    ), root)


def decode_track(
    project: str, name: str, body: bytes, *, user_id: str | None, received_at: int, msgpack: bool = False
) -> Event:
    """POST /api/events/track/{eventName}: the body is one AIEventPayload (empty body = {})."""
    check_event_name(name, "$.eventName (path)")
    body = body or (b"\x80" if msgpack else b"{}")
    payload = decode_as(AIEventPayload, body, msgpack=msgpack)
    return tracking_event(
        project, name, as_json(body, msgpack=msgpack), payload, user_id=user_id, received_at=received_at
    )


class Decoded(msgspec.Struct):
    """A decoded batch: accepted events with their index in the request, and the rejected ones."""

    batch_id: str | None
    accepted: list[tuple[int, Event]]
    rejected: list[RejectedEvent]


def _check_batch_size(count: int) -> None:
    if count > MAX_BATCH:
        raise TooLarge("$.events", f"batch has {count} events; the limit is {MAX_BATCH}")


class _TypedItem(msgspec.Struct):
    eventName: Name
    payload: AIEventPayload | None = None


class _TypedBatch(msgspec.Struct):
    events: list[_TypedItem]
    sentAt: Timestamp | None = None
    batchId: Ident | None = None


class _RawItem(msgspec.Struct):
    payload: msgspec.Raw = msgspec.Raw(b"")


class _RawBatch(msgspec.Struct):
    events: list[_RawItem]


def _track_batch_fast(
    project: str, body: bytes, *, user_id: str | None, received_at: int, msgpack: bool
) -> Decoded | None:
    """The whole batch in two decoder calls (typed, and raw for the stored payloads), when every
    event is valid; None sends the caller to the item-by-item path that names each bad event."""
    try:
        typed = _decoder(_TypedBatch, msgpack).decode(body)
        raws = _decoder(_RawBatch, msgpack).decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    _check_batch_size(len(typed.events))
    empty = _EMPTY_PAYLOAD
    accepted: list[tuple[int, Event]] = []
    try:
        for index, (item, raw) in enumerate(zip(typed.events, raws.events, strict=True)):
            payload_json = as_json(bytes(raw.payload), msgpack=msgpack) if len(raw.payload) else b"{}"
            event = tracking_event(
                project,
                item.eventName,
                payload_json,
                item.payload or empty,
                user_id=user_id,
                received_at=received_at,
                sent_at=typed.sentAt,
                root=f"$.events[{index}].payload",
            )
            accepted.append((index, event))
    except InvalidInput:
        return None  # e.g. an unparseable timestamp: let the slow path report it per event
    return Decoded(typed.batchId, accepted, [])


def decode_track_batch(
    project: str, body: bytes, *, user_id: str | None, received_at: int, msgpack: bool = False
) -> Decoded:
    """POST /api/events/track/batch (BatchTrackEventRequest)."""
    fast = _track_batch_fast(project, body, user_id=user_id, received_at=received_at, msgpack=msgpack)
    if fast is not None:
        return fast
    batch = decode_as(BatchTrackEventRequest, body, msgpack=msgpack)
    _check_batch_size(len(batch.events))
    accepted: list[tuple[int, Event]] = []
    rejected: list[RejectedEvent] = []
    for index, raw in enumerate(batch.events):
        root = f"$.events[{index}]"
        try:
            item = decode_as(BatchTrackEventItem, raw, msgpack=msgpack, root=root)
            payload_bytes = bytes(item.payload) if len(item.payload) else b""
            if payload_bytes.strip() in (b"", b"null", b"\xc0"):  # absent or null: an empty payload
                payload_bytes = b"\x80" if msgpack else b"{}"
            payload = decode_as(AIEventPayload, payload_bytes, msgpack=msgpack, root=f"{root}.payload")
            event = tracking_event(
                project,
                item.eventName,
                as_json(payload_bytes, msgpack=msgpack),
                payload,
                user_id=user_id,
                received_at=received_at,
                sent_at=batch.sentAt,
                root=f"{root}.payload",
            )
        except InvalidInput as err:
            rejected.append(RejectedEvent(index=index, field=err.field, reason=err.reason))
            continue
        accepted.append((index, event))
    return Decoded(batch.batchId, accepted, rejected)


# -- seed 000 ---------------------------------------------------------------------------------------


def behavioral_event(
    project: str,
    raw_json: bytes,
    event: BehavioralEvent,
    *,
    received_at: int,
    sent_at: Timestamp | None = None,
    root: str = "$",
) -> Event:
    timestamp = event.timestamp
    if timestamp is None and event.eventData is not None:
        inner = event.eventData.get("timestamp")  # the seed's example puts it inside eventData
        if isinstance(inner, int | float | str) and not isinstance(inner, bool):
            timestamp = inner
    ts, flags = event_time(timestamp, event.sentAt or sent_at, received_at, root)
    return checked(Event(
        id=new_event_id(),
        project=project,
        name=event.eventType,
        source=SOURCE_BEHAVIORAL,
        timestamp=ts,
        received_at=received_at,
        payload=msgspec.Raw(raw_json),
        user_id=event.userId,
        session_id=event.sessionId,
        service_name=event.serviceName,
        correlation_id=event.correlationId,
        device_type=event.deviceType,
        client_id=_client_id(event),
        flags=flags,
    ), root)


def decode_behavioral(project: str, body: bytes, *, received_at: int, msgpack: bool = False) -> Event:
    """POST /api/v1/behavioral/events: one BehavioralEvent."""
    event = decode_as(BehavioralEvent, body, msgpack=msgpack)
    return behavioral_event(project, as_json(body, msgpack=msgpack), event, received_at=received_at)


def decode_behavioral_items(
    project: str,
    items: list[msgspec.Raw],
    *,
    received_at: int,
    msgpack: bool = False,
    sent_at: Timestamp | None = None,
) -> tuple[list[tuple[int, Event]], list[RejectedEvent]]:
    _check_batch_size(len(items))
    accepted: list[tuple[int, Event]] = []
    rejected: list[RejectedEvent] = []
    for index, raw in enumerate(items):
        root = f"$.events[{index}]"
        try:
            event = decode_as(BehavioralEvent, raw, msgpack=msgpack, root=root)
            accepted.append(
                (
                    index,
                    behavioral_event(
                        project,
                        as_json(bytes(raw), msgpack=msgpack),
                        event,
                        received_at=received_at,
                        sent_at=sent_at,
                        root=root,
                    ),
                )
            )
        except InvalidInput as err:
            rejected.append(RejectedEvent(index=index, field=err.field, reason=err.reason))
    return accepted, rejected


def decode_behavioral_batch(project: str, body: bytes, *, received_at: int, msgpack: bool = False) -> Decoded:
    """POST /api/v1/behavioral/batch: ``{"events": [...]}`` or a bare array of events."""
    stripped = body.lstrip()
    if not msgpack and stripped[:1] == b"[":
        items = decode_as(list[msgspec.Raw], body)
        batch_id, sent_at = None, None
    else:
        batch = decode_as(BehavioralBatch, body, msgpack=msgpack)
        items, batch_id, sent_at = batch.events, batch.batchId, batch.sentAt
    accepted, rejected = decode_behavioral_items(
        project, items, received_at=received_at, msgpack=msgpack, sent_at=sent_at
    )
    return Decoded(batch_id, accepted, rejected)
