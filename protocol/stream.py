"""WebSocket and SSE message families, as msgspec tagged unions (tag field ``type``).

Client -> server messages are decoded with one prebuilt Decoder per socket family; unknown types and
bad fields are answered with an ``error`` message naming the field, never by closing the socket.
Server -> client messages are encoded once per publish and the same bytes go to every subscriber.
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
