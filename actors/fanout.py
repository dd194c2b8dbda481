"""Fan-out of stream messages: to this node's subscribers, and with a bus, to every node's.

On one node a message goes straight to the hub. In a cluster each request's messages are one bus
entry (published once per node per batch) on the project's channel; every node, the publisher
included, receives the entry in stream order and hands its messages to its hub. Each message then
carries its stream position, the same on every node, so a subscriber that reconnects to any node
with its last position resumes from the project's stream without a gap (``resume``): page by page,
and where the stream no longer holds the position (trimmed by retention, expired, or lost by
Redis) the resume says so with a ``StreamGap`` instead of skipping silently.

When the bus cannot take an entry (Redis down, its queue full), the messages go to this node's
subscribers directly and the cross-node copy is counted as undelivered: local streaming goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

import msgspec

from actors.hub import Attrs, Hub
from actors.metrics import Metrics

log = logging.getLogger("pulse.fanout")

RESUME_LIMIT: Final = 1000  # bus entries read per resume page
RESUME_BYTES: Final = 1024 * 1024  # and their payload bytes at most (but always one entry)
WHOLE_ENTRY: Final = 2**31  # a position index past every message of an entry

_json = msgspec.json.Encoder()


class StreamMessage(msgspec.Struct, array_like=True):
    """One message of a bus entry: what it is, what it is about, and its JSON form."""

    kind: str
    session_id: str | None
    user_id: str | None
    service_name: str | None
    event_name: str | None
    seq: int
    body: bytes  # JSON (a msgspec.Raw would be spliced into the MessagePack entry as is)

    def attrs(self) -> Attrs:
        return Attrs(self.session_id, self.user_id, self.service_name, self.event_name)


_encode_entry = msgspec.msgpack.Encoder().encode
_decode_entry = msgspec.msgpack.Decoder(list[StreamMessage]).decode


class FanoutBus(Protocol):
    """What fan-out needs from the bus (storage.redis_bus.RedisBus)."""

    async def publish(self, channel: str, payload: bytes) -> None: ...
    def on_entry(self, callback: Callable[[str, str, bytes], None]) -> None: ...
    def on_publish_failed(self, callback: Callable[[str, bytes], None]) -> None: ...
    async def read_since(self, channel: str, after_id: str, *, limit: int) -> list[tuple[str, bytes]]: ...
    async def read_from(
        self, channel: str, anchor_id: str, *, limit: int, max_bytes: int = 0, with_anchor: bool = True
    ) -> list[tuple[str, bytes]]: ...
    async def wait_connected(self) -> None: ...


Message = tuple[str, Attrs, Any, int]  # kind, attrs, body (a JSON-encodable value), event seq or 0

KIND_JOURNEY: Final = "journey"  # a completed journey for every node's models, never for subscribers


class JourneySink(Protocol):
    def share_with(self, share: Callable[[str, Any], Awaitable[None]]) -> None: ...
    def receive_shared(self, project: str, body: bytes) -> None: ...


def position(stream_id: str, index: int) -> str:
    return f"{stream_id}/{index}"


def parse_position(value: str) -> tuple[str, int] | None:
    """("<ms>-<n>", index) from "<ms>-<n>/<index>", or None if ``value`` is not a position."""
    stream_id, _, index = value.partition("/")
    ms, dash, n = stream_id.partition("-")
    if not (dash and ms.isdigit() and n.isdigit() and index.isdigit()):
        return None
    return stream_id, int(index)


def position_key(value: str) -> tuple[int, int, int]:
    """Orderable form of a position (positions are compared to skip what a replay already sent)."""
    parsed = parse_position(value)
    if parsed is None:
        return (0, 0, 0)
    stream_id, index = parsed
    ms, _, n = stream_id.partition("-")
    return (int(ms), int(n), index)


class Fanout:
    def __init__(self, hub: Hub, metrics: Metrics, bus: FanoutBus | None = None) -> None:
        self.hub = hub
        self.metrics = metrics
        self.bus = bus
        self._journeys: JourneySink | None = None
        if bus is not None:
            bus.on_entry(self._deliver_entry)
            bus.on_publish_failed(self._deliver_unpublished)

    def on_journey(self, sink: JourneySink) -> None:
        """In a cluster, completed journeys travel as bus entries of their own (kind "journey"),
        so every node's models learn from every node's sessions; on one node nothing to do."""
        if self.bus is None:
            return
        self._journeys = sink

        async def share(project: str, journey: Any) -> None:
            await self.publish(project, [(KIND_JOURNEY, Attrs(), journey, 0)])

        sink.share_with(share)

    @property
    def clustered(self) -> bool:
        return self.bus is not None

    def wanted(self, project: str) -> bool:
        """Whether building messages for ``project`` is worth it: on one node only when someone
        here listens; in a cluster always (other nodes' subscribers, and the resume stream)."""
        return self.bus is not None or self.hub.has_subscribers(project)

    async def publish(self, project: str, messages: list[Message]) -> None:
        if not messages:
            return
        if self.bus is None:
            self._deliver_local(project, messages)
            return
        entry = [
            StreamMessage(kind, a.session_id, a.user_id, a.service_name, a.event_name, seq, _json.encode(body))
            for kind, a, body, seq in messages
        ]
        try:
            await self.bus.publish(project, _encode_entry(entry))
        except Exception as exc:  # BusUnavailable: Redis down or its queue full
            self.metrics.drops["cross_node_undelivered"] += len(messages)
            log.debug("bus refused an entry (%s): local delivery only", exc)
            self._deliver_local(project, messages)

    def _deliver_local(self, project: str, messages: list[Message]) -> None:
        # one request's messages together: each subscriber is woken once for all of them
        self.hub.publish_many(project, [(kind, attrs, body, seq, "") for kind, attrs, body, seq in messages])

    def _deliver_unpublished(self, channel: str, payload: bytes) -> None:
        """An entry the bus accepted but could not publish (Redis went away meanwhile): this
        node's subscribers still get it, without a stream position; other nodes' do not."""
        entry = self._decode(channel, "unpublished", payload)
        if entry is None:
            return
        self.metrics.drops["cross_node_undelivered"] += len(entry)
        entry = [m for m in entry if m.kind != KIND_JOURNEY]
        self.hub.publish_many(channel, [(m.kind, m.attrs(), msgspec.Raw(m.body), m.seq, "") for m in entry])

    def _decode(self, channel: str, stream_id: str, payload: bytes) -> list[StreamMessage] | None:
        try:
            return _decode_entry(payload)
        except msgspec.DecodeError:
            self.metrics.drops["undecodable_bus_entry"] += 1
            log.warning("undecodable bus entry %s on %r", stream_id, channel)
            return None

    def _deliver_entry(self, channel: str, stream_id: str, payload: bytes) -> None:
        """The bus's callback for every entry of every node, in stream order."""
        if self._journeys is not None and payload.find(b"\xa7journey") >= 0:  # cheap pre-check
            entry = self._decode(channel, stream_id, payload)
            if entry is None:
                return
            for message in entry:
                if message.kind == KIND_JOURNEY:
                    self._journeys.receive_shared(channel, message.body)
            entry = [m for m in entry if m.kind != KIND_JOURNEY]
            if not entry or not self.hub.has_subscribers(channel):
                return
        elif not self.hub.has_subscribers(channel):
            return
        else:
            entry = self._decode(channel, stream_id, payload)
            if entry is None:
                return
        self.hub.publish_many(channel, [
            (message.kind, message.attrs(), msgspec.Raw(message.body), message.seq, position(stream_id, index))
            for index, message in enumerate(entry)
        ])

    def resume(self, project: str, after: str) -> StreamResume:
        """A reader of ``project``'s stream after position ``after`` (a cluster only)."""
        assert self.bus is not None
        return StreamResume(self.bus, self.metrics, project, after)

    async def wait_connected(self) -> None:
        """Return once the bus is connected; the caller bounds the wait."""
        assert self.bus is not None
        await self.bus.wait_connected()


class StreamGap:
    """Messages a resume could not deliver: those after position ``after`` and before ``until``
    (the first position retained again; None when unknown), and why."""

    __slots__ = ("after", "until", "reason")

    def __init__(self, after: str, until: str | None, reason: str) -> None:
        self.after = after
        self.until = until
        self.reason = reason


class ResumePage:
    """One page of a resume: the messages after what was covered so far, with their positions;
    the gap found before them, if any; ``more`` is False once the reader has caught up."""

    __slots__ = ("messages", "gap", "more")

    def __init__(self, messages: list[tuple[str, StreamMessage]], gap: StreamGap | None, more: bool) -> None:
        self.messages = messages
        self.gap = gap
        self.more = more


class StreamResume:
    """Reads a project's stream after a position, one bounded page at a time.

    Every read is anchored on the entry last covered (``read_from``): while that entry is still in
    the stream, nothing after it can have been trimmed, so the pages join without a gap. When it is
    gone, the page starts at the oldest entry retained and carries a StreamGap from the last
    position covered to that entry. ``covered`` is the orderable position up to which everything
    was read (live messages up to it are duplicates). BusUnavailable propagates: Redis is down.
    """

    def __init__(self, bus: FanoutBus, metrics: Metrics, project: str, after: str) -> None:
        parsed = parse_position(after)
        if parsed is None:
            raise ValueError(f"not a stream position: {after!r}")
        self._bus = bus
        self._metrics = metrics
        self.project = project
        self.last = after  # the last position covered, as a client sees it
        self.covered = position_key(after)
        self._anchor: str | None = parsed[0]  # None: the stream is gone; read what comes anew
        self._index = parsed[1]  # the anchor's messages up to this one are covered
        self._fresh = True  # the anchor's later messages are still to be read

    async def next_page(self) -> ResumePage:
        from storage.redis_bus import StreamTrimmed  # only in a cluster: one node never loads coredis

        gap: StreamGap | None = None
        while True:
            try:
                entries = await self._read()
                break
            except StreamTrimmed as exc:
                oldest = exc.oldest_id
                until = position(oldest, 0) if oldest else None
                if gap is None:
                    gap = StreamGap(self.last, until, "retention")
                else:  # trimmed again meanwhile: the gap grew
                    gap.until = until
                self._anchor, self._index, self._fresh = (oldest or None), -1, True
                if not oldest:  # the stream is gone: whatever comes now is new, whatever its id
                    self.covered = (0, 0, 0)
                    return ResumePage([], gap, False)
        if self._anchor is None or not self._fresh:
            new = entries if self._anchor is None else entries[1:]
        else:
            new = entries
        messages: list[tuple[str, StreamMessage]] = []
        for entry_id, payload in new:
            try:
                entry = _decode_entry(payload)
            except msgspec.DecodeError:
                self._metrics.drops["undecodable_bus_entry"] += 1
                log.warning("undecodable bus entry %s on %r skipped by a resume", entry_id, self.project)
                entry = []
            first = self._index + 1 if entry_id == self._anchor and self._fresh else 0
            for i in range(first, len(entry)):
                if entry[i].kind != KIND_JOURNEY:
                    messages.append((position(entry_id, i), entry[i]))
            if entry:
                self.last = position(entry_id, len(entry) - 1)
            self.covered = max(self.covered, _whole_entry(entry_id))
        more = len(new) > 0
        if entries:
            self._anchor, self._fresh = entries[-1][0], False
        return ResumePage(messages, gap, more)

    async def _read(self) -> list[tuple[str, bytes]]:
        if self._anchor is None:  # the stream was gone: whatever it holds now is new
            return await self._bus.read_since(self.project, "0", limit=RESUME_LIMIT)
        return await self._bus.read_from(
            self.project, self._anchor, limit=RESUME_LIMIT, max_bytes=RESUME_BYTES, with_anchor=self._fresh
        )


def _whole_entry(entry_id: str) -> tuple[int, int, int]:
    """The orderable position just past every message of entry ``entry_id``."""
    ms, _, n = entry_id.partition("-")
    return (int(ms), int(n), WHOLE_ENTRY)
