"""WebSocket and SSE message families, as msgspec tagged unions (tag field ``type``).

Client -> server messages are decoded with one prebuilt Decoder per socket family; unknown types and
bad fields are answered with an ``error`` message naming the field, never by closing the socket.
Server -> client messages are encoded once per publish and the same bytes go to every subscriber.

Batched delivery (opt-in, WebSocket only). By default every server -> client message is one
WebSocket frame holding one message, as the seed clients expect. A client that adds ``?batch=1``
(or ``?batch=true``) to the WebSocket URL (``/api/events/ws`` or ``/api/v1/behavioral/stream``)
lets the server coalesce: when several messages wait in its queue at the moment the connection
writes, they go out as ONE frame, the envelope

    {"type":"batch","messages":[<message 1>,<message 2>,...]}

in queue order (a MessagePack map with the same two keys on ``pulse.msgpack`` sockets). Each
element is exactly the message that would otherwise have been a frame of its own. A message that
is alone in the queue is sent as it is, without an envelope, so a batching client must handle
both forms. A batch holds at most BATCH_MAX_MESSAGES messages and about BATCH_MAX_BYTES (a single
larger message goes alone). Acks, errors and other replies share the subscriber's queue with the
stream, so they may be inside a batch too, in their order. ``batch=0``/``false`` (or no parameter)
keeps one message per frame; any other value refuses the handshake with HTTP 400 naming ``batch``.
The envelope's ``type`` is "batch" in the server -> client direction only: a client's
``{"type":"batch","events":[...]}`` is still an ingest batch, answered with ``batch_ack``.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
from msgspec import Struct

from protocol.tracking import Ident

# WebSocket close codes (documented in README: "Streams")
CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001  # server shutting down: reconnect elsewhere / later
CLOSE_POLICY: Final = 1008  # authentication / authorization failure
CLOSE_TOO_BIG: Final = 1009
CLOSE_TRY_AGAIN: Final = 1013  # connection limit reached
CLOSE_NO_PONG: Final = 3001  # the client did not answer a ping in time
CLOSE_SLOW: Final = 3008  # the client could not keep up with its stream (Centrifugo's code)

SUBSCRIPTIONS: Final = ("behavioral_events", "engagement_metrics", "conversion_triggers")
SUBPROTOCOL_MSGPACK: Final = "pulse.msgpack"
SUBPROTOCOL_JSON: Final = "pulse.json"

# Batched delivery (see the module docstring)
BATCH_PARAM: Final = "batch"  # the WebSocket URL's query parameter that opts in
BATCH_MAX_MESSAGES: Final = 256  # messages in one batch frame at most
BATCH_MAX_BYTES: Final = 1024 * 1024  # encoded messages in one batch frame at most (a bigger one goes alone)
_JSON_BATCH_HEAD: Final = b'{"type":"batch","messages":['
_JSON_BATCH_TAIL: Final = b"]}"
# MessagePack: a map of 2 entries, "type": "batch", then the key "messages" (its array header follows)
_MSGPACK_BATCH_HEAD: Final = b"\x82\xa4type\xa5batch\xa8messages"


def batch_json(messages: list[bytes]) -> bytes:
    """The JSON batch envelope around already-encoded JSON messages (spliced, not re-encoded)."""
    return _JSON_BATCH_HEAD + b",".join(messages) + _JSON_BATCH_TAIL


def batch_msgpack(messages: list[bytes]) -> bytes:
    """The MessagePack batch envelope around already-encoded MessagePack messages."""
    count = len(messages)
    if count < 16:
        header = bytes((0x90 | count,))  # fixarray
    elif count < 0x10000:
        header = b"\xdc" + count.to_bytes(2, "big")  # array 16
    else:
        header = b"\xdd" + count.to_bytes(4, "big")  # array 32
    return _MSGPACK_BATCH_HEAD + header + b"".join(messages)


# -- seed 000: /api/v1/behavioral/stream ------------------------------------------------------------


class Connection(Struct, tag="connection", tag_field="type", kw_only=True):
    sessionId: Ident | None = None
    userId: Ident | None = None
    subscriptions: list[str] | None = None  # default: all of SUBSCRIPTIONS


class Subscribe(Struct, tag="subscribe", tag_field="type", kw_only=True):
    subscriptions: list[str]


class Unsubscribe(Struct, tag="unsubscribe", tag_field="type", kw_only=True):
    subscriptions: list[str]


class SendEvent(Struct, tag="event", tag_field="type", kw_only=True):
    event: msgspec.Raw  # a BehavioralEvent, decoded and validated like POST /api/v1/behavioral/events
    requestId: str | None = None


class SendBatch(Struct, tag="batch", tag_field="type", kw_only=True):
    events: list[msgspec.Raw]
    requestId: str | None = None
    sentAt: float | str | None = None


class Ping(Struct, tag="ping", tag_field="type", kw_only=True):
    requestId: str | None = None


BehavioralClientMessage = Connection | Subscribe | Unsubscribe | SendEvent | SendBatch | Ping


# -- seed 004: /api/events/ws -----------------------------------------------------------------------


class Filter(Struct, tag="filter", tag_field="type", kw_only=True):
    """Narrow the stream: only events matching every given field. All None = everything."""

    serviceName: Ident | None = None
    eventName: Ident | None = None
    userId: Ident | None = None


class Track(Struct, tag="track", tag_field="type", kw_only=True):
    eventName: str
    payload: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    requestId: str | None = None


class TrackBatch(Struct, tag="batch", tag_field="type", kw_only=True):
    events: list[msgspec.Raw]
    batchId: str | None = None
    requestId: str | None = None


TrackingClientMessage = Filter | Track | TrackBatch | Ping


# -- server -> client -------------------------------------------------------------------------------


class Ack(Struct, tag="ack", tag_field="type", kw_only=True):
    """The answer to an event sent over a socket: the same facts an HTTP ingest answer carries."""

    requestId: str | None = None
    eventId: str | None = None
    processed: bool = True
    duplicate: bool = False
    processingTime: float = 0.0
    triggers: list[Any] = []


class BatchAck(Struct, tag="batch_ack", tag_field="type", kw_only=True):
    requestId: str | None = None
    processed: int = 0
    stored: int = 0
    duplicates: int = 0
    results: list[Any] = []
    rejected: list[Any] = []
    processingTime: float = 0.0
    triggers: list[Any] = []  # what the batch's events fired, as in the HTTP batch answer


class ErrorMessage(Struct, tag="error", tag_field="type", kw_only=True, omit_defaults=True):
    requestId: str | None = None
    code: str = "invalid_message"
    field: str = "$"
    reason: str = ""
    retryAfter: float | None = None


class ConnectionAck(Struct, tag="connection_ack", tag_field="type", kw_only=True, omit_defaults=True):
    connectionId: str = ""
    sessionId: str | None = None
    userId: str | None = None
    subscriptions: list[str] = []
    protocol: str = "json"


class Pong(Struct, tag="pong", tag_field="type", kw_only=True, omit_defaults=True):
    requestId: str | None = None
    timestamp: int = 0
