"""Server-Sent Events: GET /api/events/stream (seed 004) and GET /api/v1/behavioral/stream (seed 000).

Seed 004's clients use ``EventSource.onmessage``, which only fires for unnamed events, so every
message is a plain ``data:`` line whose JSON carries ``type`` (event, stats, ping). Event messages
carry ``id:`` (the event's seq on one node, its stream position in a cluster); a client reconnecting
with Last-Event-ID (or ?lastEventId=) first receives everything it missed that is still stored (from
the store on one node, from the project's Redis stream in a cluster), page by page, then the live
stream. Where part of what it missed cannot be replayed (trimmed from the stream, Redis or the store
unreachable, an id this server never issued), it receives one named ``event: gap`` message saying
from which id to which id and why (docs/streams.md), and goes on: a resume never skips silently.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Final, TypeVar

import msgspec
import trio

from actors.fanout import ResumePage, StreamResume, parse_position, position_key
from actors.hub import KIND_BEHAVIORAL, KIND_EVENT, KINDS_BY_SUBSCRIPTION, Attrs, Frame, Subscriber
from protocol.errors import InvalidInput
from protocol.normalize import iso_ms
from protocol.record import Event
from protocol.views import behavioral_message, event_message
from server.auth import require_read
from server.context import Pulse
from server.http import Request, Send
from server.ingest_routes import now_ms
from server.params import text_param
from storage.base import StoreError

log = logging.getLogger("pulse.sse")

MAX_SEQ: Final = 2**63 - 1
FUTURE_SLACK_MS: Final = 60_000  # clock differences between Redis and this node
COALESCE_MAX: Final = 256  # queued messages sent in one write at most
COALESCE_BYTES: Final = 1024 * 1024  # and their bytes (a bigger message goes alone)
SEND_TIMEOUT_S: Final = 5.0  # one write of dequeued messages; a client slower than that is dropped
RESUME_PAGE: Final = 1000  # stored events read per resume page on one node (cluster: actors/fanout.py)
RESUME_WAIT_S: Final = 2.0  # a resume waits this long for an unreachable store or Redis, then reports a gap
RESUME_RETRY_S: Final = 0.1
# A resume from an old id reads the project's log page by page, and a public-key client can ask for
# that over and over: at most this many resumes of one project read at once; the others wait their
# turn for up to REPLAY_SLOT_WAIT_S, then the stream ends without a gap, and the browser's
# EventSource reconnects with the same Last-Event-ID (nothing is skipped, the wait is just longer).
REPLAYS_PER_PROJECT: Final = 2
REPLAY_SLOT_WAIT_S: Final = 30.0
_json = msgspec.json.Encoder()

# reasons of a gap message (docs/streams.md)
GAP_RETENTION: Final = "retention"  # no longer kept by the project's stream (or lost by Redis)
GAP_UNAVAILABLE: Final = "unavailable"  # the store (one node) or Redis (cluster) could not be read
GAP_UNKNOWN_ID: Final = "unknown_id"  # an id this server never issued


class _EndStream(Exception):
    """A replay ends the stream: the client took nothing for SEND_TIMEOUT_S, or the server is
    shutting down. The client reconnects with the id of the last message it got: nothing is lost."""


class _Unreadable(Exception):
    """What a resume must read stayed unreadable for RESUME_WAIT_S."""


def _frame(body: bytes) -> bytes:
    """One SSE message without an id (stats, ping)."""
    return b"data: " + body + b"\n\n"


def _frames(frames: list[Frame], floor: int, replayed_upto: int, replayed_pos: tuple[int, int, int]) -> bytes:
    """Queued frames as SSE messages in one chunk (this runs for every message of every
    subscriber), minus what a resume's replay already sent.

    A message's ``id`` is where a reconnect resumes. In a cluster it is the message's position in
    the project's stream (the same on every node). On one node it is the event's seq, or lower
    while an earlier-committed event is still on its way (at-least-once: a resume may repeat an
    event, with the same event id in its data, but never skips one). A replay sends each stored
    event with its own seq: everything committed before it is stored too."""
    chunks: list[bytes] = []
    append = chunks.append
    for frame in frames:
        seq = frame.seq
        if frame.pos:
            if position_key(frame.pos) > replayed_pos:
                append(b"id: %s\ndata: %s\n\n" % (frame.pos.encode(), frame.data))
        elif not seq:
            append(b"data: %s\n\n" % frame.data)
        elif seq > replayed_upto:
            append(b"id: %d\ndata: %s\n\n" % (seq if seq < floor else floor, frame.data))
    return b"".join(chunks)


def _last_event_id(req: Request) -> int | str | None:
    value = req.headers.get("last-event-id") or req.query.get("lastEventId")
    if not value:
        return None
    if value.isdigit() and int(value) <= MAX_SEQ:
        return int(value)
    # a position from the future would hide every live message until the stream caught up with it
    if parse_position(value) is not None and position_key(value)[0] <= now_ms() + FUTURE_SLACK_MS:
        return value
    raise InvalidInput("Last-Event-ID", f"expected the id of a received event, got {value!r}")


async def stream(pulse: Pulse, req: Request, send: Send, *, behavioral: bool) -> int:
    access = await pulse.access(req)
    session_id, user_id = text_param(req.query, "sessionId"), text_param(req.query, "userId")
    if not behavioral or not (session_id or user_id):
        require_read(access)
    if behavioral:
        names = (req.query.get("subscriptions") or ",".join(KINDS_BY_SUBSCRIPTION)).split(",")
        unknown = [n for n in names if n not in KINDS_BY_SUBSCRIPTION]
        if unknown:
            raise InvalidInput("subscriptions", f"unknown subscriptions {unknown!r}")
        kinds = [KINDS_BY_SUBSCRIPTION[n] for n in names]
    else:
        kinds = [KIND_EVENT]
    resume_from = _last_event_id(req)
    sub = Subscriber(access.project.id, kinds, session_id=session_id, user_id=user_id)
    sub.service_name = text_param(req.query, "serviceName")
    sub.event_name = text_param(req.query, "eventName")
    if resume_from is None:
        pulse.hub.subscribe(sub)  # before the answer: whatever happens after it reaches the client
    # else the replay subscribes once it has caught up, then reads what came meanwhile (_replay)
    pulse.metrics.open_sse += 1
    try:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b"retry: 2000\n\n", "more_body": True})
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_disconnect, req, nursery.cancel_scope)
            await _pump(pulse, sub, send, behavioral, resume_from)
            nursery.cancel_scope.cancel()
        with trio.move_on_after(1) as cleanup:
            cleanup.shield = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        pulse.hub.unsubscribe(sub)
        pulse.metrics.open_sse -= 1
    return 200


async def _watch_disconnect(req: Request, scope: trio.CancelScope) -> None:
    while (await req.receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


async def _pump(pulse: Pulse, sub: Subscriber, send: Send, behavioral: bool, resume_from: int | str | None) -> None:
    replayed_upto = 0
    replayed_pos = (0, 0, 0)
    try:
        if resume_from is not None:
            slots = await take_replay_slot(pulse.replay_slots, sub.project)
            if slots is None:
                pulse.metrics.drops["sse_replay_busy"] += 1
                return  # the client reconnects with the same id
            try:
                if isinstance(resume_from, int):
                    replayed_upto = await _replay(pulse, sub, send, behavioral, resume_from)
                else:
                    replayed_pos = await _replay_stream(pulse, sub, send, resume_from)
            finally:
                slots.release()
    except _EndStream:
        return
    settings = pulse.settings
    next_ping = trio.current_time() + settings.sse_ping_interval
    next_stats = trio.current_time() + settings.sse_stats_interval
    queue = sub.frames
    while True:
        # One cancel scope until the next ping or stats is due, not one per wake-up: under load a
        # subscriber wakes for every publish (a hundred times a second), and a scope with a
        # deadline costs a few µs to enter and leave, plus trio's deadline heap upkeep.
        with trio.move_on_at(min(next_ping, next_stats)):
            while True:
                try:
                    await queue.wait_frames()
                    # Under load several messages wait in the queue: send them in one write
                    frames = queue.receive_many_nowait(COALESCE_MAX, COALESCE_BYTES)
                except trio.EndOfChannel:
                    return  # evicted as slow (the hub counted it), or the server is shutting down
                body = _frames(frames, pulse.pipeline.resume_floor(), replayed_upto, replayed_pos)
                if body and not await _send_dequeued(send, body):
                    return  # the client took nothing for SEND_TIMEOUT_S: too slow, end the stream
        now = trio.current_time()
        if now >= next_ping:
            next_ping = now + settings.sse_ping_interval
            ping = _json.encode({"type": "ping", "timestamp": now_ms()})
            await send({"type": "http.response.body", "body": _frame(ping), "more_body": True})
        if now >= next_stats and not behavioral:
            next_stats = now + settings.sse_stats_interval
            stats = await _stats(pulse, sub.project)
            await send({"type": "http.response.body", "body": _frame(_json.encode(stats)), "more_body": True})
        elif now >= next_stats:
            next_stats = now + settings.sse_stats_interval


async def _send_dequeued(send: Send, body: bytes) -> bool:
    """Write messages already taken off the queue. The ping timer around the pump must not cancel
    this half-way (they would be lost), and neither may shutdown: what was dequeued is written or
    the stream ends, within SEND_TIMEOUT_S."""
    with trio.CancelScope(shield=True, deadline=trio.current_time() + SEND_TIMEOUT_S) as guard:
        await send({"type": "http.response.body", "body": body, "more_body": True})
    return not guard.cancelled_caught


class _ReplayOut:
    """Where a replay writes: one write per page, bounded by SEND_TIMEOUT_S (a client that takes
    nothing for that long ends the stream). A page with nothing for this client is a checkpoint,
    and a ping once nothing was written for a ping interval (a filtered replay may scan long, and
    proxies close silent connections). Shutdown ends the stream between pages."""

    def __init__(self, pulse: Pulse, sub: Subscriber, send: Send) -> None:
        self.pulse = pulse
        self.sub = sub
        self.send = send
        self.last_write = trio.current_time()

    async def write(self, body: bytes) -> None:
        with trio.move_on_after(SEND_TIMEOUT_S) as guard:
            await self.send({"type": "http.response.body", "body": body, "more_body": True})
        self.last_write = trio.current_time()
        if guard.cancelled_caught or self.pulse.draining:
            raise _EndStream

    async def page(self, chunks: list[bytes]) -> None:
        if chunks:
            await self.write(b"".join(chunks))
        elif self.pulse.draining:
            raise _EndStream
        elif trio.current_time() - self.last_write >= self.pulse.settings.sse_ping_interval:
            await self.write(_frame(_json.encode({"type": "ping", "timestamp": now_ms()})))
        else:
            await trio.lowlevel.checkpoint()

    async def gap(self, after: str, until: str | None, reason: str, detail: str) -> None:
        """The named ``gap`` message: what a resume could not replay (ids after ``from`` and
        before ``to``; ``to`` null when the end is unknown), and why. No ``id:``: the next message
        moves the client's resume point on."""
        self.pulse.metrics.drops["sse_resume_gap"] += 1
        log.warning("sse resume of project %r cannot replay after %r up to %r (%s): %s",
                    self.sub.project, after, until, reason, detail)
        body = _json.encode({"type": "gap", "from": after, "to": until, "reason": reason, "message": detail})
        await self.write(b"event: gap\ndata: %s\n\n" % body)


async def take_replay_slot(slots: dict[str, trio.CapacityLimiter], project: str) -> trio.CapacityLimiter | None:
    """One of ``project``'s REPLAYS_PER_PROJECT resume slots (release it when done), or None when
    none came free within REPLAY_SLOT_WAIT_S."""
    limiter = slots.get(project)
    if limiter is None:
        limiter = slots[project] = trio.CapacityLimiter(REPLAYS_PER_PROJECT)
    with trio.move_on_after(REPLAY_SLOT_WAIT_S) as waited:
        await limiter.acquire()
    return None if waited.cancelled_caught else limiter


async def _replay(pulse: Pulse, sub: Subscriber, send: Send, behavioral: bool, after: int) -> int:
    """Send every stored event after seq ``after`` that this subscriber would have received, then
    subscribe it; returns the last seq covered (live frames up to it were replayed).

    Pages of RESUME_PAGE events, each written before the next is read. The subscriber is not
    subscribed while it catches up, so a long replay never fills its live queue; once a page comes
    back empty it subscribes and reads once more what was committed meanwhile (everything published
    before the subscription was committed before it, so nothing falls between replay and live).
    """
    last = after
    out = _ReplayOut(pulse, sub, send)
    try:
        head = await _read_store(pulse.store.max_seq)
        if after > head:
            await out.gap(str(after), None, GAP_UNKNOWN_ID,
                          f"id {after} is past the newest stored event ({head}): this store did not issue it")
            last = head
        for subscribed in (False, True):
            if subscribed:
                pulse.hub.subscribe(sub)
            while True:
                events = await _read_store(partial(pulse.store.events_after, sub.project, last, limit=RESUME_PAGE))
                if not events:
                    break
                chunks: list[bytes] = []
                linked = pulse.pipeline.linked_users.get(sub.project)  # cross-device links, as live
                for event in events:
                    body = _replay_body(sub, event, behavioral, linked)
                    if body is not None:  # the event's own seq: the id live messages carry too
                        chunks.append(b"id: %d\ndata: %s\n\n" % (event.seq, _json.encode(body)))
                last = events[-1].seq
                await out.page(chunks)
    except _Unreadable as exc:
        await out.gap(str(last), None, GAP_UNAVAILABLE, f"the event store could not be read: {exc}")
    pulse.hub.subscribe(sub)
    return last


_T = TypeVar("_T")


async def _read_store(read: Callable[[], Awaitable[_T]]) -> _T:
    """``await read()``, retried while the store is unavailable, for RESUME_WAIT_S at most."""
    deadline = trio.current_time() + RESUME_WAIT_S
    while True:
        try:
            return await read()
        except StoreError as exc:
            if trio.current_time() + RESUME_RETRY_S >= deadline:
                raise _Unreadable(str(exc)) from None
            await trio.sleep(RESUME_RETRY_S)


async def _replay_stream(pulse: Pulse, sub: Subscriber, send: Send, after: str) -> tuple[int, int, int]:
    """Cluster resume: send what this subscriber would have received after stream position
    ``after``, read from the project's stream page by page (actors/fanout.py StreamResume), then
    subscribe it (as ``_replay`` does). Returns the position up to which everything was read."""
    out = _ReplayOut(pulse, sub, send)
    if not pulse.fanout.clustered:
        await out.gap(after, None, GAP_UNKNOWN_ID,
                      "a cluster stream position, but this server runs without Redis: its ids are event seqs")
        pulse.hub.subscribe(sub)
        return (0, 0, 0)
    resume = pulse.fanout.resume(sub.project, after)
    try:
        for subscribed in (False, True):
            if subscribed:
                pulse.hub.subscribe(sub)
            while True:
                page = await _read_stream(pulse, resume)
                if page.gap is not None:
                    gap = page.gap
                    await out.gap(gap.after, gap.until, gap.reason,
                                  "older than what the project's stream keeps (--stream-retention, "
                                  "--stream-retention-bytes), or lost by redis")
                chunks = [
                    b"id: %s\ndata: %s\n\n" % (pos.encode(), message.body)
                    for pos, message in page.messages
                    if sub.matches(message.kind, message.attrs())
                ]
                await out.page(chunks)
                if not page.more:
                    break
    except _Unreadable as exc:
        await out.gap(resume.last, None, GAP_UNAVAILABLE, f"the project's stream could not be read: {exc}")
    pulse.hub.subscribe(sub)
    return resume.covered


async def _read_stream(pulse: Pulse, resume: StreamResume) -> ResumePage:
    """The next page, waiting up to RESUME_WAIT_S for Redis when it is not reachable."""
    deadline = trio.current_time() + RESUME_WAIT_S
    while True:
        try:
            return await resume.next_page()
        except Exception as exc:  # BusUnavailable: Redis down, or not answering
            if trio.current_time() + RESUME_RETRY_S >= deadline:
                raise _Unreadable(str(exc)) from None
            with trio.move_on_at(deadline):
                await pulse.fanout.wait_connected()
                await trio.sleep(RESUME_RETRY_S)


def _replay_body(sub: Subscriber, event: Event, behavioral: bool, linked: dict[str, str] | None) -> Any | None:
    """What a live subscriber got for ``event``, or None. A session linked to a user (``linked``:
    session -> user, actors/identity/directory.py) is heard by that user's subscribers, as live."""
    user_id = event.user_id
    if linked is not None and not user_id and event.session_id:
        user_id = linked.get(event.session_id)
    attrs = Attrs(event.session_id, user_id, event.service_name, event.name)
    if behavioral:
        if not sub.matches(KIND_BEHAVIORAL, attrs):
            return None
        return behavioral_message(event, None)
    if not sub.matches(KIND_EVENT, attrs):
        return None
    return event_message(event)


async def _stats(pulse: Pulse, project: str) -> dict[str, Any]:
    """The periodic ``stats`` message (its shape: README, "SSE stats messages"): totals from the
    aggregates under seed 004's EventStatistics / ServiceStats names, the rate from this node's count
    of the project's events (never another project's). Events without a service count as "unknown"."""
    aggs = await pulse.store.service_stats(project, top=5, name_unknown=True)
    last_seen = max((a.last_seen_ms for a in aggs), default=None)
    data: dict[str, Any] = {
        "totalEventCount": sum(a.event_count for a in aggs),
        "totalServices": len(aggs),
        "eventsPerSecond": pulse.metrics.project_rate(project),
    }
    if last_seen is not None:  # left out before the first event
        data["lastEventAt"] = iso_ms(last_seen)
    data["services"] = [{"serviceName": a.service_name, "eventCount": a.event_count} for a in aggs]
    data["timestamp"] = iso_ms(now_ms())
    return {"type": "stats", "data": data}

