"""The hub: fans stream messages out to local subscribers (WebSocket and SSE connections).

A message is encoded once per wire format and the same bytes are offered to every matching
subscriber with ``send_nowait`` into the subscriber's bounded queue. A subscriber whose queue is full
is too slow: it is evicted (its queue closed, the connection then closes with CLOSE_SLOW) and
counted, so one slow client never delays a publisher or any other subscriber.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any, Final

import msgspec
import trio

from actors.metrics import Metrics

SUBSCRIBER_QUEUE: Final = 1024  # frames buffered per subscriber before it counts as slow

# Message kinds, and the subscription names (seed 000) that receive them
KIND_EVENT: Final = "event"  # seed 004 streams: {"type":"event","data":StoredEvent}
KIND_BEHAVIORAL: Final = "behavioral_event"
KIND_METRICS: Final = "session_metrics"
KIND_TRIGGER: Final = "trigger_notification"
KINDS_BY_SUBSCRIPTION: Final = {
    "behavioral_events": KIND_BEHAVIORAL,
    "engagement_metrics": KIND_METRICS,
    "conversion_triggers": KIND_TRIGGER,
}

_json = msgspec.json.Encoder()
_msgpack = msgspec.msgpack.Encoder()
_ids = itertools.count(1)


class Attrs(msgspec.Struct, frozen=True):
    """What a message is about; subscribers filter on these."""

    session_id: str | None = None
    user_id: str | None = None
    service_name: str | None = None
    event_name: str | None = None


class Frame(msgspec.Struct, frozen=True):
    """One encoded message as queued for a subscriber. ``seq`` is the event seq or 0; ``pos`` is
    its position in the cluster's stream ("<stream id>/<index>", "" on one node): the resume id."""

    seq: int
    data: bytes
    binary: bool
    pos: str = ""


class Subscriber:
    """One connection's view of the hub: what it wants, and its bounded queue of frames."""

    def __init__(
        self,
        project: str,
        kinds: Iterable[str],
        *,
        msgpack: bool = False,
        session_id: str | None = None,
        user_id: str | None = None,
        queue_size: int = SUBSCRIBER_QUEUE,
    ) -> None:
        self.id = next(_ids)
        self.project = project
        self.kinds = set(kinds)
        self.msgpack = msgpack
        self.session_id = session_id  # scope: only this session's messages
        self.user_id = user_id  # scope: only this user's messages
        self.service_name: str | None = None  # filters set later by the client (seed 004 "filter")
        self.event_name: str | None = None
        self.filter_user_id: str | None = None
        self.evicted = False
        self._send, self.frames = trio.open_memory_channel[Frame](queue_size)

    def matches(self, kind: str, attrs: Attrs) -> bool:
        if kind not in self.kinds:
            return False
        if self.session_id is not None and attrs.session_id != self.session_id:
            return False
        if self.user_id is not None and attrs.user_id != self.user_id:
            return False
        if self.service_name is not None and attrs.service_name != self.service_name:
            return False
        if self.event_name is not None and attrs.event_name != self.event_name:
            return False
        return self.filter_user_id is None or attrs.user_id == self.filter_user_id

    def offer(self, frame: Frame) -> bool:
        """Queue without waiting; False (and evicted) when the queue is full or closed."""
        if self.evicted:
            return False
        try:
            self._send.send_nowait(frame)
        except trio.WouldBlock:
            self.evict()
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False  # closed (the connection is ending): not a slow client
        return True

    def evict(self) -> None:
        self.evicted = True
        self._send.close()

    def close(self) -> None:
        self._send.close()


class Hub:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._by_project: dict[str, set[Subscriber]] = {}

    def subscribe(self, sub: Subscriber) -> None:
        self._by_project.setdefault(sub.project, set()).add(sub)

    def unsubscribe(self, sub: Subscriber) -> None:
        subs = self._by_project.get(sub.project)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._by_project[sub.project]
        sub.close()

    def subscriber_count(self) -> int:
        return sum(len(subs) for subs in self._by_project.values())

    def has_subscribers(self, project: str) -> bool:
        return project in self._by_project

    def publish(self, project: str, kind: str, attrs: Attrs, body: Any, *, seq: int = 0, pos: str = "") -> int:
        """Offer ``body`` to every matching subscriber of ``project``; returns how many took it."""
        subs = self._by_project.get(project)
        if not subs:
            return 0
        encoded: dict[bool, Frame] = {}
        delivered = 0
        for sub in list(subs):
            if not sub.matches(kind, attrs):
                continue
            frame = encoded.get(sub.msgpack)
            if frame is None:
                try:
                    frame = encoded[sub.msgpack] = encode_for(sub, body, seq, pos)
                except (TypeError, ValueError, OverflowError):
                    # e.g. an integer beyond 64 bits has no MessagePack form: skip, count, go on
                    self.metrics.drops["unencodable_message"] += 1
                    continue
            if sub.offer(frame):
                delivered += 1
            elif sub.evicted:
                self.metrics.drops["slow_subscriber"] += 1
                subs.discard(sub)
        return delivered

    def close_all(self) -> None:
        for subs in list(self._by_project.values()):
            for sub in list(subs):
                sub.close()
        self._by_project.clear()


def encode_for(sub: Subscriber, body: Any, seq: int = 0, pos: str = "") -> Frame:
    """Encode a message for one subscriber in its wire format.

    Stored payloads are kept as raw JSON (msgspec.Raw), which only a JSON encoder can splice in,
    so the MessagePack form is transcoded from the JSON form.
    """
    data = _json.encode(body)
    if sub.msgpack:
        return Frame(seq, _msgpack.encode(msgspec.json.decode(data)), True, pos)
    return Frame(seq, data, False, pos)
