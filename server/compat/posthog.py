"""PostHog's capture API (v0), decoded into Pulse events (sans-IO: bytes in, Events out).

POST /batch/ (posthog-python and the server SDKs): ``{"api_key", "batch": [event...], "sent_at",
"historical_migration"}``. POST /e/, /i/v0/e/, /capture/ (posthog-js and single captures): one event
object, an array of events, or the batch shape. posthog-js wraps the JSON in one of several
encodings, told by a ``compression`` query parameter (or form field) or detected from the bytes:

- ``gzip-js`` / ``gzip``: a gzip body, often without a Content-Encoding header;
- ``base64``, or no hint: base64 of the JSON, possibly as ``data=<base64>`` in a form body
  (application/x-www-form-urlencoded), whose ``+`` may have been turned into spaces;
- ``lz64``: LZ-string's base64 output (server/compat/lzstring.py).

Mapping (docs/compat.md): the event name is ``event``; the user is ``distinct_id``; ``uuid`` is the
dedup id; the time is ``timestamp`` corrected with the batch's ``sent_at`` (or posthog-js's ``_``
query parameter), or the receive time minus ``offset`` ms when the SDK sent an offset instead.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl

from protocol.errors import InvalidInput, TooLarge
from protocol.normalize import MAX_BATCH, Decoded, event_time, parse_time
from protocol.record import FLAG_SKEW_CORRECTED, Event
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
from server.compat.lzstring import decompress_from_base64
from server.compat.record import CompatPayload, compat_event, present
from server.http import inflate

SERVICE_NAME: Final = "posthog"
PATHS: Final = ("/batch/", "/batch", "/capture/", "/capture", "/e/", "/e", "/i/v0/e/", "/i/v0/e")
FORM_TYPE: Final = "application/x-www-form-urlencoded"
GZIP_MAGIC: Final = b"\x1f\x8b"
COMPRESSIONS: Final = ("gzip-js", "gzip", "base64", "lz64")
_BASE64: Final = re.compile(rb"[A-Za-z0-9+/_-]+={0,2}")


def unwrap(body: bytes, content_type: str, query: dict[str, str]) -> bytes:
    """The JSON text inside a capture request's body (Content-Encoding already undone)."""
    data = body if body.strip() else query.get("data", "").encode()
    if not data.strip():
        raise InvalidInput("$", "empty body: send the events as json")
    compression = query.get("compression")
    if content_type == FORM_TYPE and not _looks_like_json(data):  # curl -d labels JSON as a form
        try:
            form = dict(parse_qsl(data.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            raise InvalidInput("$", "form body is not valid utf-8", code="invalid_encoding") from None
        if "data" not in form:
            raise InvalidInput("data", "a form body must carry the events in its data field")
        compression = form.get("compression") or compression
        text = form["data"].strip()
        if not text.startswith(("{", "[")):
            text = text.replace(" ", "+")  # base64's '+' read as a form-encoded space
        data = text.encode()
    return _decompress(data, (compression or "").strip().lower())


def _decompress(data: bytes, compression: str) -> bytes:
    if compression and compression not in COMPRESSIONS:
        raise InvalidInput("compression", f"unsupported compression {compression!r}; one of {', '.join(COMPRESSIONS)}",
                           status=415, code="unsupported_encoding")
    if compression in ("gzip", "gzip-js") or data.startswith(GZIP_MAGIC):
        data = inflate(data, gzip=True)
    elif compression == "lz64":
        data = decompress_from_base64(data.decode("latin-1"), field="body").encode()
    elif not _looks_like_json(data):  # compression=base64, or old posthog-js without a hint
        data = _from_base64(data)
    if not _looks_like_json(data) and _BASE64.fullmatch(data.strip()):
        data = _from_base64(data)  # old posthog-js: base64 inside the compressed body
    return data


def _looks_like_json(data: bytes) -> bool:
    return data.lstrip()[:1] in (b"{", b"[")


def _from_base64(data: bytes) -> bytes:
    text = data.strip()
    text += b"=" * (-len(text) % 4)
    try:
        return base64.b64decode(text.replace(b"-", b"+").replace(b"_", b"/"), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("$", "body is not json, nor gzip, nor base64-encoded json") from None


@dataclass
class PostHogRequest:
    """A request's envelope, decoded before the project is known (the key is in the body)."""

    key: str | None  # the batch's api_key, else the one token its events share
    events: list[tuple[str, Any]]  # (JSON path of the event, the event as sent)
    sent_at: int | None  # unix ms


def parse_request(data: bytes, query: dict[str, str]) -> PostHogRequest:
    document = decode_json(data)
    key = None
    sent_at = None
    if isinstance(document, list):
        events: list[tuple[str, Any]] = [(f"$[{index}]", event) for index, event in enumerate(document)]
        root = "$"
    elif isinstance(document, dict) and "batch" in document:
        batch = document["batch"]
        if not isinstance(batch, list):
            raise InvalidInput("$.batch", "must be an array of events")
        events = [(f"$.batch[{index}]", event) for index, event in enumerate(batch)]
        key = optional_text(document, "api_key", "$") or optional_text(document, "token", "$")
        sent_at = optional_time(document, "sent_at", "$")
        root = "$.batch"
    else:
        events = [("$", as_object(document, "$"))]
        root = "$"
    if not events:
        raise InvalidInput(root, "batch has no events")
    if len(events) > MAX_BATCH:
        raise TooLarge(root, f"batch has {len(events)} events; the limit is {MAX_BATCH}")
    if sent_at is None and query.get("_"):
        sent_at = parse_time(query["_"], "_ (query)")  # posthog-js: the send time in unix ms
    return PostHogRequest(key or _shared_token(events), events, sent_at)


def _token(event: JSONObject) -> Any:
    for name in ("api_key", "token", "$token"):
        if event.get(name):
            return event[name]
    properties = event.get("properties")
    return properties.get("token") if isinstance(properties, dict) else None


def _shared_token(events: list[tuple[str, Any]]) -> str | None:
    """The project key the events carry; 400 when they name different ones (one request, one project)."""
    found: str | None = None
    for root, event in events:
        token = _token(event) if isinstance(event, dict) else None
        if token is None:
            continue
        if not isinstance(token, str):
            raise InvalidInput(f"{root}.token", "the project key must be a string")
        if found is not None and token != found:
            raise InvalidInput(f"{root}.token", "the events of one request carry different project keys")
        found = token
    return found


def decode_events(request: PostHogRequest, project: str, received_at: int) -> Decoded:
    """Every event as an Event; an invalid event rejects only itself (field and reason)."""
    accepted: list[tuple[int, Event]] = []
    rejected: list[RejectedEvent] = []
    for index, (root, event) in enumerate(request.events):
        try:
            accepted.append((index, capture_event(as_object(event, root), project, root, request.sent_at, received_at)))
        except InvalidInput as err:
            rejected.append(RejectedEvent(index=index, field=err.field, reason=err.reason))
    return Decoded(None, accepted, rejected)


def capture_event(event: JSONObject, project: str, root: str, sent_at: int | None, received_at: int) -> Event:
    name = required_name(event, "event", root)
    properties = optional_object(event, "properties", root)
    props_root = f"{root}.properties"
    distinct_id = (optional_id(event, "distinct_id", root) or optional_id(event, "$distinct_id", root)
                   or optional_id(properties, "distinct_id", props_root))
    if distinct_id is None:
        raise InvalidInput(f"{root}.distinct_id", "required field is missing")
    uuid = optional_text(event, "uuid", root)
    offset = event.get("offset")
    if offset is not None:
        if isinstance(offset, bool) or not isinstance(offset, int | float) or not 0 <= offset <= received_at:
            raise InvalidInput(f"{root}.offset", "must be a non-negative number of milliseconds before sending")
        ts, flags = received_at - int(offset), FLAG_SKEW_CORRECTED
    else:
        ts, flags = event_time(optional_time(event, "timestamp", root), sent_at, received_at, root)
    stored = {k: v for k, v in properties.items() if k != "token"} if properties else None  # a credential, not data
    payload = CompatPayload(
        userId=distinct_id,
        serviceName=SERVICE_NAME,
        sessionId=optional_id(properties, "$session_id", props_root),
        userAgent=optional_long_text(properties, "$raw_user_agent", props_root)
        or optional_long_text(properties, "$user_agent", props_root),
        referrer=optional_long_text(properties, "$referrer", props_root),
        deviceType=optional_text(properties, "$device_type", props_root),
        eventId=uuid,
        metadata=present(**{
            "source": SERVICE_NAME,
            "url": optional_long_text(properties, "$current_url", props_root),
            "library": properties.get("$lib") if properties else None,
            "properties": stored,
            "$set": event.get("$set"),
            "$set_once": event.get("$set_once"),
            "timestamp": event.get("timestamp"),  # as the client sent it
            "offset": offset,
        }),
    )
    return compat_event(project, name, payload, client_id=uuid, timestamp=ts, flags=flags,
                        received_at=received_at, root=root)
