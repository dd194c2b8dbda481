"""WebSocket endpoints: /api/events/ws (seed 004) and /api/v1/behavioral/stream (seed 000).

One connection = one nursery with a reader (client messages) and a writer (the subscriber's bounded
queue -> the socket). Acks and stream messages share that queue, so the writer is the only sender.
JSON text frames by default; MessagePack binary frames when the client asks for ``pulse.msgpack``.
Close codes: 1001 server going away (reconnect), 1008 auth, 1013 too many connections, 3008 slow.
Keepalive pings and the pong deadline are enforced by the transport (server/hypercorn_tuning.py).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Final

import msgspec
import trio

from actors.hub import KIND_EVENT, KINDS_BY_SUBSCRIPTION, Subscriber, encode_for
from protocol.errors import from_msgspec
from protocol.stream import (
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_SLOW,
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_MSGPACK,
    SUBSCRIPTIONS,
    BehavioralClientMessage,
    Connection,
    ConnectionAck,
    ErrorMessage,
    Filter,
    Ping,
    Pong,
    SendBatch,
    SendEvent,
    Subscribe,
    Track,
    TrackBatch,
    TrackingClientMessage,
    Unsubscribe,
)
from server.auth import Access, AuthError, authenticate, key_from
from server.context import Pulse
from server.http import Receive, Scope, Send
from server.ingest_routes import now_ms
from server.socket_ingest import ingest_batch, ingest_one
from storage.base import StoreError

log = logging.getLogger("pulse.ws")

IN_FLIGHT_PER_SOCKET: Final = 8  # events/batches a client may have awaiting their ack at once
IN_FLIGHT_GRACE_S: Final = 5.0  # after a disconnect, how long in-flight ingests may take to finish
MAX_CLIENT_MESSAGE: Final = 5 * 1024 * 1024

_behavioral_json = msgspec.json.Decoder(BehavioralClientMessage)
_behavioral_msgpack = msgspec.msgpack.Decoder(BehavioralClientMessage)
_tracking_json = msgspec.json.Decoder(TrackingClientMessage)
_tracking_msgpack = msgspec.msgpack.Decoder(TrackingClientMessage)


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}


def _query(scope: Scope) -> dict[str, str]:
    from urllib.parse import parse_qsl

    return dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))


async def _refuse(send: Send, status: int, reason: str) -> None:
    """Refuse the handshake with an HTTP answer (the websocket.http.response extension)."""
    body = msgspec.json.encode({"success": False, "error": {"reason": reason}})
    await send(
        {
            "type": "websocket.http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "websocket.http.response.body", "body": body})


class Socket:
    """State of one accepted WebSocket connection."""

    def __init__(self, pulse: Pulse, access: Access, sub: Subscriber, send: Send, behavioral: bool) -> None:
        self.pulse = pulse
        self.access = access
        self.sub = sub
        self.send = send
        self.behavioral = behavioral
        self._limiter: trio.Semaphore | None = None  # made on the first ingest: most sockets only listen
        self.connection_id = "conn_" + os.urandom(8).hex()

    @property
    def limiter(self) -> trio.Semaphore:
        if self._limiter is None:
            self._limiter = trio.Semaphore(IN_FLIGHT_PER_SOCKET)
        return self._limiter

    def reply(self, body: Any) -> None:
        self.sub.offer(encode_for(self.sub, body))  # acks and errors share the queue (one writer)

    async def writer(self) -> int:
        """Send queued frames until the queue closes; returns the close code."""
        async for frame in self.sub.frames:
            if frame.binary:
                await self.send({"type": "websocket.send", "bytes": frame.data})
            else:
                await self.send({"type": "websocket.send", "text": frame.data.decode()})
        return CLOSE_SLOW if self.sub.evicted else CLOSE_NORMAL


async def websocket_endpoint(pulse: Pulse, scope: Scope, receive: Receive, send: Send, *, behavioral: bool) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    query = _query(scope)
    try:
        access = await authenticate(pulse.store, key_from(_headers(scope), query), open_access=pulse.settings.open_access)
    except AuthError as err:
        await _refuse(send, err.status, err.reason)
        return
    except StoreError:
        await _refuse(send, 503, "storage unavailable; retry later")
        return
    if not behavioral and not access.can_read:
        await _refuse(send, 403, "streaming all events needs the project's secret key")
        return
    if pulse.draining or pulse.metrics.open_websockets >= pulse.settings.max_websockets:
        pulse.metrics.ws_refused += 1
        await _refuse(send, 503, "connection limit reached; retry later")
        return
    offered = scope.get("subprotocols") or []
    msgpack = SUBPROTOCOL_MSGPACK in offered
    chosen = SUBPROTOCOL_MSGPACK if msgpack else (SUBPROTOCOL_JSON if SUBPROTOCOL_JSON in offered else None)
    kinds = [] if behavioral else [KIND_EVENT]
    sub = Subscriber(access.project.id, kinds, msgpack=msgpack)
    socket = Socket(pulse, access, sub, send, behavioral)
    await send({"type": "websocket.accept", "subprotocol": chosen})
    # The handshake's headers are no longer needed (access logging is off), but the scope would
    # hold them for the socket's lifetime: ~1.7 KiB per idle socket.
    scope["headers"] = ()
    pulse.metrics.open_websockets += 1
    pulse.hub.subscribe(sub)
    code = CLOSE_NORMAL
    scoped = Connection(sessionId=query.get("sessionId"), userId=query.get("userId"))
    del query  # not kept in this long-lived frame
    try:
        if behavioral and (scoped.sessionId or scoped.userId):
            _connect(socket, scoped)
        elif not behavioral:
            socket.reply({"type": "connected", "connectionId": socket.connection_id, "protocol": "msgpack" if msgpack else "json"})
        code = await _run(socket, receive)
    finally:
        pulse.hub.unsubscribe(sub)
        pulse.metrics.open_websockets -= 1
        if sub.evicted:
            code = CLOSE_SLOW
        with trio.move_on_after(1) as cleanup:
            cleanup.shield = True
            try:
                await send({"type": "websocket.close", "code": code})
            except Exception:  # noqa: BLE001  the peer may be gone already; nothing to tell it
                pass


async def _run(socket: Socket, receive: Receive) -> int:
    """Read in this task, write in one child task; whichever ends first ends the connection.

    Two tasks per socket and no more: at 100k sockets every task and frame is memory. Shutdown
    needs no watcher per socket: the hub closes every queue, the writer ends, and we close 1001.
    """
    code = CLOSE_NORMAL
    async with trio.open_nursery() as nursery:

        async def write() -> None:
            nonlocal code
            code = await socket.writer()
            nursery.cancel_scope.cancel()

        nursery.start_soon(write)
        await _reader(socket, receive, nursery)
        # The client left (or we shut down): events it sent are still being stored and processed;
        # let them finish (bounded) so a page-unload "send then close" loses nothing it sent.
        if socket._limiter is not None:
            with trio.move_on_after(IN_FLIGHT_GRACE_S):
                for _ in range(IN_FLIGHT_PER_SOCKET):
                    await socket._limiter.acquire()
        nursery.cancel_scope.cancel()
    if socket.pulse.draining and not socket.sub.evicted:
        return CLOSE_GOING_AWAY
    return code


async def _reader(socket: Socket, receive: Receive, nursery: trio.Nursery) -> None:
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes")
        raw = data if data is not None else (message.get("text") or "").encode()
        if len(raw) > MAX_CLIENT_MESSAGE:
            socket.reply(ErrorMessage(code="too_large", reason=f"message exceeds {MAX_CLIENT_MESSAGE} bytes"))
            continue
        binary = data is not None
        try:
            if socket.behavioral:
                decoded = (_behavioral_msgpack if binary else _behavioral_json).decode(raw)
            else:
                decoded = (_tracking_msgpack if binary else _tracking_json).decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            err = from_msgspec(exc)
            socket.reply(ErrorMessage(code=err.code, field=err.field, reason=err.reason))
            continue
        except RecursionError:
            socket.reply(ErrorMessage(code="malformed_json", reason="message is nested too deeply"))
            continue
        await _dispatch(socket, decoded, raw, binary, nursery)


async def _dispatch(socket: Socket, msg: Any, raw: bytes, binary: bool, nursery: trio.Nursery) -> None:
    project = socket.access.project.id
    if isinstance(msg, Ping):
        socket.reply(Pong(requestId=msg.requestId, timestamp=now_ms()))
    elif isinstance(msg, Connection):
        _connect(socket, msg)
    elif isinstance(msg, Subscribe | Unsubscribe):
        _subscriptions(socket, msg)
    elif isinstance(msg, Filter):
        socket.sub.service_name, socket.sub.event_name, socket.sub.filter_user_id = msg.serviceName, msg.eventName, msg.userId
        socket.reply({"type": "filter_applied", "filter": msg})
    else:
        # Ingest concurrently (acks carry requestId), but at most IN_FLIGHT_PER_SOCKET at once:
        # a client that floods us waits here, and TCP pushes back on it.
        await socket.limiter.acquire()
        nursery.start_soon(_ingest, socket, msg, raw, binary, project)


async def _ingest(socket: Socket, msg: Any, raw: bytes, binary: bool, project: str) -> None:
    try:
        if isinstance(msg, SendEvent):
            answer = await ingest_one(socket.pulse, project, bytes(msg.event), behavioral=True, name=None,
                                      user_id=None, request_id=msg.requestId, msgpack=binary)
        elif isinstance(msg, SendBatch):
            answer = await ingest_batch(socket.pulse, project, msg.events, behavioral=True, user_id=None,
                                        request_id=msg.requestId, msgpack=binary, sent_at=msg.sentAt)
        elif isinstance(msg, Track):
            answer = await ingest_one(socket.pulse, project, bytes(msg.payload), behavioral=False, name=msg.eventName,
                                      user_id=None, request_id=msg.requestId, msgpack=binary)
        elif isinstance(msg, TrackBatch):
            answer = await ingest_batch(socket.pulse, project, msg.events, behavioral=False, user_id=None,
                                        request_id=msg.requestId, msgpack=binary, batch_body=raw)
        else:
            answer = ErrorMessage(reason=f"unsupported message {type(msg).__name__!r}")
    except Exception:
        # a bug of ours must cost this one message, not the connection and its other messages
        log.exception("ingest over websocket failed")
        answer = ErrorMessage(requestId=getattr(msg, "requestId", None), code="internal_error",
                              reason="internal server error")
    finally:
        socket.limiter.release()
    socket.reply(answer)


def _connect(socket: Socket, msg: Connection) -> None:
    """Seed 000's connection message: scope the stream to a session or user, pick subscriptions."""
    if not socket.access.can_read and not (msg.sessionId or msg.userId):
        socket.reply(ErrorMessage(code="forbidden", field="$.sessionId",
                                  reason="a public key may only subscribe to a sessionId or userId"))
        return
    wanted = msg.subscriptions if msg.subscriptions is not None else list(SUBSCRIPTIONS)
    unknown = [name for name in wanted if name not in KINDS_BY_SUBSCRIPTION]
    if unknown:
        socket.reply(ErrorMessage(code="invalid_field", field="$.subscriptions",
                                  reason=f"unknown subscriptions {unknown!r}; known: {list(SUBSCRIPTIONS)!r}"))
        return
    sub = socket.sub
    socket.pulse.hub.rescope(sub, msg.sessionId, msg.userId)
    sub.kinds = {KINDS_BY_SUBSCRIPTION[name] for name in wanted}
    socket.reply(ConnectionAck(connectionId=socket.connection_id, sessionId=msg.sessionId, userId=msg.userId,
                               subscriptions=wanted, protocol="msgpack" if sub.msgpack else "json"))


def _subscriptions(socket: Socket, msg: Subscribe | Unsubscribe) -> None:
    sub = socket.sub
    if isinstance(msg, Subscribe) and not socket.access.can_read and sub.session_id is None and sub.user_id is None:
        socket.reply(ErrorMessage(code="forbidden", field="$.type",
                                  reason="a public key must first connect to a sessionId or userId"))
        return
    unknown = [name for name in msg.subscriptions if name not in KINDS_BY_SUBSCRIPTION]
    if unknown:
        socket.reply(ErrorMessage(code="invalid_field", field="$.subscriptions", reason=f"unknown subscriptions {unknown!r}"))
        return
    kinds = {KINDS_BY_SUBSCRIPTION[name] for name in msg.subscriptions}
    if isinstance(msg, Subscribe):
        socket.sub.kinds |= kinds
    else:
        socket.sub.kinds -= kinds
    names = sorted(name for name, kind in KINDS_BY_SUBSCRIPTION.items() if kind in socket.sub.kinds)
    socket.reply({"type": "subscriptions", "subscriptions": names})
