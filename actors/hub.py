"""The hub: fans stream messages out to local subscribers (WebSocket and SSE connections).

A message is encoded once per wire format and the same bytes are offered to every matching
subscriber with ``send_nowait`` into the subscriber's bounded queue. A subscriber whose queue is full
is too slow: it is evicted (its queue closed, the connection then closes with CLOSE_SLOW) and
counted, so one slow client never delays a publisher or any other subscriber.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable
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
# Anomalies (actors/anomaly_watch.py) are about a whole service, so they reach project-wide
# subscribers of both stream families (never ones scoped to a session or user: a public key can
# only be scoped), whatever kinds or subscriptions they chose, as long as they receive something;
# a seed-004 serviceName filter applies, eventName and userId filters do not (see Subscriber.matches).
KIND_ANOMALY: Final = "anomaly"
KINDS_BY_SUBSCRIPTION: Final = {
    "behavioral_events": KIND_BEHAVIORAL,
    "engagement_metrics": KIND_METRICS,
    "conversion_triggers": KIND_TRIGGER,
}

_json = msgspec.json.Encoder()
_msgpack = msgspec.msgpack.Encoder()
_ids = itertools.count(1)
_UNENCODED: Final[Any] = object()


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


Published = tuple[str, Attrs, Any, int, str]  # a message to publish: kind, attrs, body, seq, pos


class FrameQueue:
    """A subscriber's bounded queue of frames, for one consumer task: the part of a trio memory
    channel that the hub and the connections use (``send_nowait`` and ``close`` on the hub's side;
    ``receive``, ``receive_nowait`` and ``async for`` on the connection's), with the same exceptions.
    A memory channel costs ~1.7 KiB per subscriber; this costs ~100 bytes while it is empty (its
    deque exists only while frames wait): ~150 MiB less at 100k idle sockets."""

    __slots__ = ("_frames", "_limit", "_closed", "_waiter")

    def __init__(self, limit: int) -> None:
        self._frames: deque[Frame] | None = None
        self._limit = limit
        self._closed = False
        self._waiter: trio.lowlevel.Task | None = None

    def send_nowait(self, frame: Frame) -> None:
        if self._closed:
            raise trio.ClosedResourceError
        frames = self._frames
        if frames is None:
            frames = self._frames = deque()
        elif len(frames) >= self._limit:
            raise trio.WouldBlock
        frames.append(frame)
        self._wake()

    def send_many_nowait(self, frames: list[Frame]) -> int:
        """Queue ``frames`` in order as far as there is room; returns how many were queued (fewer
        than given: the queue is full). Wakes the consumer once."""
        if self._closed:
            raise trio.ClosedResourceError
        queue = self._frames
        if queue is None:
            queue = self._frames = deque()
        room = self._limit - len(queue)
        if len(frames) <= room:
            queue.extend(frames)
            taken = len(frames)
        else:
            taken = max(room, 0)
            queue.extend(frames[:taken])
        if queue:
            self._wake()
        else:
            self._frames = None
        return taken

    def close(self) -> None:
        """No more frames: the consumer gets those queued, then EndOfChannel."""
        self._closed = True
        self._wake()

    def receive_nowait(self) -> Frame:
        frames = self._frames
        if frames:
            frame = frames.popleft()
            if not frames:
                self._frames = None
            return frame
        if self._closed:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    def receive_many_nowait(self, max_frames: int, max_bytes: int) -> list[Frame]:
        """The frames waiting, oldest first: at most ``max_frames`` of them and ``max_bytes`` of
        data in all, but always the first one (however big). Raises as ``receive_nowait`` does when
        there is none. What a connection that coalesces its writes (SSE, batching WebSockets) takes."""
        frames = self._frames
        if not frames:
            if self._closed:
                raise trio.EndOfChannel
            raise trio.WouldBlock
        first = frames.popleft()
        taken = [first]
        size = len(first.data)
        while frames and len(taken) < max_frames:
            size += len(frames[0].data)
            if size > max_bytes:
                break
            taken.append(frames.popleft())
        if not frames:
            self._frames = None
        return taken

    async def receive(self) -> Frame:
        await trio.lowlevel.checkpoint_if_cancelled()
        while not (self._frames or self._closed):
            if self._waiter is not None:
                raise trio.BusyResourceError("another task is already receiving from this queue")
            self._waiter = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return self.receive_nowait()

    async def wait_frames(self) -> None:
        """Wait until a frame waits or the queue has ended (``receive_many_nowait`` then raises
        EndOfChannel). A checkpoint: parked, or a schedule point when there is something already."""
        if self._frames or self._closed:
            await trio.lowlevel.checkpoint()
            return
        if self._waiter is not None:
            raise trio.BusyResourceError("another task is already receiving from this queue")
        while not (self._frames or self._closed):
            self._waiter = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort)

    def __aiter__(self) -> FrameQueue:
        return self

    async def __anext__(self) -> Frame:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            trio.lowlevel.reschedule(waiter)

    def _abort(self, _: object) -> trio.lowlevel.Abort:
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED


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
        self.frames = FrameQueue(queue_size)
        # called after a frame is queued or the queue closes, so a connection whose one task also
        # reads its client (server/ws.py) knows there is something to send
        self.wakeup: Callable[[], None] | None = None

    def matches(self, kind: str, attrs: Attrs) -> bool:
        if kind not in self.kinds:
            if kind == KIND_ANOMALY:
                return self._wants_anomaly(attrs)
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

    def _wants_anomaly(self, attrs: Attrs) -> bool:
        if not self.kinds or self.session_id is not None or self.user_id is not None:
            return False
        return self.service_name is None or attrs.service_name == self.service_name

    def offer(self, frame: Frame) -> bool:
        """Queue without waiting; False (and evicted) when the queue is full or closed."""
        if self.evicted:
            return False
        try:
            self.frames.send_nowait(frame)
        except trio.WouldBlock:
            self.evict()
            return False
        except trio.ClosedResourceError:
            return False  # closed (the connection is ending): not a slow client
        if self.wakeup is not None:
            self.wakeup()
        return True

    def offer_many(self, frames: list[Frame]) -> int:
        """Queue ``frames`` without waiting; returns how many were taken. Fewer than given: the
        queue filled up and the subscriber is evicted (what was queued is still delivered)."""
        if self.evicted:
            return 0
        try:
            taken = self.frames.send_many_nowait(frames)
        except trio.ClosedResourceError:
            return 0  # closed (the connection is ending): not a slow client
        if taken < len(frames):
            self.evict()
        elif self.wakeup is not None:
            self.wakeup()
        return taken

    def evict(self) -> None:
        self.evicted = True
        self.close()

    def close(self) -> None:
        self.frames.close()
        if self.wakeup is not None:
            self.wakeup()


class Hub:
    """Subscribers indexed by what they are scoped to, so a message about one session is offered to
    that session's subscribers and the project-wide ones, not to every socket of the project (with
    10k visitors each watching their own session, a scan per message would be 10k checks)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._wide: dict[str, set[Subscriber]] = {}  # project -> subscribers to the whole project
        self._by_session: dict[tuple[str, str], set[Subscriber]] = {}  # scoped to a session (and maybe a user)
        self._by_user: dict[tuple[str, str], set[Subscriber]] = {}  # scoped to a user only
        self._per_project: dict[str, int] = {}
        self._count = 0

    def _slot(self, sub: Subscriber) -> tuple[dict[Any, set[Subscriber]], Any]:
        if sub.session_id is not None:
            return self._by_session, (sub.project, sub.session_id)
        if sub.user_id is not None:
            return self._by_user, (sub.project, sub.user_id)
        return self._wide, sub.project

    def subscribe(self, sub: Subscriber) -> None:
        index, key = self._slot(sub)
        subs = index.setdefault(key, set())
        if sub not in subs:
            subs.add(sub)
            self._per_project[sub.project] = self._per_project.get(sub.project, 0) + 1
            self._count += 1

    def _remove(self, sub: Subscriber) -> None:
        index, key = self._slot(sub)
        subs = index.get(key)
        if subs is None or sub not in subs:
            return
        subs.discard(sub)
        if not subs:
            del index[key]
        self._count -= 1
        left = self._per_project[sub.project] - 1
        if left:
            self._per_project[sub.project] = left
        else:
            del self._per_project[sub.project]

    def unsubscribe(self, sub: Subscriber) -> None:
        self._remove(sub)
        sub.close()

    def rescope(self, sub: Subscriber, session_id: str | None, user_id: str | None) -> None:
        """Change what a subscribed ``sub`` is scoped to (seed 000's connection message)."""
        self._remove(sub)
        sub.session_id, sub.user_id = session_id, user_id
        if not sub.evicted:
            self.subscribe(sub)

    def subscriber_count(self) -> int:
        return self._count

    def has_subscribers(self, project: str) -> bool:
        return project in self._per_project

    def subscribed_projects(self) -> list[str]:
        """The projects with at least one subscriber on this node."""
        return list(self._per_project)

    def publish(self, project: str, kind: str, attrs: Attrs, body: Any, *, seq: int = 0, pos: str = "") -> int:
        """Offer ``body`` to every matching subscriber of ``project``; returns how many took it."""
        return self.publish_many(project, ((kind, attrs, body, seq, pos),))

    def publish_many(self, project: str, messages: Iterable[Published]) -> int:
        """Offer each message (kind, attrs, body, seq, pos), in order, to every matching subscriber of
        ``project``; returns how many deliveries were taken.

        A request's messages (a batch: tens of events and their metrics) are published together:
        each subscriber's frames are gathered first and queued at once, so it is woken once per
        request instead of once per message, and an eviction is decided once per subscriber."""
        if project not in self._per_project:
            return 0
        pending: dict[Subscriber, list[Frame]] = {}
        wide = self._wide.get(project)
        by_session, by_user = self._by_session, self._by_user
        for kind, attrs, body, seq, pos in messages:
            encoded: dict[bool, Frame | None] = {}
            for subs in (
                wide,
                by_session.get((project, attrs.session_id)) if attrs.session_id is not None else None,
                by_user.get((project, attrs.user_id)) if attrs.user_id is not None else None,
            ):
                if not subs:
                    continue
                for sub in subs:  # queued below: nothing changes the subscriber sets meanwhile
                    if not sub.matches(kind, attrs):
                        continue
                    msgpack = sub.msgpack
                    frame = encoded.get(msgpack, _UNENCODED)
                    if frame is _UNENCODED:
                        try:
                            frame = encode_for(sub, body, seq, pos)
                        except (TypeError, ValueError, OverflowError):
                            frame = None  # e.g. an integer beyond 64 bits has no MessagePack form
                        encoded[msgpack] = frame
                    if frame is None:
                        self.metrics.drops["unencodable_message"] += 1  # skipped for this subscriber; go on
                        continue
                    frames = pending.get(sub)
                    if frames is None:
                        pending[sub] = [frame]
                    else:
                        frames.append(frame)
        delivered = 0
        for sub, frames in pending.items():
            if sub.evicted:
                continue
            taken = sub.offer_many(frames)
            delivered += taken
            if sub.evicted:
                self.metrics.drops["slow_subscriber"] += 1
                self._remove(sub)
        return delivered

    def close_all(self) -> None:
        for index in (self._wide, self._by_session, self._by_user):
            for subs in index.values():
                for sub in subs:
                    sub.close()
            index.clear()
        self._per_project.clear()
        self._count = 0


def encode_for(sub: Subscriber, body: Any, seq: int = 0, pos: str = "") -> Frame:
    """Encode a message for one subscriber in its wire format.

    Stored payloads are kept as raw JSON (msgspec.Raw), which only a JSON encoder can splice in,
    so the MessagePack form is transcoded from the JSON form.
    """
    data = _json.encode(body)
    if sub.msgpack:
        return Frame(seq, _msgpack.encode(msgspec.json.decode(data)), True, pos)
    return Frame(seq, data, False, pos)
