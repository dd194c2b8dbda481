"""The OpenAPI 3.1 document of every HTTP route Pulse serves, and a self-contained /docs page.

The document is what a generated client sends, so it describes what the server accepts, no more and
no less: request bodies and parameters are written here against the decoders' rules
(protocol/normalize.py, server/params.py, server/insight_routes.py: lengths, bounds, time formats,
enumerations, the NUL character refused in indexed identifiers); answers come from the msgspec wire
types (msgspec.json.schema_components), so they cannot drift from what the encoders emit.
tests/e2e/test_openapi_contract.py runs schemathesis against a live server to keep both true.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterable
from functools import cache
from typing import Any, Final

import msgspec

from actors.automation import abtest, approval, conditions, definition, workflows
from actors.identity import continuity as identity_continuity
from actors.session import SessionView
from actors.user import UserView
from protocol import anomaly, behavioral, privacy_ingest, tracking
from protocol.normalize import MAX_BATCH, MAX_TIME_MS
from protocol.privacy import CATEGORIES
from protocol.tracking import MAX_NAME, MAX_TEXT
from server import (
    approval_routes,
    identity_routes,
    insight_routes,
    integrations,
    trigger_routes,
    workflow_routes,
)
from server.compat import posthog, segment
from server.compat.intake import PostHogAnswer, SegmentAnswer
from server.event_listing import MAX_LIMIT as LISTING_MAX
from server.export import FORMATS
from server.privacy import consent_routes
from server.suggestions import MAX_LIMIT as SUGGESTIONS_MAX
from server.webhooks import routes as webhook_routes
from storage.base import MAX_PAGE
from storage.consent_records import STATUSES as CONSENT_STATUSES
from storage.webhook_records import DEAD, STATUSES
from storage.workflow_records import ACTION_STATUSES

REF: Final = "#/components/schemas/{name}"
Schema = dict[str, Any]

# -- values --------------------------------------------------------------------------------------------

NO_NUL: Final = r"^[^\u0000]*$"  # identifiers are indexed: no backend stores NUL the same way
# ISO 8601 / RFC 3339 date-times that land between 1970-01-02 and 9998-12-31 whatever their offset:
# earlier or later ones are refused (times are unix ms from 1970 to 9999; 1970-01-01 and 9999 are
# left out so that no UTC offset can push a documented value out of that range).
ISO_TIME: Final = (
    r"^(1970-(0[2-9]|1[0-2])-[0-9]{2}|1970-01-(0[2-9]|[1-3][0-9])"
    r"|(197[1-9]|19[89][0-9]|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9])-[0-9]{2}-[0-9]{2})"
    r"T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})$"
)
UNIX_TEXT: Final = r"^[0-9]{1,14}(\.[0-9]*)?$"  # unix ms; below 10^11, unix seconds
RELATIVE: Final = r"^[0-9]+ ?(ms|s|m|h|d|w)$"  # back from now: 30m, 24h, 7d
FILTERS: Final = r"^((device_type|persona):[^,\s][^,]*)?(,(device_type|persona):[^,\s][^,]*)*$"
# a prediction horizon: more than nothing, at most 366 days
HORIZON: Final = r"^([1-9][0-9]{0,6}s|[1-9][0-9]{0,4}m|[1-9][0-9]{0,2}h|([1-9]|[1-9][0-9]|[12][0-9]{2}|3[0-5][0-9]|36[0-6])d|([1-9]|[1-4][0-9]|5[0-2])w)$"


def _text(max_length: int = MAX_NAME, *, min_length: int = 0, no_nul: bool = False) -> Schema:
    schema: Schema = {"type": "string", "maxLength": max_length}
    if min_length:
        schema["minLength"] = min_length
    if no_nul:
        schema["pattern"] = NO_NUL
    return schema


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


TIME_STRING: Final[Schema] = {"type": "string", "format": "date-time", "pattern": ISO_TIME}
# a time in a body: unix ms (or s below 10^11) as a number or a string, or an ISO 8601 date-time
BODY_TIME: Final[Schema] = {
    "anyOf": [
        {"type": "number", "minimum": 0, "maximum": MAX_TIME_MS},
        TIME_STRING,
        {"type": "string", "pattern": UNIX_TEXT},
    ],
    "description": "unix ms (a number below 10^11 is unix seconds), or ISO 8601 (RFC 3339) between 1970 and 9999",
}
# sentAt (the client's clock when it sent) corrects the timestamp, so it is read only with one;
# empty means absent
SENT_AT: Final[Schema] = {"anyOf": [BODY_TIME, {"type": "null"}, {"type": "string", "maxLength": 0}]}
HAS_TIMESTAMP: Final[Schema] = {"required": ["timestamp"], "properties": {"timestamp": {"type": ["number", "string"]}}}
# a time in a query: the same, or a duration back from now; empty means absent
QUERY_TIME: Final[Schema] = {
    "anyOf": [
        TIME_STRING,
        {"type": "string", "pattern": UNIX_TEXT},
        {"type": "string", "pattern": RELATIVE},
        {"type": "string", "maxLength": 0},
    ],
}
QUERY_TEXT: Final[Schema] = _text()  # a filter: at most 200 characters; empty means absent


# -- request bodies -------------------------------------------------------------------------------------

def _track_payload() -> Schema:
    """AIEventPayload as POST /api/events/track/{eventName} decodes it; other keys are kept as sent."""
    ident = _nullable(_text(no_nul=True))
    return {
        "type": "object",
        "properties": {
            "userAgent": _nullable(_text(MAX_TEXT)),
            "referrer": _nullable(_text(MAX_TEXT)),
            "sessionId": ident,
            "userRole": _nullable(_text()),
            "correlationId": ident,
            "statusCode": _nullable({"type": "integer", "minimum": 0, "maximum": 999}),
            "responseTimeMs": _nullable({"type": "number", "minimum": 0}),
            "serviceName": ident,
            "metadata": _nullable({"type": "object"}),
            "userId": ident,
            "timestamp": _nullable(BODY_TIME),
            "sentAt": {"type": ["number", "string", "null"]},
            "eventId": ident,
            "messageId": ident,
            "insertId": ident,
            "deviceType": ident,
        },
        "if": HAS_TIMESTAMP,
        "then": {"properties": {"sentAt": SENT_AT}},
    }


EVENT_NAME: Final[Schema] = _text(min_length=1, no_nul=True)


def _track_batch() -> Schema:
    return {
        "type": "object",
        "required": ["events"],
        "properties": {
            "events": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_BATCH,
                "items": {
                    "type": "object",
                    "required": ["eventName"],
                    "properties": {
                        "eventName": EVENT_NAME,
                        "payload": _nullable({"$ref": REF.format(name="AIEventPayload")}),
                    },
                },
            },
            "batchId": _nullable(_text()),
            # the sentAt of the events with a timestamp and no sentAt of their own
            "sentAt": {"type": ["number", "string", "null"]},
        },
        "if": {"properties": {"events": {"contains": {"required": ["payload"], "properties": {"payload": HAS_TIMESTAMP}}}}},
        "then": {"properties": {"sentAt": _nullable(BODY_TIME)}},
        "description": (
            "Each event is judged alone: the valid ones are stored (200, with the others under "
            "rejected); a batch with no valid event is a 400."
        ),
    }


def _behavioral_event() -> Schema:
    ident = _nullable(_text(no_nul=True))
    return {
        "type": "object",
        "required": ["eventType"],
        "properties": {
            "eventType": EVENT_NAME,
            "sessionId": ident,
            "userId": ident,
            "deviceType": ident,
            # without a timestamp of its own the event takes eventData.timestamp (seed 000's example)
            "eventData": _nullable({"type": "object"}),
            "elementContext": _nullable({"type": "object"}),
            "interactionContext": _nullable({"type": "object"}),
            "performanceMetrics": _nullable({"type": "object"}),
            "timestamp": _nullable(BODY_TIME),
            "sentAt": {"type": ["number", "string", "null"]},
            "eventId": ident,
            "messageId": ident,
            "insertId": ident,
            "serviceName": ident,
            "correlationId": ident,
            "deviceId": _nullable(_text()),
        },
        "allOf": [
            # without a timestamp of its own the event takes eventData.timestamp (seed 000's example)
            {"if": {"anyOf": [{"not": {"required": ["timestamp"]}}, {"properties": {"timestamp": {"type": "null"}}}]},
             "then": {"properties": {"eventData": {"anyOf": [{"type": "null"}, {
                 "type": "object",
                 "properties": {"timestamp": {"anyOf": [BODY_TIME, {"type": ["null", "boolean", "object", "array"]}]}},
             }]}}}},
            {"if": {"anyOf": [HAS_TIMESTAMP, {"required": ["eventData"], "properties": {"eventData": {
                "type": "object", **HAS_TIMESTAMP}}}]},
             "then": {"properties": {"sentAt": SENT_AT}}},
        ],
    }


def _privacy_compliant_event() -> Schema:
    """POST /api/v1/behavioral/events/privacy-compliant (protocol/privacy_ingest.py)."""
    ident = _nullable(_text(no_nul=True))
    behavioral_event = _behavioral_event()
    settings = {
        "type": "object",
        "properties": {
            "anonymization": {"enum": list(privacy_ingest.ANONYMIZATION_LEVELS),
                              "default": privacy_ingest.DEFAULT_ANONYMIZATION},
            "retention": _nullable({"type": "string", "pattern": privacy_ingest.RETENTION_PATTERN,
                                    "description": "N_days, N_weeks, N_months or N_years (a month is 30 days, "
                                                   "a year 365), at most 100 years; null: the project's retention"}),
            "sharing": {"enum": list(privacy_ingest.SHARING), "default": "none"},
        },
    }
    return {
        "type": "object",
        "required": ["anonymizedSessionId", "consentLevel", "eventType"],
        "properties": {
            "anonymizedSessionId": _text(min_length=1, no_nul=True),
            "consentLevel": {"enum": list(privacy_ingest.CONSENT_LEVELS),
                             "description": "none/essential: not stored (dropped: consent); analytics_only: no "
                                            "marketing, personalization or advertising; personalized: no marketing "
                                            "or advertising; full/all: everything"},
            "eventType": EVENT_NAME,
            "eventData": _nullable({"type": "object"}),
            "privacySettings": settings,
            "userId": ident,
            "timestamp": _nullable(BODY_TIME),
            "sentAt": {"type": ["number", "string", "null"]},
            "eventId": ident,
        },
        "allOf": behavioral_event["allOf"],  # timestamp, eventData.timestamp and sentAt: the same rules
    }


def _behavioral_batch() -> Schema:
    events = {"type": "array", "minItems": 1, "maxItems": MAX_BATCH, "items": {"$ref": REF.format(name="BehavioralEvent")}}
    return {
        "anyOf": [
            {
                "type": "object",
                "required": ["events"],
                "properties": {"events": events, "batchId": _nullable(_text()), "sentAt": _nullable(BODY_TIME)},
            },
            events,
        ],
        "description": (
            "{\"events\": [...]} or a bare array. Each event is judged alone: the valid ones are stored "
            "(200, with the others under rejected); a batch with no valid event is a 400."
        ),
    }


INGEST_TYPES: Final = ("application/json", "application/msgpack")


def _ingest_body(schema: Schema, *, required: bool = True) -> Schema:
    """JSON, or MessagePack (application/msgpack, application/x-msgpack, application/vnd.msgpack)
    of the same shape; Content-Encoding gzip or deflate is accepted."""
    return {"required": required, "content": {kind: {"schema": schema} for kind in INGEST_TYPES}}


def _json_body(schema: Schema, *, required: bool = True) -> Schema:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


# -- answers --------------------------------------------------------------------------------------------

ERROR: Final[Schema] = {
    "type": "object",
    "required": ["success", "error"],
    "properties": {
        "success": {"const": False},
        "error": {
            "type": "object",
            "required": ["code", "reason"],
            "properties": {"code": {"type": "string"}, "field": {"type": "string"}, "reason": {"type": "string"}},
        },
        "message": {"type": "string"},
    },
}
ERROR_WHY: Final = {
    400: "invalid input: the body names the field (JSON path or parameter) and the reason",
    401: "missing or unknown api key (on a bind that is not loopback)",
    403: "a public write key used where the secret key is needed",
    404: "no such resource",
    405: "method not allowed here; the Allow header lists the methods that are",
    408: "the body did not arrive in time",
    409: "conflict with an existing resource",
    413: "body, decompressed body or batch over its limit",
    415: "unsupported Content-Type or Content-Encoding",
    429: "over the project's rate limit (per API key or per client IP); nothing stored; retry after Retry-After seconds",
    503: "overloaded or storage unavailable; retry after Retry-After seconds",
}
RETRY_AFTER: Final[Schema] = {"Retry-After": {"schema": {"type": "integer", "minimum": 0}, "description": "seconds"}}
ALLOW: Final[Schema] = {"Allow": {"schema": {"type": "string"}, "description": "the methods this path answers"}}


def _error(status: int) -> Schema:
    answer: Schema = {"description": ERROR_WHY[status], "content": {"application/json": {"schema": {"$ref": REF.format(name="Error")}}}}
    if status in (429, 503):
        answer["headers"] = RETRY_AFTER
    if status == 405:
        answer["headers"] = ALLOW
    return answer


def _json(schema: Schema | type, description: str = "OK") -> Schema:
    if isinstance(schema, type):
        schema = {"$ref": REF.format(name=schema.__name__)}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _obj(*required: str, **properties: Schema) -> Schema:
    """A JSON object with these keys (others may follow: answers grow new fields at the end)."""
    return {"type": "object", "required": list(required), "properties": properties}


ANY: Final[Schema] = {}
NUM: Final[Schema] = {"type": "number"}
INT: Final[Schema] = {"type": "integer"}
STR: Final[Schema] = {"type": "string"}
BOOL: Final[Schema] = {"type": "boolean"}
OBJ: Final[Schema] = {"type": "object"}
ARR: Final[Schema] = {"type": "array"}


# -- parameters -----------------------------------------------------------------------------------------

def _query(name: str, schema: Schema, description: str | None = None, *, required: bool = False) -> Schema:
    param: Schema = {"name": name, "in": "query", "required": required, "schema": schema}
    if description:
        param["description"] = description
    return param


def _list_query(name: str, values: tuple[str, ...] | list[str], description: str) -> Schema:
    """A comma-separated list of names (form style, not exploded: ?metrics=a,b)."""
    items = {"type": "string", "enum": list(values)}
    return {"name": name, "in": "query", "required": False, "style": "form", "explode": False,
            "schema": {"type": "array", "items": items, "minItems": 1}, "description": description}


def _choice(values: Iterable[str], default: str) -> Schema:
    """One of ``values``; empty (like absent) means ``default``."""
    return {"type": "string", "enum": ["", *values], "default": default}


def _path(name: str, schema: Schema) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": schema}


TIME_FROM: Final = _query("from", QUERY_TIME, "start (inclusive): ISO 8601, unix ms, or back from now (24h, 7d)")
TIME_TO: Final = _query("to", QUERY_TIME, "end: ISO 8601, unix ms, or back from now (1h)")
EVENT_FILTERS: Final = [
    TIME_FROM,
    TIME_TO,
    _query("type", QUERY_TEXT, "event names containing this text"),
    _query("serviceName", QUERY_TEXT),
    _query("userId", QUERY_TEXT),
    _query("sessionId", QUERY_TEXT),
    _query("correlationId", QUERY_TEXT),
    _query("eventName", QUERY_TEXT, "this exact event name"),
]
CURSOR: Final = _query("cursor", {"type": "string"},
                       "opaque: the nextCursor of the previous page, as it was returned (anything else is a 400)")
X_USER_ID: Final = {"name": "X-User-Id", "in": "header", "required": False, "schema": {"type": "string"},
                    "description": "the user, when the payload names none"}
LAST_EVENT_ID: Final = {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"},
                        "description": "resume after this event id (what EventSource sends on reconnect)"}


def _op(summary: str, answer: Schema, *, errors: tuple[int, ...], body: Schema | None = None,
        params: list[Schema] | None = None, status: int = 200, more: dict[str, Schema] | None = None,
        operation_id: str | None = None) -> Schema:
    responses: Schema = {str(status): answer, **(more or {})}
    responses.update({str(code): _error(code) for code in errors})
    op: Schema = {"summary": summary, "responses": responses}
    if operation_id:
        op["operationId"] = operation_id
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = body
    return op


READ: Final = (400, 401, 403, 503)  # a read route: bad parameter, key, secret key, storage
INGEST: Final = (400, 401, 408, 413, 415, 429, 503)


def _ingest_paths() -> dict[str, Schema]:
    track = _op(
        "Track one event by name (seed 004); the body may be empty", _json(tracking.TrackEventResponse),
        errors=INGEST, body=_ingest_body({"$ref": REF.format(name="AIEventPayload")}, required=False),
        params=[_path("eventName", {**EVENT_NAME, "not": {"const": "batch"}}), X_USER_ID],
    )
    return {
        "/api/events/track/{eventName}": {"post": track},
        "/api/events/track/batch": {"post": _op(
            f"Track up to {MAX_BATCH} events", _json(tracking.BatchTrackEventResponse), errors=INGEST,
            body=_ingest_body({"$ref": REF.format(name="BatchTrackEventRequest")}), params=[X_USER_ID],
        )},
        "/api/v1/behavioral/events": {"post": _op(
            "Ingest one behavioral event (seed 000)", _json(behavioral.BehavioralIngestResponse), errors=INGEST,
            body=_ingest_body({"$ref": REF.format(name="BehavioralEvent")}),
        )},
        "/api/v1/behavioral/batch": {"post": _op(
            f"Ingest up to {MAX_BATCH} behavioral events", _json(behavioral.BehavioralBatchResponse), errors=INGEST,
            body=_ingest_body({"$ref": REF.format(name="BehavioralBatch")}),
        )},
        "/api/v1/behavioral/events/privacy-compliant": {"post": _op(
            "Ingest one event anonymized as its privacySettings say (seed 000; docs/privacy.md)",
            _json(privacy_ingest.PrivacyIngestResponse), errors=INGEST,
            body=_ingest_body({"$ref": REF.format(name="PrivacyCompliantEvent")}),
        )},
    }


# Intake in other vendors' formats (server/compat/, docs/compat.md): their SDKs point at Pulse
# unchanged. Described: the fields Pulse reads (server/compat/segment.py, posthog.py); the rest of
# those vendors' JSON is kept as sent. Each message of a batch is judged alone, like Pulse's own.
def _id_value(*, required: bool = False, no_nul: bool = True) -> Schema:
    """A user, group or session id: a string (empty means absent) or a number, as those SDKs send."""
    text = _text(min_length=1 if required else 0, no_nul=no_nul)
    return {"anyOf": [text, {"type": "number"}] + ([] if required else [{"type": "null"}])}


def _present(name: str) -> Schema:
    """``name`` is there, neither null nor empty."""
    return {"required": [name], "properties": {name: {"anyOf": [{"type": "string", "minLength": 1}, {"type": "number"}]}}}


ABSENT: Final[Schema] = {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 0}]}  # if there at all


def _first_present(names: tuple[str, ...]) -> Schema:
    """The user is the first of ``names`` that is there (neither null nor empty), and one must be:
    that one is stored and indexed (no NUL)."""
    return {"anyOf": [
        {**_present(name), "properties": {**{before: ABSENT for before in names[:index]}, name: _id_value(required=True)}}
        for index, name in enumerate(names)
    ]}


def _read_unless(field: str, other: str, schema: Schema) -> Schema:
    """``other`` is read (as ``schema``) only when ``field`` is absent or null."""
    return {"anyOf": [
        {"required": [field], "properties": {field: {"not": {"type": "null"}}}},
        {"properties": {field: {"type": "null"}, other: schema}},
    ]}


def _segment_message(call: str | None) -> Schema:
    """One Segment call; ``call`` None: a message of a batch, which names its call in ``type``."""
    message: Schema = {
        "type": "object",
        "properties": {
            "userId": _id_value(), "anonymousId": _id_value(no_nul=False),  # no NUL: when it is the user
            "groupId": _id_value(no_nul=False), "previousId": _id_value(no_nul=False),
            "messageId": _nullable(_text(no_nul=True)),
            "timestamp": _nullable(BODY_TIME), "sentAt": _nullable(BODY_TIME),
            **{name: _nullable(OBJ) for name in ("context", "properties", "traits", "integrations")},
            # the write key in a batch's messages must be the same in all: it belongs to the batch
            **({} if call is None else {"writeKey": _nullable(_text())}),
        },
        "allOf": [_first_present(("userId", "anonymousId")),
                  _read_unless("timestamp", "originalTimestamp", _nullable(BODY_TIME))],
    }
    needs = {"track": ["event"], "group": ["groupId"], "alias": ["previousId", "userId"]}
    kinds = {"event": EVENT_NAME, "userId": _id_value(required=True),
             "groupId": _id_value(required=True, no_nul=False), "previousId": _id_value(required=True, no_nul=False)}

    def rule(kind: str) -> Schema:
        return {"required": needs.get(kind, []), "properties": {name: kinds[name] for name in needs.get(kind, [])}}

    if call is None:  # the call is the message's type; a single call's type and name come from its path
        message["required"] = ["type"]
        message["allOf"].append({"anyOf": [
            {**rule(kind), "properties": {"type": {"const": kind}, **rule(kind)["properties"]}}
            for kind in sorted(segment.CALL_TYPES)
        ]})
    else:
        message["allOf"].append(rule(call))
    return message


def _posthog_event(*, alone: bool) -> Schema:
    """One captured event; ``alone``: the whole body, which may carry the project key."""
    user_in_properties = {"properties": {"distinct_id": ABSENT, "$distinct_id": ABSENT,
                                         "properties": {"type": "object", **_present("distinct_id"),
                                                        "properties": {"distinct_id": _id_value(required=True)}}},
                          "required": ["properties"]}
    return {
        "type": "object",
        "required": ["event"],
        "properties": {
            "event": EVENT_NAME, "uuid": _nullable(_text(no_nul=True)),
            "offset": _nullable({"type": "number", "minimum": 0, "maximum": 10**12}),
            "properties": _nullable(OBJ),
            # the events of one request must carry the same key: it belongs to the request
            **({name: _nullable(STR) for name in ("api_key", "token", "$token")} if alone else {}),
        },
        "allOf": [
            _read_unless("offset", "timestamp", _nullable(BODY_TIME)),
            # the user: distinct_id, else $distinct_id, else properties.distinct_id (the others unread)
            {"anyOf": [*_first_present(("distinct_id", "$distinct_id"))["anyOf"], user_in_properties]},
        ],
    }


def _compat_paths() -> dict[str, Schema]:
    paths: dict[str, Schema] = {}
    batch = {"type": "array", "minItems": 1, "maxItems": MAX_BATCH}
    for path, call in segment.PATHS.items():
        if call is None:
            what = "a batch"
            body = _obj("batch", batch={**batch, "items": _segment_message(None)}, writeKey=_nullable(_text()),
                        sentAt=_nullable(BODY_TIME), context=_nullable(OBJ), integrations=_nullable(OBJ))
        else:
            what, body = f"one {call} call", _segment_message(call)
        paths[path] = {"post": _op(
            f"Segment's HTTP tracking API, {what}; the write key as HTTP Basic user, writeKey, or a Pulse key",
            _json(SegmentAnswer), errors=INGEST, body=_json_body(body),
        )}
    event = _posthog_event(alone=False)
    capture = {"anyOf": [
        _posthog_event(alone=True),
        {**batch, "items": event},
        _obj("batch", batch={**batch, "items": event}, api_key=_nullable(STR), sent_at=_nullable(BODY_TIME)),
    ]}
    for path in posthog.PATHS:
        paths[path] = {"post": _op(
            "PostHog's capture API: one event, an array, or {batch: [...], api_key} (posthog-js also sends a "
            f"form with data=, and compressed bodies: ?compression={'|'.join(posthog.COMPRESSIONS)})",
            _json(PostHogAnswer), errors=INGEST, body=_json_body(capture),
            params=[_query("_", {"type": "string", "pattern": UNIX_TEXT}, "posthog-js: the send time, unix ms")],
        )}
    return paths


# one Server-Sent Event (OpenAPI 3.1 has the schema of a text/event-stream describe each event);
# data is the JSON of a message
SSE: Final = {"text/event-stream": {"schema": {
    "type": "object",
    "required": ["data"],
    "properties": {"data": {"type": "string"}, "event": {"type": "string"}, "id": {"type": "string"},
                   "retry": {"type": "integer"}},
}}}


def _stream_paths() -> dict[str, Schema]:
    common = [
        _query("sessionId", QUERY_TEXT, "only this session's messages (a public key may read these)"),
        _query("userId", QUERY_TEXT, "only this user's messages (a public key may read these)"),
        _query("lastEventId", {"type": "string"}, "as Last-Event-ID, for clients that cannot set headers"),
        LAST_EVENT_ID,
    ]
    events = _op(
        "Server-Sent Events of tracked events: unnamed messages whose JSON type is event, stats or ping; "
        "event: gap when a resume cannot replay everything (docs/streams.md)",
        {"description": "an endless stream", "content": SSE}, errors=READ,
        params=[*common, _query("serviceName", QUERY_TEXT), _query("eventName", QUERY_TEXT)],
    )
    behavioral_stream = _op(
        "Server-Sent Events of behavioral events, engagement metrics and conversion triggers (also a "
        "WebSocket: see the description above)",
        {"description": "an endless stream", "content": SSE}, errors=READ,
        params=[*common, _list_query("subscriptions", ("behavioral_events", "engagement_metrics", "conversion_triggers"),
                                     "what to receive (default: all)")],
    )
    return {"/api/events/stream": {"get": events}, "/api/v1/behavioral/stream": {"get": behavioral_stream}}


def _query_paths() -> dict[str, Schema]:
    export_types = {fmt.media_type: {"schema": {"type": "string", "format": "binary"}} for fmt in FORMATS.values()}
    listing_limit = _query("limit", {"type": "integer", "minimum": 1, "maximum": LISTING_MAX, "default": 100},
                           f"events in the answer; above {MAX_PAGE} the answer streams, page after page")
    next_page = _json(tracking.EventsQueryResponse)
    next_page["links"] = {"nextPage": {
        "operationId": "queryEvents",
        "parameters": {"cursor": "$response.body#/nextCursor"},
        "description": "the next page: the same filters with the cursor of this one",
    }}
    return {
        "/api/events": {"get": _op(
            "Query stored events, newest first, a page at a time", next_page, errors=READ,
            params=[listing_limit, *EVENT_FILTERS, CURSOR], operation_id="queryEvents",
        )},
        "/api/events/services": {"get": _op(
            "Per-service analytics", _json(tracking.ServicesResponse), errors=READ,
            params=[TIME_FROM, TIME_TO, _query("serviceName", QUERY_TEXT)],
        )},
        "/api/events/statistics": {"get": _op(
            "Event statistics", _json(tracking.EventStatistics), errors=READ,
            params=[TIME_FROM, TIME_TO, _query("limit", {"type": "integer", "default": 10},
                                               "top events listed; taken as 1 below 1 and as 1000 above it")],
        )},
        "/api/events/suggestions": {"get": _op(
            "Suggestions from live statistics (docs/suggestions.md)", _json(tracking.SuggestionsResponse), errors=READ,
            params=[_query("eventName", QUERY_TEXT), _query("serviceName", QUERY_TEXT), _query("userId", QUERY_TEXT),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": SUGGESTIONS_MAX})],
        )},
        "/api/events/export": {"get": _op(
            "ML feature export (seed 004 MLFeatureSet), one row per event, oldest first, streamed (chunked); "
            "the filters of GET /api/events; times in UTC; columns in docs/export.md",
            {"description": "an attachment (Content-Disposition) in the requested format", "content": export_types},
            errors=READ,
            params=[_query("format", _choice(FORMATS, "ndjson")), *EVENT_FILTERS],
        )},
        "/api/events/anomalies": {"get": _op(
            "Anomalous minutes per service: response time, error rate, volume (docs/anomalies.md). "
            "Without from: the 24 h before to (default now); from must not be after to, and the range "
            "spans at most 31 days (else a 400 naming from).",
            _json(anomaly.AnomaliesResponse), errors=READ,
            params=[TIME_FROM, TIME_TO, _query("serviceName", QUERY_TEXT)],
        )},
    }


def _insight_paths() -> dict[str, Schema]:
    live = (400, 401, 403, 404, 503)
    session = _query("sessionId", {"type": "string", "minLength": 1})
    user = _query("userId", {"type": "string", "minLength": 1})
    window = {"type": "integer", "minimum": 1}
    realtime = _op(
        "A session's live engagement, intent and conversion probability", _json(OBJ), errors=live,
        params=[
            {**session, "required": True},
            _query("timeWindow", {**window, "maximum": 86_400, "default": 300}, "seconds"),
            _list_query("metrics", insight_routes.REALTIME_METRICS, "default: all"),
            _query("aggregation", _choice(insight_routes.AGGREGATIONS, "latest")),
        ],
    )
    patterns = _op(
        "A session's behavior patterns (sessionId, or userId for the user's latest session)", _json(OBJ), errors=live,
        params=[
            session, user,
            _query("timeWindow", {**window, "maximum": 30 * 86_400, "default": 1800}, "seconds"),
            _query("includePredictions", {"type": "boolean", "default": False}),
        ],
    )
    historical = _op(
        "A user's completed journeys by period", _json(OBJ), errors=live,
        params=[
            {**user, "required": True},
            _query("granularity", _choice(insight_routes.GRANULARITIES, "daily")),
            {"name": "dateRange", "in": "query", "required": False, "style": "form", "explode": False,
             "schema": {"type": "array", "items": {"type": "string", "format": "date"}, "minItems": 1, "maxItems": 2},
             "description": "a UTC day, or first,last (inclusive; last not before first)"},
            _query("filters", {"type": "string", "pattern": FILTERS}, "name:value,... with a name of device_type, persona"),
        ],
    )
    kinds = sorted({*insight_routes.PREDICTION_TYPES, *insight_routes.PREDICTION_ALIASES})
    predictive = _op(
        "A user's predicted conversion, churn, engagement or next action, with a confidence interval",
        _json(OBJ), errors=live,
        params=[
            {**user, "required": True},
            _query("predictionType", _choice(kinds, "conversion")),
            _query("timeHorizon", {"anyOf": [
                _choice(insight_routes.HORIZON_WORDS, "24h"),
                {"type": "string", "pattern": HORIZON},
            ], "default": "24h"}, "a duration up to 366 days: 90s, 30m, 24h, 7d, 4w, or short_term ... long_term"),
            _query("confidence", {"anyOf": [
                _choice(insight_routes.CONFIDENCE_WORDS, "0.95"),
                {"type": "number", "minimum": 0.5, "exclusiveMaximum": 1},
                {"type": "number", "minimum": 50, "exclusiveMaximum": 100},
            ], "default": 0.95}, "0.5 to 0.999, or a percentage (50 to 99.9), or low ... very_high"),
        ],
    )
    conversions = _obj("conversionEvents", conversionEvents={
        "type": "array", "minItems": 1, "maxItems": insight_routes.MAX_CONVERSION_EVENTS, "items": EVENT_NAME,
    })
    models = _obj("projectId", "journeys", "conversionEvents", projectId=STR, journeys=INT, conversionEvents=ARR)
    return {
        "/api/v1/behavioral/analytics/realtime": {"get": realtime},
        "/api/v1/behavioral/patterns": {"get": patterns},
        "/api/v1/behavioral/analytics/historical": {"get": historical},
        "/api/v1/behavioral/analytics/predictive": {"get": predictive},
        "/api/v1/behavioral/models": {
            "get": _op("What the project's model learned", _json(models), errors=(401, 403, 503)),
            "put": _op("Set the project's conversion events; journeys are derived again", _json(models),
                       errors=(400, 401, 403, 503), body=_json_body(conversions)),
        },
        "/api/v1/behavioral/sessions/{sessionId}": {"get": _op(
            "A session's live state", _json(SessionView), errors=live, params=[_path("sessionId", {"type": "string"})],
        )},
        "/api/v1/behavioral/users/{userId}": {"get": _op(
            "A user's live state across devices, with insights", _json(UserView), errors=live,
            params=[_path("userId", {"type": "string"})],
        )},
    }


def _operations_paths() -> dict[str, Schema]:
    health = _obj("status", "components", status={"enum": ["healthy", "degraded", "unhealthy"]}, components=OBJ)
    project = _obj("id", "name", "publicKey", "secretKey", "createdAt",
                   id=STR, name=STR, publicKey=STR, secretKey=STR, createdAt=INT)
    asset_headers = {"ETag": {"schema": STR}, "Cache-Control": {"schema": STR}}

    def asset(summary: str, media: str, *, missing: bool = False) -> Schema:
        answer = {"description": "the file (gzip when accepted)", "headers": asset_headers,
                  "content": {media: {"schema": {"type": "string"}}}}
        not_modified = {"304": {"description": "If-None-Match matched the ETag", "headers": asset_headers}}
        return _op(summary, answer, errors=(404,) if missing else (), more=not_modified,
                   params=[{"name": "If-None-Match", "in": "header", "required": False, "schema": STR}])

    return {
        "/api/v1/behavioral/health": {"get": _op(
            "Component health (503 when unhealthy)", _json(health), errors=(),
            more={"503": _json(health, "unhealthy")},
        )},
        "/api/v1/behavioral/monitoring/performance": {"get": _op(
            "Measured performance figures", _json(_obj("metrics", "status", metrics=OBJ, status=STR)),
            errors=(401, 403, 503),
        )},
        "/metrics": {"get": _op(
            "The same figures for Prometheus (docs/metrics.md): text format 0.0.4, or OpenMetrics when asked",
            {"description": "the exposition", "content": {
                "text/plain": {"schema": STR}, "application/openmetrics-text": {"schema": STR}}},
            errors=(401, 403, 503),
        )},
        "/api/admin/projects": {
            "get": _op("List projects (the default project's secret key)",
                       _json(_obj("projects", projects={"type": "array", "items": project})), errors=(401, 403, 503)),
            "post": _op("Create a project", _json(project, "created"), status=201, errors=(400, 401, 403, 409, 503),
                        body=_json_body(_obj("name", name=_text(100, min_length=1)))),
        },
        "/openapi.json": {"get": _op("This document", _json(OBJ), errors=())},
        "/docs": {"get": _op("This document as a page", {"description": "HTML", "content": {"text/html": {"schema": STR}}},
                             errors=())},
        "/api/monitor.js": {"get": asset("Seed 004's embeddable monitor script", "application/javascript")},
        "/test-cors.html": {"get": asset("A page that tries the API across origins", "text/html")},
        "/dashboard": {"get": asset("The dashboard", "text/html")},
        "/dashboard/": {"get": _op("The dashboard's address with a slash", {
            "description": "to /dashboard", "headers": {"Location": {"schema": STR}}}, status=301, errors=())},
        "/dashboard/{name}": {"get": {
            **asset("A file of the dashboard (scripts, styles, images)", "*/*", missing=True),
            "parameters": [_path("name", {"type": "string", "minLength": 1}),
                           {"name": "If-None-Match", "in": "header", "required": False, "schema": STR}],
        }},
        "/": {"get": _op(
            "Where things are (a browser asking for HTML is sent to /dashboard)",
            _json(_obj("name", "docs", "openapi", name=STR, docs=STR, openapi=STR)), errors=(),
            more={"302": {"description": "to /dashboard, for Accept: text/html",
                          "headers": {"Location": {"schema": STR}}}},
        )},
    }


# -- data deletion (issue 14; server/privacy/deletion_routes.py) ------------------------------------------
# The secret key (or open loopback access); a request acts on the key's project only.

def _deletion_paths() -> dict[str, Schema]:
    counts = _obj("events", "sessions", "profiles", events=INT, sessions=INT, profiles=INT)
    record = _obj(
        "deletionId", "userId", "status", "dataRemoved", "requestDate", "completionDate", "options",
        deletionId=STR, userId=STR, status={"enum": ["processing", "completed", "failed"]}, dataRemoved=counts,
        dataAnonymized=counts, requestDate=STR, completionDate=_nullable(STR), error=STR,
        options=_obj("retentionOverride", "anonymizeOnly", "cascadeDelete",
                     retentionOverride=BOOL, anonymizeOnly=BOOL, cascadeDelete=BOOL),
    )
    user = _path("userId", {"type": "string", "minLength": 1, "maxLength": 256, "pattern": NO_NUL})
    flags = [
        _query("retentionOverride", BOOL, "recorded; no effect: nothing in Pulse holds events back from an erasure"),
        _query("anonymizeOnly", BOOL, "keep the events and statistics, strip the identity (default false)"),
        _query("cascadeDelete", BOOL, "also the anonymous events of the user's sessions (default true)"),
    ]
    body = _json_body({"type": "object", "additionalProperties": False,
                       "properties": {"retentionOverride": BOOL, "anonymizeOnly": BOOL, "cascadeDelete": BOOL}},
                      required=False)  # fmt: skip
    return {
        "/api/v1/behavioral/data/{userId}": {
            "delete": _op(
                "Erase a user's data in the key's project: events, sessions, profile, live state, stream history, "
                "queued deliveries and their share of the statistics (exact counts); the options as query "
                "parameters or a JSON body", _json(record), errors=(400, 401, 403, 413, 503),
                params=[user, *flags], body=body,
            ),
            "get": _op("The user's deletion requests, newest first (the latest at the top level)",
                       _json({**record, "properties": {**record["properties"], "requests": {
                           "type": "array", "items": record}}}), errors=(400, 401, 403, 404, 503),
                       params=[user]),
        },
        "/api/v1/behavioral/data/deletions/{deletionId}": {"get": _op(
            "One deletion request's status", _json(record), errors=(401, 403, 404, 503),
            params=[_path("deletionId", {"type": "string", "minLength": 1})],
        )},
    }


# -- triggers and webhooks (issue 13; docs/automation.md) ----------------------------------------------
# Every route needs the secret key (or open loopback access) and acts on the key's project. Bodies are
# described against the validators (actors/automation/definition.py, conditions.py, abtest.py,
# server/trigger_routes.py, server/webhooks/routes.py): unknown keys are refused where they refuse them.

AUTOMATION: Final = (400, 401, 403, 404, 503)  # 404: no such trigger or webhook in this project
# some character that is not white space as the validators' str.strip() sees it: Python's white space
# is ECMA's \s plus the separators U+001C..U+001F and U+0085 (a name of "\u001f" alone is blank)
NOT_BLANK: Final = r"[^\s\u001c-\u001f\u0085]"
NOT_BLANK_NO_NUL: Final = r"^[^\u0000]*[^\u0000\s\u001c-\u001f\u0085][^\u0000]*$"
# a schedule day: the validator reads YYYY-MM-DD (an end date includes its whole day)
DAY: Final[Schema] = {
    "type": "string", "format": "date",
    "pattern": r"^(19[7-9][0-9]|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9])-[0-9]{2}-[0-9]{2}$",
}
# the webhook URL: http(s), a host, a port from 0 to 65535 (urllib.parse.urlsplit's reading)
PORT: Final = r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
WEBHOOK_URL: Final = rf"^[hH][tT][tT][pP][sS]?://[A-Za-z0-9._~-]+(:{PORT})?([/?#][!-~]*)?$"
B64: Final = "[A-Za-z0-9+/]"
# whsec_ + base64 (padding optional) of 24 to 64 bytes
WEBHOOK_SECRET: Final = (
    rf"^whsec_((?:{B64}{{4}}){{8,20}}(?:{B64}{{2}}(==)?|{B64}{{3}}=?)?|(?:{B64}{{4}}){{21}}(?:{B64}{{2}}(==)?)?)$"
)


def _kind(limit: int = 200) -> Schema:
    return {"type": "string", "minLength": 1, "maxLength": limit, "pattern": NOT_BLANK}


def _actions() -> Schema:
    action = {
        "type": "object", "required": ["type"], "additionalProperties": False,
        "properties": {"type": _kind(), "parameters": _nullable(OBJ)},
    }
    return {"type": "array", "minItems": 1, "maxItems": definition.MAX_ACTIONS, "items": action}


def _filter() -> Schema:
    """One filter: the operators a field's type allows, and values of that type."""
    number = {"type": "number"}
    string = _text(conditions.MAX_TEXT)
    scalar = {"anyOf": [{"type": "string"}, number, BOOL, {"type": "null"}]}
    numeric_fields = sorted(k for k, v in conditions.FIELDS.items() if v == conditions.NUMBER)
    string_fields = sorted(k for k, v in conditions.FIELDS.items() if v == conditions.STRING)
    roots = "|".join(conditions.PATH_ROOTS)
    path = {"type": "string", "pattern": rf"^({roots})(\.[^.]+){{1,{conditions.MAX_PATH_DEPTH}}}$",
            "description": "a path into the event's own payload: eventData.price, metadata.plan"}

    def listed(item: Schema) -> Schema:
        return {"type": "array", "minItems": 1, "maxItems": conditions.MAX_IN_VALUES, "items": item}

    def case(field: Schema, operators: tuple[str, ...], value: Schema) -> Schema:
        return {"type": "object", "required": ["field", "operator", "value"], "additionalProperties": False,
                "properties": {"field": field, "operator": {"enum": list(operators)}, "value": value}}

    numeric, text = {"enum": numeric_fields}, {"enum": string_fields}
    return {"anyOf": [
        case(numeric, ("equals", "not_equals", "greater_than", "less_than"), number),
        case(numeric, ("in",), listed(number)),
        case(text, ("equals", "not_equals", "contains"), string),
        case(text, ("in",), listed(string)),
        case(path, ("equals", "not_equals", "contains"), scalar),
        case(path, ("greater_than", "less_than"), number),
        case(path, ("in",), listed(scalar)),
    ], "description": "numeric fields compare as numbers; a missing value matches only not_equals"}


def _trigger_body(*, update: bool) -> Schema:
    conditions_schema = {
        "type": "object", "required": ["eventType"], "additionalProperties": False,
        "properties": {
            "eventType": _kind(),
            "filters": _nullable({"type": "array", "maxItems": conditions.MAX_FILTERS, "items": _filter()}),
            "match": {"enum": ["all", "any"], "default": "all"},
        },
    }
    value = _text(200, min_length=1)
    allowed = {"anyOf": [value, {"type": "array", "minItems": 1, "items": value}],
               "description": '"all", a value, or a list of values'}
    schedule = {
        "type": "object", "additionalProperties": False,
        "properties": {
            "active": {"type": "boolean", "default": True},
            "timeZone": {"anyOf": [{"$ref": REF.format(name="TimeZone")}, {"type": "null"},
                                   {"type": "string", "maxLength": 0}], "default": "UTC"},
            "startDate": _nullable({"anyOf": [DAY, TIME_STRING]}),
            "endDate": _nullable({"anyOf": [DAY, TIME_STRING]}),
        },
        "description": "a date is the whole day in timeZone (an end date includes it); endDate after startDate",
    }
    body: Schema = {
        "type": "object", "additionalProperties": False,
        "properties": {
            "name": _kind(),
            "description": _nullable(_text(2000)),
            "triggerType": _nullable(_kind()),
            "type": ANY,  # read only without triggerType (below)
            "conditions": conditions_schema,
            "actions": _actions(),
            "personalization": _nullable({
                "type": "object", "additionalProperties": False,
                "properties": {key: allowed for key in definition.PERSONALIZATION_KEYS},
            }),
            "schedule": _nullable(schedule),
            "cooldownSeconds": _nullable({"type": "integer", "minimum": 1, "maximum": definition.MAX_COOLDOWN_S}),
            "urgency": _nullable({"enum": list(definition.URGENCIES)}),
            "status": {"enum": list(definition.STATUSES),
                       "description": "a gated trigger (pending_approval, rejected) refuses any status: 409"},
            "requiresApproval": {"type": "boolean", "default": False},
            "impact": _nullable(_impact()),
        },
        # triggerType, when the key is there, is the type (null: the event type) and type is not read
        "if": {"required": ["triggerType"]},
        "else": {"properties": {"type": _nullable(_kind())}},
    }
    if update:
        body["description"] = "the keys given replace the stored ones; the result must be a valid trigger"
    else:
        body["required"] = ["name", "conditions", "actions"]
    return body


# what str.strip() removes (str.isspace), spelled out: a pattern's \s is read as ECMA-262's, which
# leaves out \x1c-\x1f and adds \ufeff
SPACE: Final = r"\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"


def _stripped(limit: int = 200) -> Schema:
    """A string of 1 to ``limit`` characters that is not all white space (the validator strip()s it)."""
    return {"type": "string", "minLength": 1, "maxLength": limit, "pattern": f"[^{SPACE}]"}


def _impact() -> Schema:
    """The seed's impact object (actors/automation/approval.py parse_impact): the approval gate's input."""
    count = _nullable({"type": "integer", "minimum": 0})
    return {
        "type": "object", "additionalProperties": False,
        "properties": {"expectedUsers": count, "expectedReach": count, "revenueImpact": _nullable(NUM),
                       "riskLevel": _nullable({"enum": list(approval.RISK_LEVELS)})},
        "description": (f"a high or critical riskLevel, or expectedUsers (else expectedReach) over the project's "
                        f"threshold (default {approval.DEFAULT_REACH_THRESHOLD}), holds it pending_approval"),
    }


# what a create (or change) answer says of the approval that holds it
APPROVAL_HELD: Final[Schema] = _obj("approvalId", "status", "reason", approvalId=STR, status={"const": "pending"},
                                    reason=STR)


def _upto(bound: int, digits: int) -> str:
    """A regex for the whole numbers 0..bound written with 1 to ``digits`` digits (leading zeros too)."""
    top = str(bound)
    alternatives = []
    for length in range(1, len(top) + 1):
        zeros = f"0{{0,{digits - length}}}"
        if length < len(top):
            body = "[0-9]" if length == 1 else f"[1-9][0-9]{{{length - 1}}}"
            alternatives.append(zeros + body)
            continue
        parts = []  # the numbers of len(top) digits up to bound
        for i, d in enumerate(top):
            low = 1 if i == 0 else 0
            if int(d) > low:
                rest = len(top) - i - 1
                parts.append(top[:i] + f"[{low}-{int(d) - 1}]" + (f"[0-9]{{{rest}}}" if rest else ""))
        parts.append(top)
        alternatives.append(zeros + "(" + "|".join(parts) + ")")
    return "(" + "|".join(alternatives) + ")"


def _delay() -> Schema:
    days = workflows.MAX_DELAY_MS // 86_400_000
    units = {"s": days * 86_400, "m": days * 1_440, "h": days * 24, "d": days}
    alternatives = "|".join(f"{_upto(limit, 9)}{unit}" for unit, limit in units.items())
    return {"type": "string", "pattern": rf"^[{SPACE}]*({alternatives})[{SPACE}]*$", "default": "0s",
            "description": f'after the firing: a whole number and a unit s, m, h or d ("90s", "2h"), at most {days} days'}


def _condition_map() -> Schema:
    """A workflow trigger's conditions (actors/automation/conditions.py compile_condition_map): field ->
    a value (equals) or {operator: value} (all must hold); every field must hold."""
    number = {"type": "number"}
    string = _text(conditions.MAX_TEXT)
    scalar = {"anyOf": [{"type": "string"}, number, BOOL, {"type": "null"}]}

    def listed(item: Schema) -> Schema:
        return {"type": "array", "minItems": 1, "maxItems": conditions.MAX_IN_VALUES, "items": item}

    def operators(value: Schema, ordered: bool, contains: Schema | None) -> Schema:
        props: Schema = {"equals": value, "not_equals": value, "in": listed(value)}
        if ordered:
            props.update({op: number for op in ("min", "max", "greater_than", "less_than")})
        if contains is not None:
            props["contains"] = contains
        return {"type": "object", "minProperties": 1, "additionalProperties": False, "properties": props}

    typed = {
        conditions.NUMBER: {"anyOf": [number, operators(number, True, None)]},
        conditions.STRING: {"anyOf": [string, operators(string, False, string)]},
    }
    any_value = {"anyOf": [scalar, {**operators(scalar, True, scalar)}]}
    roots = "|".join(conditions.PATH_ROOTS)
    return {
        "type": "object", "minProperties": 1, "maxProperties": conditions.MAX_FILTERS,
        "properties": {name: typed[kind] for name, kind in conditions.FIELDS.items()},
        "patternProperties": {rf"^({roots})(\.[^.]+){{1,{conditions.MAX_PATH_DEPTH}}}$": any_value},
        "additionalProperties": False,
        "description": ('{"engagementScore": {"min": 0.8}, "deviceType": "mobile", "eventData.plan": "pro"}: '
                        "min and max are inclusive; a path into the event's payload takes any scalar"),
    }


def _workflow_body() -> Schema:
    trigger = {"type": "object", "required": ["type", "conditions"], "additionalProperties": False,
               "properties": {"type": {"enum": list(workflows.TRIGGER_TYPES)}, "conditions": _condition_map()}}
    action = {"type": "object", "required": ["type"], "additionalProperties": False,
              "properties": {"type": _stripped(), "delay": _delay(), "parameters": _nullable(OBJ)}}
    name = _stripped(100)
    optimization = {
        "type": "object", "additionalProperties": False,
        "properties": {"abTest": {"type": "boolean", "default": False}, "variants": ANY, "trafficSplit": ANY},
        # without abTest: true, variants and trafficSplit are not read
        "if": {"required": ["abTest"], "properties": {"abTest": {"const": True}}},
        "then": {"required": ["variants", "trafficSplit"], "properties": {
            "variants": {"type": "array", "minItems": 2, "maxItems": abtest.MAX_VARIANTS, "uniqueItems": True,
                         "items": name},
            "trafficSplit": {"type": "array", "minItems": 2, "maxItems": abtest.MAX_VARIANTS,
                             "items": {"type": "number", "minimum": 0, "maximum": 100}},
        }},
        "description": "abTest true: unique variant names, and one percentage per variant, summing to 100",
    }
    return {
        "type": "object", "required": ["workflowName", "triggers", "actions"], "additionalProperties": False,
        "properties": {
            "workflowName": _stripped(),
            "description": _nullable(_text(2000)),
            "triggers": {"type": "array", "minItems": 1, "maxItems": workflows.MAX_TRIGGERS, "items": trigger,
                         "description": "the workflow fires (once per session) when any of them holds"},
            "actions": {"type": "array", "minItems": 1, "maxItems": workflows.MAX_ACTIONS, "items": action},
            "optimization": _nullable(optimization),
            "status": {"enum": list(workflows.CREATE_STATUSES), "default": "active"},
            "requiresApproval": {"type": "boolean", "default": False},
            "impact": _nullable(_impact()),
        },
    }


def _workflow_paths() -> dict[str, Schema]:
    base = workflow_routes.BASE
    workflow_id = _path("workflowId", {"type": "string"})
    status = {"enum": list(workflows.STATUSES)}
    performance = _obj("triggerRate", "conversionRate", "roi", "engagement", "sessions",
                       triggerRate=_nullable(NUM), conversionRate=_nullable(NUM), roi={"type": "null"},
                       engagement=_nullable(NUM), sessions=OBJ, definitions=OBJ)
    workflow = _obj("workflowId", "workflowName", "description", "triggers", "actions", "status", "created", "updated",
                    workflowId=STR, workflowName=STR, description=STR, triggers=ARR, actions=ARR,
                    optimization=_nullable(OBJ), requiresApproval=BOOL, impact=OBJ, status=status,
                    approval=_nullable(OBJ), created=STR, updated=STR)
    one = {**workflow, "required": [*workflow["required"], "performance"],
           "properties": {**workflow["properties"], "performance": performance}}
    created = _obj("workflowId", "status", "created", "performance", workflowId=STR,
                   status={"enum": [*workflows.CREATE_STATUSES, "pending_approval"]}, created=STR,
                   performance=performance, optimization=OBJ, approvalId=STR, approval=APPROVAL_HELD)
    limit = _query("limit", {"type": "integer", "minimum": 1, "maximum": workflow_routes.MAX_EXECUTIONS,
                             "default": workflow_routes.DEFAULT_EXECUTIONS})
    return {
        base: {
            "post": _op(f"Create a workflow (seed 000); held pending_approval (with approvalId) when it needs "
                        f"approval; 409 past {workflow_routes.MAX_WORKFLOWS} workflows",
                        _json(created, "created"), status=201, errors=(400, 401, 403, 409, 413, 503),
                        body=_json_body(_workflow_body())),
            "get": _op("The project's workflows", _json(_obj("workflows", "total", total=INT,
                       workflows={"type": "array", "items": workflow})), errors=(401, 403, 503)),
        },
        f"{base}/{{workflowId}}": {
            "get": _op("A workflow, with its performance", _json(one), errors=AUTOMATION, params=[workflow_id]),
            "delete": _op("Delete a workflow, its scheduled actions and its marks",
                          _json(_obj("deleted", "workflowId", deleted={"const": True}, workflowId=STR)),
                          errors=AUTOMATION, params=[workflow_id]),
        },
        f"{base}/{{workflowId}}/executions": {"get": _op(
            "The workflow's scheduled and run actions, newest first",
            _json(_obj("workflowId", "status", "executions", "count", workflowId=STR, status=status, executions=ARR,
                       count=INT)),
            errors=AUTOMATION, params=[workflow_id, limit, _query("status", {"enum": list(ACTION_STATUSES)})],
        )},
    }


def _approval_paths() -> dict[str, Schema]:
    base = approval_routes.BASE
    approval_id = _path("approvalId", {"type": "string"})
    text = _nullable(_text(approval_routes.MAX_TEXT, no_nul=True))
    target_id = {"type": "string", "minLength": 1, "maxLength": approval_routes.MAX_ID}
    request_body = {
        "type": "object", "additionalProperties": False,
        "properties": {
            "requestType": {**_text(200, min_length=1, no_nul=True), "default": "behavioral_automation"},
            "description": text,
            "justification": text,
            "impact": _nullable(_impact()),
            "automation": {"type": "object", "description": f"at most {approval_routes.MAX_AUTOMATION_BYTES} bytes of JSON"},
            "triggerId": target_id,
            "workflowId": target_id,
        },
        "not": {"required": ["triggerId", "workflowId"]},
        "description": "triggerId or workflowId (not both) puts that trigger or workflow on hold now (404 if "
                       "there is none; 409 if the trigger waits for an approval already)",
    }
    priority = {"enum": ["low", "medium", "high"]}
    target = _obj("kind", "id", kind={"enum": ["trigger", "workflow"]}, id=STR, status=_nullable(STR))
    view = _obj("approvalId", "status", "decision", "conditions", "approver", "approvalDate", "requested", "reason",
                approvalId=STR, status={"enum": ["pending", "approved", "rejected"]},
                decision=_nullable({"enum": list(approval.DECISIONS)}), conditions={"type": "array", "items": STR},
                approver=_nullable(STR), approvalDate=_nullable(STR), requested=STR, reason=STR,
                requestType=_nullable(STR), description=_nullable(STR), impact=_nullable(OBJ),
                automation=_nullable(OBJ), justification=_nullable(STR), priority=_nullable(priority))
    detail = {**view, "required": [*view["required"], "target"],
              "properties": {**view["properties"], "target": _nullable(OBJ), "heldBack": OBJ}}
    limit = r"([1-9][0-9]{0,5}|1000000)"  # 1 to approval.MAX_LIMIT, no leading zero
    hours = r"([1-9][0-9]{0,2}|[1-7][0-9]{3}|8[0-6][0-9]{2}|87[0-7][0-9]|878[0-4])"  # 1 to approval.MAX_EXPIRY_H
    condition = {"type": "string", "pattern": (
        rf"^(limit_to_{limit}_users_per_hour|limit_to_{limit}_sessions_per_day"
        rf"|only_device_[a-z][a-z0-9_-]{{0,39}}|expires_after_{hours}h)$")}
    decision_body = {
        "type": "object", "required": ["decision", "approver"], "additionalProperties": False,
        "properties": {
            "decision": {"enum": list(approval.DECISIONS)},
            "approver": _stripped(),
            "conditions": _nullable({"type": "array", "maxItems": 0}),
        },
        "if": {"properties": {"decision": {"const": "approved_with_conditions"}}},
        "then": {"required": ["conditions"], "properties": {"conditions": {
            "type": "array", "minItems": 1, "maxItems": approval.MAX_CONDITIONS, "items": condition}}},
        "description": ("approved_with_conditions takes 1 to 10 conditions, at most one of each kind: "
                        + ", ".join(approval.GRAMMAR) + "; the other decisions none"),
    }
    settings = _obj("projectId", "expectedReachThreshold", "isDefault", "defaultThreshold", "gatedStatuses",
                    projectId=STR, expectedReachThreshold=INT, isDefault=BOOL, defaultThreshold=INT,
                    gatedStatuses={"type": "array", "items": STR})
    threshold = _obj("expectedReachThreshold",
                     expectedReachThreshold={"type": "integer", "minimum": 0, "maximum": approval.MAX_REACH_THRESHOLD})
    threshold["additionalProperties"] = False
    body_errors = (400, 401, 403, 404, 409, 413, 503)
    return {
        f"{base}/approval": {"post": _op(
            "Request an approval (seed HITL)",
            _json(_obj("approvalId", "status", "estimatedResponse", "reviewers", "priority", approvalId=STR,
                       status={"const": "pending"}, estimatedResponse=_nullable(STR),
                       reviewers={"type": "array", "items": STR}, priority=priority, target=target), "created"),
            status=201, errors=body_errors, body=_json_body(request_body),
        )},
        f"{base}/approval/{{approvalId}}": {"get": _op(
            "An approval: its request, decision, target and the firings its conditions held back",
            _json(detail), errors=AUTOMATION, params=[approval_id],
        )},
        f"{base}/approval/{{approvalId}}/decision": {"post": _op(
            "Decide an approval and apply it to its trigger or workflow (409: decided already)",
            _json({**view, "required": [*view["required"], "target"],
                   "properties": {**view["properties"], "target": _nullable(OBJ)}}),
            errors=body_errors, params=[approval_id], body=_json_body(decision_body),
        )},
        f"{base}/approvals": {"get": _op(
            "The project's approvals, newest first",
            _json(_obj("approvals", "count", approvals={"type": "array", "items": view}, count=INT)), errors=READ,
            params=[_query("limit", {"type": "integer", "minimum": 1, "maximum": approval_routes.MAX_LIST,
                                     "default": approval_routes.DEFAULT_LIST})],
        )},
        f"{base}/settings": {
            "get": _op("The project's approval settings", _json(settings), errors=(401, 403, 503)),
            "put": _op("Set the expected reach above which a trigger or workflow needs approval", _json(settings),
                       errors=(400, 401, 403, 413, 503), body=_json_body(threshold)),
        },
    }


def _consent_paths() -> dict[str, Schema]:
    """POST/GET /api/v1/behavioral/consent (server/privacy/consent_routes.py, docs/privacy.md)."""
    base = consent_routes.BASE
    text = _nullable(_text(consent_routes.MAX_TEXT, min_length=1, no_nul=True))
    granular = {
        "type": "object", "additionalProperties": False,
        "properties": {name: BOOL for name in CATEGORIES},
        "description": "with consentStatus granted: the categories set true are granted, the others not; "
                       "denied or withdrawn grant nothing whatever this says",
    }
    body = {
        "type": "object", "required": ["userId", "consentStatus"], "additionalProperties": False,
        "properties": {
            "userId": _text(consent_routes.MAX_ID, min_length=1, no_nul=True),
            "consentStatus": {"enum": list(CONSENT_STATUSES)},
            "consentType": text,
            "consentSource": text,
            "consentDate": _nullable({**TIME_STRING, "description": "ISO 8601; default: when it is received"}),
            "granularConsent": _nullable(granular),
        },
    }
    effective = _obj(*CATEGORIES, **{name: BOOL for name in CATEGORIES})
    effective["additionalProperties"] = False
    answer = _obj("consentId", "userId", "consentStatus", "granularConsent", "consentDate", "recordedAt",
                  consentId=STR, userId=STR, consentStatus={"enum": list(CONSENT_STATUSES)}, granularConsent=effective,
                  consentDate=STR, recordedAt=STR)
    change = _obj("consentId", "consentStatus", "granularConsent", "consentType", "consentSource", "consentDate",
                  "recordedAt", consentId=STR, consentStatus={"enum": list(CONSENT_STATUSES)}, granularConsent=effective,
                  consentType=_nullable(STR), consentSource=_nullable(STR), consentDate=STR, recordedAt=STR)
    view = _obj("userId", "source", "consentStatus", "granularConsent", "consentId", "consentType", "consentSource",
                "consentDate", "recordedAt", "auditTrail", userId=STR, source={"enum": ["record", "project_default"]},
                consentStatus={"enum": list(CONSENT_STATUSES)}, granularConsent=effective, consentId=_nullable(STR),
                consentType=_nullable(STR), consentSource=_nullable(STR), consentDate=_nullable(STR),
                recordedAt=_nullable(STR), auditTrail={"type": "array", "items": change})
    return {
        base: {"post": _op(
            "Record a user's consent (seed 000); any key of the project. It gates that user's events at once",
            _json(answer, "recorded"), status=201, errors=(400, 401, 413, 503), body=_json_body(body),
        )},
        f"{base}/{{userId}}": {"get": _op(
            "A user's effective consent (its newest record, or the project default) and its audit trail, newest first",
            _json(view), errors=READ,
            params=[_path("userId", {"type": "string", "minLength": 1, "maxLength": consent_routes.MAX_ID}),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": consent_routes.MAX_TRAIL,
                                     "default": consent_routes.DEFAULT_TRAIL})],
        )},
    }


def _integration_paths() -> dict[str, Schema]:
    base = "/api/v1/behavioral/integration"
    health = {"enum": ["healthy", "degraded", "unhealthy"]}
    sync_body = {
        "type": "object", "additionalProperties": False,
        "properties": {
            "systems": _nullable({"type": "array", "minItems": 1, "items": STR,
                                  "description": "webhook ids of this project (enabled ones); default: every enabled one"}),
            "syncType": {"const": "incremental", "default": "incremental"},
            "dataTypes": {"type": "array", "minItems": 1, "items": {"enum": list(integrations.KNOWN_TYPES)},
                          "contains": {"const": "behavioral_events"}, "default": list(integrations.EXPORTED_TYPES)},
        },
        "description": "an unknown or disabled webhook in systems is a 400 naming it",
    }
    return {
        f"{base}/status": {"get": _op(
            "Every connector with its status, lastSync and health, and the data consistency of the deliveries",
            _json(_obj("integrations", "overallHealth", "dataConsistency", "dataConsistencyBasis", "checkedAt",
                       integrations=OBJ, overallHealth=health, dataConsistency=_nullable(NUM),
                       dataConsistencyBasis=OBJ, checkedAt=STR)),
            errors=(401, 403, 503),
        )},
        f"{base}/sync": {"post": _op(
            "Send each receiver the events since its last sync, as sync_batch deliveries",
            _json(_obj("syncId", "syncType", "status", "receivers", "eventsSent", "deliveries", "skipped",
                       "startedAt", "finishedAt", syncId=STR, syncType={"const": "incremental"},
                       status={"enum": ["completed", "partial"]}, receivers=ARR, eventsSent=INT, deliveries=INT,
                       skipped=ARR, startedAt=STR, finishedAt=STR)),
            errors=(400, 401, 403, 413, 503), body=_json_body(sync_body, required=False),
        )},
    }


def _trigger_paths() -> dict[str, Schema]:
    base = "/api/v1/behavioral/triggers"
    trigger_id = _path("triggerId", {"type": "string"})
    status = {"enum": ["active", "paused", "expired", *definition.GATED_STATUSES]}
    trigger = _obj("triggerId", "name", "type", "conditions", "actions", "status", "created", "updated",
                   triggerId=STR, name=STR, description=STR, type=STR, conditions=OBJ, actions=ARR,
                   personalization=OBJ, schedule=OBJ, cooldownSeconds=_nullable(INT), urgency=STR, status=status,
                   created=STR, updated=STR, abTest=_nullable(OBJ), requiresApproval=BOOL, impact=_nullable(OBJ),
                   approval=_nullable(OBJ), approvalId=STR)
    held = {"approvalId": STR, "approval": APPROVAL_HELD}
    stats = _obj("triggerRate", "conversionRate", "engagement", "sessions",
                 triggerRate=_nullable(NUM), conversionRate=_nullable(NUM), engagement=_nullable(NUM), sessions=OBJ,
                 definitions=OBJ, note=STR, abTest=OBJ)
    body_errors = (400, 401, 403, 404, 413, 503)
    variant = {"anyOf": [
        _kind(100),
        {"type": "object", "required": ["name"], "additionalProperties": False,
         "properties": {"name": _kind(100), "actions": _nullable(_actions())}},
    ]}
    ab_body = _obj("variants", "trafficSplit",
                   variants={"type": "array", "minItems": 2, "maxItems": abtest.MAX_VARIANTS, "items": variant},
                   trafficSplit={"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 100}})
    ab_body.update(additionalProperties=False, description=(
        "a variant is a name (the trigger's own actions; control fires nothing) or {name, actions}; names "
        "unique; trafficSplit: one percentage per variant, summing to 100"))
    test_body = _obj(context=OBJ, sessionId=_nullable({"type": "string", "minLength": 1}),
                     timestamp={"type": "integer", "minimum": 0, "maximum": trigger_routes.MAX_TIME_MS})
    test_body["description"] = ("{context: {eventType, eventData, <field>: ...}, sessionId?, timestamp? (unix ms)}; "
                                "without context the body itself is the context")
    ident = _text(trigger_routes.MAX_ID, min_length=1, no_nul=True)
    execute_body = _obj("sessionId", sessionId=ident, userId=_nullable(_text(trigger_routes.MAX_ID, no_nul=True)),
                        context=_nullable(OBJ),
                        override=_nullable(_obj(personalization=_nullable(OBJ))))
    execute_body["additionalProperties"] = False
    return {
        base: {
            "post": _op("Create a trigger (seed 000); held pending_approval (with approvalId) when it needs approval",
                        _json(_obj("triggerId", "status", "created", "performance",
                                   triggerId=STR, status=status, created=STR, performance=stats, **held), "created"),
                        status=201, errors=(400, 401, 403, 409, 413, 503),
                        body=_json_body(_trigger_body(update=False))),
            "get": _op("The project's triggers", _json(_obj("triggers", "total", triggers={"type": "array", "items": trigger},
                       total=INT)), errors=(401, 403, 503)),
        },
        f"{base}/{{triggerId}}": {
            "get": _op("A trigger", _json(trigger), errors=AUTOMATION, params=[trigger_id]),
            "put": _op("Change a trigger (409: a gated trigger's status; a new impact or requiresApproval asks "
                       "for approval again)", _json(trigger), errors=(400, 401, 403, 404, 409, 413, 503),
                       params=[trigger_id],
                       body=_json_body(_trigger_body(update=True))),
            "delete": _op("Delete a trigger and everything recorded about it",
                          _json(_obj("triggerId", "deleted", triggerId=STR, deleted={"const": True})),
                          errors=AUTOMATION, params=[trigger_id]),
        },
        f"{base}/{{triggerId}}/test": {"post": _op(
            "Would the trigger fire for this context, and why (records nothing)",
            _json(_obj("triggerId", "wouldFire", "variant", "reasons", triggerId=STR, wouldFire=BOOL,
                       variant=_nullable(STR), reasons=OBJ, note=STR)),
            errors=body_errors, params=[trigger_id], body=_json_body(test_body),
        )},
        f"{base}/{{triggerId}}/execute": {"post": _op(
            "Run the trigger's actions for a session now (seed 000)",
            _json(_obj("executionId", "triggered", "variant", "actions", "reasons", "tracking", executionId=STR,
                       triggered=BOOL, reason=STR, variant=_nullable(STR), actions=ARR, reasons=ARR, tracking=OBJ)),
            errors=body_errors, params=[trigger_id], body=_json_body(execute_body),
        )},
        f"{base}/{{triggerId}}/monitor": {"get": _op(
            "The trigger's recent executions, newest first, with their reasons",
            _json(_obj("triggerId", "status", "executions", "count", triggerId=STR, status=status, executions=ARR,
                       count=INT)),
            errors=AUTOMATION, params=[trigger_id, _query("limit", {
                "type": "integer", "minimum": 1, "maximum": trigger_routes.MAX_MONITOR,
                "default": trigger_routes.DEFAULT_MONITOR})],
        )},
        f"{base}/{{triggerId}}/performance": {"get": _op(
            "triggerRate, conversionRate, engagement (and per A/B variant, with significance)",
            _json({**stats, "required": ["triggerId", "status", *stats["required"]],
                   "properties": {"triggerId": STR, "status": status, **stats["properties"]}}),
            errors=AUTOMATION, params=[trigger_id],
        )},
        f"{base}/{{triggerId}}/ab-test": {"post": _op(
            "Start an A/B test over the trigger's actions (replaces a running one)",
            _json(_obj("triggerId", "testId", "status", "variants", "trafficSplit", "replacedTestId", "created",
                       triggerId=STR, testId=STR, status={"const": "running"}, variants=ARR,
                       trafficSplit={"type": "array", "items": NUM}, replacedTestId=_nullable(STR), assignment=STR,
                       created=STR), "created"),
            status=201, errors=body_errors, params=[trigger_id], body=_json_body(ab_body),
        )},
        f"{base}/{{triggerId}}/optimize": {"post": _op(
            "Move the A/B test's traffic toward the likely best variant (Thompson sampling); 409 without a test",
            _json(_obj("triggerId", "testId", "variants", "previousSplit", "newSplit", "changed", "reason",
                       triggerId=STR, testId=STR, method=STR, variants=ARR, previousSplit=ARR, newSplit=ARR,
                       changed=BOOL, reason=STR)),
            errors=(401, 403, 404, 409, 503), params=[trigger_id],
        )},
    }


def _webhook_paths() -> dict[str, Schema]:
    base = "/api/v1/behavioral/webhooks"
    webhook_id = _path("webhookId", {"type": "string"})
    webhook = _obj("id", "url", "events", "createdAt", "status", "disabledReason", id=STR, url=STR,
                   events={"type": "array", "items": STR}, createdAt=INT, status={"enum": ["active", "disabled"]},
                   disabledReason=_nullable(STR))
    created = {**webhook, "required": [*webhook["required"], "secret", "secretGenerated"],
               "properties": {**webhook["properties"], "secret": STR, "secretGenerated": BOOL}}
    registration = _obj(
        "url", "events",
        url={"type": "string", "maxLength": webhook_routes.MAX_URL, "pattern": WEBHOOK_URL},
        events={"type": "array", "minItems": 1, "maxItems": webhook_routes.MAX_EVENTS,
                "items": {"type": "string", "minLength": 1, "maxLength": webhook_routes.MAX_EVENT_NAME,
                          "pattern": NOT_BLANK_NO_NUL},
                "description": "trigger_fired, workflow_action, or event types"},
        secret=_nullable({"type": "string", "pattern": WEBHOOK_SECRET,
                          "description": "whsec_ + base64 of 24 to 64 bytes; generated when absent"}),
    )
    registration["additionalProperties"] = False
    delivery = _obj("id", "type", "status", "attempts", "createdAt", "payload", id=STR, type=STR,
                    dedupKey=_nullable(STR), status={"enum": list(STATUSES)}, attempts=INT, createdAt=INT,
                    nextAttemptAt=_nullable(INT), lastError=_nullable(STR), lastStatus=_nullable(INT),
                    finishedAt=_nullable(INT), payload=ANY)
    listing = _json(_obj("success", "webhookId", "status", "deliveries", success={"const": True}, webhookId=STR,
                         status={"enum": list(STATUSES)}, deliveries={"type": "array", "items": delivery}))
    limit = _query("limit", {"anyOf": [
        {"type": "integer", "minimum": 1, "maximum": webhook_routes.MAX_LIST},
        {"type": "string", "maxLength": 0}]}, f"newest first; default {webhook_routes.DEFAULT_LIST}")
    replay = _obj(deliveryId=_nullable({"type": "string", "minLength": 1}))
    replay.update(additionalProperties=False, description="{deliveryId} replays that dead letter; no body (or {}) all")
    return {
        base: {
            "post": _op("Register a webhook; the answer is the only one that shows its secret",
                        _json(_obj("success", "webhook", success={"const": True}, webhook=created), "created"),
                        status=201, errors=(400, 401, 403, 409, 413, 503), body=_json_body(registration)),
            "get": _op("The project's webhooks (no secrets)",
                       _json(_obj("success", "webhooks", success={"const": True},
                                  webhooks={"type": "array", "items": webhook})),
                       errors=(401, 403, 503)),
        },
        f"{base}/{{webhookId}}": {"delete": _op(
            "Remove a webhook and its queued deliveries",
            _json(_obj("success", "deleted", success={"const": True}, deleted=STR)), errors=AUTOMATION,
            params=[webhook_id],
        )},
        f"{base}/{{webhookId}}/deliveries": {"get": _op(
            "A webhook's deliveries in one status, newest first", listing, errors=AUTOMATION,
            params=[webhook_id, _query("status", _choice(STATUSES, DEAD)), limit],
        )},
        f"{base}/{{webhookId}}/dead-letters": {"get": _op(
            "A webhook's dead letters, newest first", listing, errors=AUTOMATION, params=[webhook_id, limit],
        )},
        f"{base}/{{webhookId}}/dead-letters/replay": {"post": _op(
            "Queue dead letters again (409 when the webhook is disabled or the delivery is not dead)",
            _json(_obj("success", "webhookId", "replayed", success={"const": True}, webhookId=STR, replayed=INT)),
            errors=(400, 401, 403, 404, 409, 413, 503), params=[webhook_id], body=_json_body(replay, required=False),
        )},
    }


def _identity_paths() -> dict[str, Schema]:
    """Cross-device identity (seed 000; server/identity_routes.py, actors/identity/)."""
    base = identity_routes.BASE
    ident = _text(identity_routes.MAX_ID, min_length=1, no_nul=True)
    link_body = _obj(
        "primarySessionId", "secondarySessionId",
        primarySessionId=ident, secondarySessionId=ident,
        linkingMethod=_nullable(_text(identity_routes.MAX_METHOD, min_length=1, no_nul=True)),
        confidence=_nullable({"type": "number", "minimum": 0, "maximum": 1}),
        evidence=_nullable({"type": "array", "maxItems": identity_routes.MAX_EVIDENCE,
                            "items": _text(identity_routes.MAX_EVIDENCE_TEXT, min_length=1, no_nul=True)}),
    )
    link_body.update(additionalProperties=False, description=(
        "two sessions of this project with events (400 names an unknown one), different from each other (400); "
        "409 when a merge guard refuses: two identified users, an anonymous device already linked to another "
        "user, or a user past its linked sessions or devices"))
    figure = _nullable({"type": "number", "minimum": 0, "maximum": 1})
    linked = _obj(
        "linkingId", "linked", "continuity", "unifiedProfile", linkingId=STR, linked={"const": True},
        continuity=_obj("behaviorContinuity", "intentContinuity", "contextualContinuity",
                        behaviorContinuity=figure, intentContinuity=figure, contextualContinuity=figure),
        unifiedProfile=_obj("primaryDevice", "secondaryDevice", "behaviorPattern", "conversionStage",
                            primaryDevice=STR, secondaryDevice=STR, behaviorPattern=STR,
                            conversionStage={"enum": list(identity_continuity.STAGES)}),
        basedOn=OBJ, userId=_nullable(STR), created=BOOL, linkingMethod=STR, linkedAt=STR,
    )
    unlinked = _obj("linkingId", "unlinked", "primarySessionId", "secondarySessionId", "userId", "detachedSessions",
                    linkingId=STR, unlinked={"const": True}, primarySessionId=STR, secondarySessionId=STR,
                    linkingMethod=STR, linkedAt=STR, userId=_nullable(STR),
                    detachedSessions={"type": "array", "items": STR})
    state = _obj("page", "engagement", "intent", page=_nullable(STR), engagement=_nullable(NUM), intent=_nullable(NUM))
    device = _obj("deviceId", "deviceType", "lastActivity", "currentState", deviceId=STR, deviceType=STR,
                  lastActivity=_nullable(STR), currentState=state, sessions={"type": "array", "items": STR},
                  linked=BOOL, live=BOOL)
    conflict = _obj("type", "sessionId", "reason", type=STR, sessionId=STR, userId=STR, linked=BOOL, reason=STR)
    sync = _obj(
        "userId", "devices", "synchronization", userId=STR, devices={"type": "array", "items": device},
        synchronization=_obj("lastSync", "syncStatus", "conflicts", lastSync=_nullable(STR),
                             syncStatus={"enum": ["current", "partial", "stale"]},
                             conflicts={"type": "array", "items": conflict}, sessionsRead=INT,
                             sessionsUnavailable=INT),
    )
    return {
        f"{base}/link": {"post": _op(
            "Link two sessions as one person's devices (seed 000); the same pair again answers its link (200)",
            _json(linked, "linked now"), status=201, more={"200": _json(linked, "linked already: the existing link")},
            errors=(400, 401, 403, 404, 409, 413, 503), body=_json_body(link_body),
        )},
        f"{base}/link/{{linkingId}}": {"delete": _op(
            "Undo a link: the sessions it joined to a user stop being the user's",
            _json(unlinked), errors=(401, 403, 404, 503), params=[_path("linkingId", {"type": "string"})],
        )},
        f"{base}/sync/{{userId}}": {"get": _op(
            "Every device of the user (its own sessions and linked ones) with its live state (seed 000)",
            _json(sync), errors=(401, 403, 404, 503), params=[_path("userId", {"type": "string"})],
        )},
    }


@cache
def document() -> bytes:
    answers = [
        tracking.TrackEventResponse, tracking.BatchTrackEventResponse, tracking.EventsQueryResponse,
        tracking.ServicesResponse, tracking.EventStatistics, tracking.SuggestionsResponse,
        behavioral.BehavioralIngestResponse, behavioral.BehavioralBatchResponse, anomaly.AnomaliesResponse,
        privacy_ingest.PrivacyIngestResponse,
        anomaly.AnomalyMessage, SessionView, UserView, SegmentAnswer, PostHogAnswer,
    ]
    _, components = msgspec.json.schema_components(answers, ref_template=REF)
    components.update({
        "Error": ERROR,
        "AIEventPayload": _track_payload(),
        "BatchTrackEventRequest": _track_batch(),
        "BehavioralEvent": _behavioral_event(),
        "BehavioralBatch": _behavioral_batch(),
        "PrivacyCompliantEvent": _privacy_compliant_event(),
        "TimeZone": {"enum": sorted(zoneinfo.available_timezones()), "description": "an IANA time zone name"},
    })
    paths = {**_ingest_paths(), **_compat_paths(), **_stream_paths(), **_query_paths(), **_insight_paths(),
             **_operations_paths(), **_trigger_paths(), **_webhook_paths(),
             **_workflow_paths(), **_approval_paths(), **_integration_paths(), **_identity_paths(),
             **_consent_paths(), **_deletion_paths()}
    doc = {
        "openapi": "3.1.0",
        "info": {
            "title": "Pulse",
            "version": "0.1.0",
            "description": (
                "Real-time behavioral tracking. Keys: on a loopback bind a request without a key acts on the "
                "default project; otherwise send a project key as Authorization: Bearer, X-API-Key or ?key= "
                "(public pk_ keys write, secret sk_ keys read). Every path answers OPTIONS (CORS preflight) "
                "and an undeclared method with 405 and an Allow header. "
                "WebSockets: /api/events/ws and /api/v1/behavioral/stream: JSON text "
                "frames, or MessagePack binary frames with the subprotocol pulse.msgpack; one message per frame. "
                "With the query parameter batch=1 (or true) the server may send the messages waiting for a "
                "socket as one frame {\"type\":\"batch\",\"messages\":[...]} (a MessagePack map with the same "
                "keys), in order, at most 256 messages or about 1 MiB; a message alone is sent as it is, and "
                "acks and errors may be inside a batch too. Any other batch value (but 0/false) refuses the "
                "handshake with 400."
            ),
        },
        "paths": paths,
        "security": [{}, {"bearer": []}, {"apiKey": []}, {"keyQuery": []}],
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "keyQuery": {"type": "apiKey", "in": "query", "name": "key"},
            },
        },
    }
    return msgspec.json.encode(doc)


DOCS_HTML = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>Pulse API</title>
<style>body{font:14px/1.5 system-ui,sans-serif;margin:2rem;max-width:960px}code,pre{background:#f4f4f4;padding:2px 4px}
h2{margin-top:2rem;border-bottom:1px solid #ddd}.m{font-weight:bold;text-transform:uppercase;margin-right:.5rem}
details{margin:.5rem 0}pre{overflow:auto;padding:.5rem}</style></head>
<body><h1>Pulse API</h1><p>Generated from <a href="/openapi.json">/openapi.json</a>.</p><div id="ops"></div>
<script>
fetch('/openapi.json').then(r=>r.json()).then(doc=>{
  const root=document.getElementById('ops');
  for (const [path,ops] of Object.entries(doc.paths)) for (const [method,op] of Object.entries(ops)) {
    const d=document.createElement('details');
    const s=document.createElement('summary');
    s.innerHTML='<span class="m"></span><code></code> ';
    s.querySelector('.m').textContent=method; s.querySelector('code').textContent=path;
    s.append(op.summary||'');
    const pre=document.createElement('pre'); pre.textContent=JSON.stringify(op,null,2);
    d.append(s,pre); root.append(d);
  }
  const h=document.createElement('h2'); h.textContent='Schemas'; root.append(h);
  const pre=document.createElement('pre'); pre.textContent=JSON.stringify(doc.components.schemas,null,2); root.append(pre);
});
</script></body></html>"""
