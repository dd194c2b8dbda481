"""Server-Sent Events: GET /api/events/stream (seed 004) and GET /api/v1/behavioral/stream (seed 000).

Seed 004's clients use ``EventSource.onmessage``, which only fires for unnamed events, so every
message is a plain ``data:`` line whose JSON carries ``type`` (event, stats, ping). Event messages
carry ``id: <seq>``; a client reconnecting with Last-Event-ID (or ?lastEventId=) first receives what
it missed, read from the store, then the live stream, without a gap and without a repeat.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import msgspec
import trio

from actors.fanout import parse_position, position_key
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

log = logging.getLogger("pulse.sse")

MAX_SEQ: Final = 2**63 - 1
FUTURE_SLACK_MS: Final = 60_000  # clock differences between Redis and this node
COALESCE_MAX: Final = 256  # queued messages sent in one write at most
COALESCE_BYTES: Final = 1024 * 1024  # and their bytes (a bigger message goes alone)
SEND_TIMEOUT_S: Final = 5.0  # one write of dequeued messages; a client slower than that is dropped
RESUME_PAGE: Final = 1000
RESUME_MAX: Final = 10_000  # stored events read on reconnect at most; past that the client must re-query
_json = msgspec.json.Encoder()


def _frame(body: bytes, seq: int = 0, floor: int = 0, pos: str = "") -> bytes:
    """One SSE message. Its ``id`` is where a reconnect resumes. In a cluster it is the message's
    position in the project's stream (the same on every node). On one node it is the event's seq, or
    lower while an earlier-committed event is still on its way (at-least-once: a resume may repeat an
    event, with the same event id in its data, but never skips one)."""
    if pos:
        return b"id: %s\ndata: %s\n\n" % (pos.encode(), body)
    if not seq:
        return b"data: " + body + b"\n\n"
    resume_at = min(seq, floor)
    return b"id: %d\ndata: %s\n\n" % (resume_at, body)


def _frames(frames: list[Frame], floor: int, replayed_upto: int, replayed_pos: tuple[int, int, int]) -> bytes:
    """Queued frames as SSE messages in one chunk (``_frame`` inlined: this runs for every message
    of every subscriber), minus what a resume's replay already sent."""
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
    pulse.hub.subscribe(sub)  # before the replay, so nothing falls between replay and live
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
    if isinstance(resume_from, int):
        replayed_upto = await _replay(pulse, sub, send, behavioral, resume_from)
    elif isinstance(resume_from, str):
        replayed_pos = await _replay_stream(pulse, sub, send, resume_from)
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


async def _replay_stream(pulse: Pulse, sub: Subscriber, send: Send, after: str) -> tuple[int, int, int]:
    """Cluster resume: send what this subscriber would have received after stream position
    ``after``, read from the project's stream. Returns the last position covered."""
    last = position_key(after)
    if not pulse.fanout.clustered:
        return last  # one node: positions only exist in a cluster; go live
    sent = 0
    while sent < RESUME_MAX:
        try:
            messages = await pulse.fanout.read_since(sub.project, after)
        except Exception as exc:  # Redis down, or the position is older than the stream keeps
            pulse.metrics.drops["sse_resume_unavailable"] += 1
            log.warning("sse resume from %r not possible: %s", after, exc)
            return last
        if not messages:
            break
        chunks: list[bytes] = []
        for pos, message in messages:
            after, last = pos, position_key(pos)
            if sub.matches(message.kind, message.attrs()):
                chunks.append(_frame(bytes(message.body), pos=pos))
        sent += len(messages)
        if chunks:
            await send({"type": "http.response.body", "body": b"".join(chunks), "more_body": True})
    return last


async def _replay(pulse: Pulse, sub: Subscriber, send: Send, behavioral: bool, after: int) -> int:
    """Send the stored events after ``after`` that this subscriber would have received."""
    last, scanned = after, 0
    while scanned < RESUME_MAX:
        events = await pulse.store.events_after(sub.project, last, limit=RESUME_PAGE)
        if not events:
            break
        chunks: list[bytes] = []
        scanned += len(events)
        for event in events:
            last = event.seq
            body = _replay_body(sub, event, behavioral)
            if body is not None:
                chunks.append(_frame(_json.encode(body), event.seq))
        if chunks:
            await send({"type": "http.response.body", "body": b"".join(chunks), "more_body": True})
        if len(events) < RESUME_PAGE:
            break
    return last


def _replay_body(sub: Subscriber, event: Event, behavioral: bool) -> Any | None:
    attrs = Attrs(event.session_id, event.user_id, event.service_name, event.name)
    if behavioral:
        if not sub.matches(KIND_BEHAVIORAL, attrs):
            return None
        return behavioral_message(event, None)
    if not sub.matches(KIND_EVENT, attrs):
        return None
    return event_message(event)


async def _stats(pulse: Pulse, project: str) -> dict[str, Any]:
    """The periodic ``stats`` message: totals from the aggregates, rate from the process metrics."""
    aggs = await pulse.store.service_stats(project, top=5)
    total = sum(a.event_count for a in aggs)
    last_seen = max((a.last_seen_ms for a in aggs), default=None)
    return {
        "type": "stats",
        "data": {
            "totalEvents": total,
            "totalServices": sum(1 for a in aggs if a.service_name is not None),
            "eventsPerSecond": pulse.metrics.ingest_rate.per_second(),
            "lastEventAt": iso_ms(last_seen) if last_seen is not None else None,
            "services": [{"serviceName": a.service_name, "eventCount": a.event_count} for a in aggs],
            "timestamp": iso_ms(now_ms()),
        },
    }

