"""Segment's HTTP tracking API, decoded into Pulse events (sans-IO: bytes in, Events out).

POST /v1/batch carries ``{"batch": [message...], "sentAt", "writeKey", "context", "integrations"}``;
POST /v1/track, /v1/identify, /v1/page, /v1/screen, /v1/group, /v1/alias carry one message, whose
type is the path's. analytics.js (analytics-next) posts single calls to /v1/t, /v1/i, /v1/p, /v1/s,
/v1/g, /v1/a and batches to /v1/b: the same shapes under one-letter paths.

Mapping (docs/compat.md): the event name is the track call's ``event``, else the call type; the
user is ``userId``, else ``anonymousId``; ``messageId`` is the dedup id; the time is ``timestamp``
corrected for the client's clock skew with ``sentAt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from protocol.errors import InvalidInput, TooLarge
from protocol.normalize import MAX_BATCH, Decoded, event_time
from protocol.record import Event
from protocol.tracking import RejectedEvent
from server.compat.fields import (
    JSONObject,
    as_object,
    decode_json,
    optional_id,
    optional_long_text,
    optional_object,
    optional_text,
    optional_time,
    required_name,
)
from server.compat.record import CompatPayload, compat_event, present

SERVICE_NAME: Final = "segment"
CALL_TYPES: Final = frozenset({"track", "identify", "page", "screen", "group", "alias"})
# path -> the call type of its single message; None: a batch
PATHS: Final[dict[str, str | None]] = {
    "/v1/batch": None,
    "/v1/b": None,
    **{f"/v1/{kind}": kind for kind in sorted(CALL_TYPES)},
    **{f"/v1/{kind[0]}": kind for kind in sorted(CALL_TYPES)},
}


@dataclass
class SegmentRequest:
    """A request's envelope, decoded before the project is known (the key may be in the body)."""

    write_key: str | None
    messages: list[tuple[str, Any]]  # (JSON path of the message, the message as sent)
    call_type: str | None  # the path's call type; None for a batch (each message says its type)
    sent_at: int | None  # the batch's sentAt, unix ms
    context: JSONObject | None  # the batch's context, under each message's own
    integrations: JSONObject | None


def parse_request(body: bytes, call_type: str | None) -> SegmentRequest:
    """The envelope of a batch (``call_type`` None) or of a single call."""
    if not body.strip():
        raise InvalidInput("$", "empty body: send the message as json")
    document = as_object(decode_json(body), "$")
    if call_type is not None:
        return SegmentRequest(optional_text(document, "writeKey", "$"), [("$", document)], call_type, None, None, None)
    batch = document.get("batch")
    if not isinstance(batch, list):
        reason = "required field is missing" if batch is None else "must be an array of messages"
        raise InvalidInput("$.batch", reason)
    if not batch:
        raise InvalidInput("$.batch", "batch has no messages")
    if len(batch) > MAX_BATCH:
        raise TooLarge("$.batch", f"batch has {len(batch)} messages; the limit is {MAX_BATCH}")
    return SegmentRequest(
        write_key=optional_text(document, "writeKey", "$") or _shared_write_key(batch),
        messages=[(f"$.batch[{index}]", message) for index, message in enumerate(batch)],
        call_type=None,
        sent_at=optional_time(document, "sentAt", "$"),
        context=optional_object(document, "context", "$"),
        integrations=optional_object(document, "integrations", "$"),
    )


def _shared_write_key(batch: list[Any]) -> str | None:
    """analytics.js batches put the write key in each message: the one they share (400 when they
    name different ones: one request acts on one project)."""
    found: str | None = None
    for index, message in enumerate(batch):
        key = optional_text(message, "writeKey", f"$.batch[{index}]") if isinstance(message, dict) else None
        if key is not None and found is not None and key != found:
            raise InvalidInput(f"$.batch[{index}].writeKey", "the messages of one request carry different write keys")
        found = found or key
    return found


def decode_events(request: SegmentRequest, project: str, received_at: int) -> Decoded:
    """Every message as an Event; an invalid message rejects only itself (field and reason)."""
    accepted: list[tuple[int, Event]] = []
    rejected: list[RejectedEvent] = []
    for index, (root, message) in enumerate(request.messages):
        try:
            accepted.append((index, message_event(request, project, as_object(message, root), root, received_at)))
        except InvalidInput as err:
            rejected.append(RejectedEvent(index=index, field=err.field, reason=err.reason))
    return Decoded(None, accepted, rejected)


def message_event(request: SegmentRequest, project: str, message: JSONObject, root: str, received_at: int) -> Event:
    kind = request.call_type or optional_text(message, "type", root)
    if kind not in CALL_TYPES:
        reason = "required field is missing" if kind is None else f"unknown call type {kind!r}"
        raise InvalidInput(f"{root}.type", f"{reason}; one of {', '.join(sorted(CALL_TYPES))}")
    name = required_name(message, "event", root) if kind == "track" else kind
    user_id = optional_id(message, "userId", root)
    anonymous_id = optional_id(message, "anonymousId", root)
    user = user_id or anonymous_id
    if user is None:
        raise InvalidInput(f"{root}.userId", "a message needs a userId or an anonymousId")
    group_id = optional_id(message, "groupId", root)
    previous_id = optional_id(message, "previousId", root)
    if kind == "group" and group_id is None:
        raise InvalidInput(f"{root}.groupId", "required field is missing (group call)")
    if kind == "alias" and (previous_id is None or user_id is None):
        field = "previousId" if previous_id is None else "userId"
        raise InvalidInput(f"{root}.{field}", "required field is missing (alias call)")
    message_id = optional_text(message, "messageId", root)

    own_context = optional_object(message, "context", root)
    context = {**(request.context or {}), **(own_context or {})} if request.context else own_context
    properties = optional_object(message, "properties", root)
    page = optional_object(context, "page", f"{root}.context") if context else None
    device = optional_object(context, "device", f"{root}.context") if context else None
    is_page = kind == "page"
    referrer = optional_long_text(page, "referrer", f"{root}.context.page") or (
        optional_long_text(properties, "referrer", f"{root}.properties") if is_page else None)
    url = optional_long_text(page, "url", f"{root}.context.page") or (
        optional_long_text(properties, "url", f"{root}.properties") if is_page else None)

    timestamp = optional_time(message, "timestamp", root)
    if timestamp is None:
        timestamp = optional_time(message, "originalTimestamp", root)
    sent_at = optional_time(message, "sentAt", root)
    ts, flags = event_time(timestamp, sent_at if sent_at is not None else request.sent_at, received_at, root)

    payload = CompatPayload(
        userId=user,
        serviceName=SERVICE_NAME,
        sessionId=optional_id(context, "sessionId", f"{root}.context") or optional_id(properties, "sessionId", f"{root}.properties"),
        userAgent=optional_long_text(context, "userAgent", f"{root}.context"),
        referrer=referrer,
        deviceType=optional_text(device, "type", f"{root}.context.device"),
        messageId=message_id,
        metadata=present(
            source=SERVICE_NAME,
            type=kind,
            url=url,
            anonymousId=anonymous_id,
            groupId=group_id,
            previousId=previous_id,
            name=message.get("name"),  # page / screen name
            category=message.get("category"),  # page category
            properties=properties,
            traits=optional_object(message, "traits", root),
            context=context,
            integrations=optional_object(message, "integrations", root) or request.integrations,
            timestamp=message.get("timestamp", message.get("originalTimestamp")),  # as the client sent it
            sentAt=message.get("sentAt"),
        ),
    )
    return compat_event(project, name, payload, client_id=message_id, timestamp=ts, flags=flags,
                        received_at=received_at, root=root)
