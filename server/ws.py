"""WebSocket endpoints: /api/events/ws (seed 004) and /api/v1/behavioral/stream (seed 000).

One connection = one task, which reads client messages and writes the subscriber's bounded queue
to the socket: the transport's inbox (server/edge/websocket.py) wakes it when the queue has
frames. Acks and stream messages share that queue, so the task is the only sender. A socket that
sends events gets a nursery for its concurrent ingests when it sends the first one. An idle socket
costs ~12 KiB in all (loadtest/ws_memory.py), most of it hypercorn's and trio's.
JSON text frames by default; MessagePack binary frames when the client asks for ``pulse.msgpack``.
One message per frame by default; with ``?batch=1`` on the URL, the messages waiting in the queue
when the task writes go out as one ``{"type":"batch","messages":[...]}`` frame (protocol/stream.py).
Close codes: 1001 server going away (reconnect), 1008 auth, 1013 too many connections, 3008 slow.
Keepalive pings and the pong deadline are enforced by the transport, in this connection's task.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable
from typing import Any, Final

import msgspec
import trio

from actors.hub import KIND_EVENT, KINDS_BY_SUBSCRIPTION, Subscriber, encode_for
from protocol.errors import InvalidInput, error_body, from_msgspec
from protocol.privacy import DROP_RATE_LIMITED
from protocol.stream import (
    BATCH_MAX_BYTES,
    BATCH_MAX_MESSAGES,
    BATCH_PARAM,
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
    batch_json,
    batch_msgpack,
)
from server.auth import Access, AuthError, authenticate, key_from
from server.context import Pulse
from server.edge.websocket import WebSocketInbox
from server.http import Message, Receive, Scope, Send
from server.ingest_routes import now_ms
from server.params import flag_param
from server.privacy.client_ip import resolve
from server.privacy.rate_limit import RateLimited
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


async def _refuse(send: Send, status: int, reason: str, *, invalid: InvalidInput | None = None) -> None:
    """Refuse the handshake with an HTTP answer (the websocket.http.response extension). Bad input
    gets the same body as an HTTP 4xx: the parameter in ``field`` and the reason."""
    error = error_body(invalid) if invalid is not None else {"success": False, "error": {"reason": reason}}
    body = msgspec.json.encode(error)
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

    __slots__ = ("pulse", "access", "sub", "send", "inbox", "behavioral", "batch", "in_flight", "pending",
                 "_connection_id", "gpc", "ip")

    def __init__(self, pulse: Pulse, access: Access, sub: Subscriber, send: Send, inbox: WebSocketInbox,
                 behavioral: bool, batch: bool = False, gpc: bool = False, ip: str | None = None) -> None:
        self.pulse = pulse
        self.access = access
        self.sub = sub
        self.send = send
        self.inbox = inbox
        self.behavioral = behavioral
        self.batch = batch  # the client asked for ?batch=1: waiting messages go out as one frame
        self.in_flight = 0  # ingests awaiting their ack
        self.pending: _Decoded | None = None  # an ingest read before the socket had a nursery for it
        self._connection_id: str | None = None
        self.gpc = gpc  # the handshake carried Sec-GPC: 1: every event sent on the socket is stamped
        self.ip = ip  # the client's address (server/privacy/client_ip.py), for per-IP rate limits

    @property
    def connection_id(self) -> str:
        if self._connection_id is None:  # made when first told to the client: most sockets never are
            self._connection_id = "conn_" + os.urandom(8).hex()
        return self._connection_id

    def reply(self, body: Any) -> None:
        self.sub.offer(encode_for(self.sub, body))  # acks and errors share the queue (one writer)

    async def flush(self) -> bool:
        """Send every queued frame; False once the queue has ended (evicted, or shutting down).

        A batching socket sends what waits as one envelope frame (at most BATCH_MAX_MESSAGES
        messages / BATCH_MAX_BYTES), built from the encoded messages without re-encoding them;
        a message alone in the queue goes as it is."""
        frames = self.sub.frames
        send = self.send
        batch = self.batch
        while True:
            try:
                if batch:
                    group = frames.receive_many_nowait(BATCH_MAX_MESSAGES, BATCH_MAX_BYTES)
                    frame = group[0]
                    if len(group) == 1:
                        data = frame.data
                    elif frame.binary:
                        data = batch_msgpack([f.data for f in group])
                    else:
                        data = batch_json([f.data for f in group])
                else:
                    frame = frames.receive_nowait()
                    data = frame.data
            except trio.WouldBlock:
                return True
            except trio.EndOfChannel:
                return False
            if frame.binary:
                await send({"type": "websocket.send", "bytes": data})
            else:
                await send({"type": "websocket.send", "text": data.decode()})

    def end_code(self) -> int:
        return CLOSE_SLOW if self.sub.evicted else CLOSE_NORMAL


def websocket_endpoint(pulse: Pulse, scope: Scope, receive: Receive, send: Send, *, behavioral: bool) -> Awaitable[None]:
    """The socket's coroutine. A plain function that returns it, not a coroutine awaiting it: a
    wrapper frame parked above it for the socket's life would cost ~0.3 KiB per idle socket."""
    inbox = scope.get("extensions", {}).get("pulse.inbox")
    if inbox is None:  # stock hypercorn (--edge hypercorn): an inbox fed by a task of its own
        return _stock_endpoint(pulse, scope, receive, send, behavioral=behavioral)
    return _endpoint(pulse, scope, inbox, receive, send, behavioral=behavioral)


async def _stock_endpoint(pulse: Pulse, scope: Scope, receive: Receive, send: Send, *, behavioral: bool) -> None:
    from server.edge.stock import pumped_inbox

    async with pumped_inbox(receive) as inbox:
        await _endpoint(pulse, scope, inbox, inbox.receive, send, behavioral=behavioral)


async def _endpoint(pulse: Pulse, scope: Scope, inbox: WebSocketInbox, receive: Receive, send: Send, *,
                    behavioral: bool) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    query = _query(scope)
    headers = _headers(scope)
    gpc = headers.get("sec-gpc") == "1"  # Global Privacy Control (actors/privacy/consent.py)
    try:
        access = await authenticate(pulse.store, key_from(headers, query), open_access=pulse.settings.open_access)
    except AuthError as err:
        await _refuse(send, err.status, err.reason)
        return
    except StoreError:
        await _refuse(send, 503, "storage unavailable; retry later")
        return
    if not behavioral and not access.can_read:
        await _refuse(send, 403, "streaming all events needs the project's secret key")
        return
    try:
        batch = flag_param(query, BATCH_PARAM)
    except InvalidInput as err:
        await _refuse(send, err.status, err.reason, invalid=err)
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
    sub.wakeup = inbox.wake  # a queued frame wakes this connection's one task
    client = scope.get("client")
    ip = resolve(client[0] if client else None, headers.get("x-forwarded-for"), pulse.settings.trusted_proxies)
    socket = Socket(pulse, access, sub, send, inbox, behavioral, batch, gpc, ip)
    await send({"type": "websocket.accept", "subprotocol": chosen})
    # Nothing in the scope is needed after the handshake (access logging is off; hypercorn reads
    # it only before accepting), but it would hold the handshake's headers, path, query string and
    # more for the socket's lifetime: ~1.5 KiB per idle socket.
    scope.clear()
    pulse.metrics.open_websockets += 1
    pulse.hub.subscribe(sub)
    code = CLOSE_NORMAL
    scoped = Connection(sessionId=query.get("sessionId"), userId=query.get("userId"))
    del query, offered, message, headers  # not kept in this long-lived frame
    try:
        if behavioral and (scoped.sessionId or scoped.userId):
            _connect(socket, scoped)
        elif not behavioral:
            socket.reply({"type": "connected", "connectionId": socket.connection_id, "protocol": "msgpack" if msgpack else "json"})
        del scoped
        code = await _serve(socket, receive, None)
        if code == _NEEDS_NURSERY:
            code = await _serve_ingesting(socket, receive)
        if pulse.draining and not sub.evicted:
            code = CLOSE_GOING_AWAY
        elif code == _CLIENT_LEFT:
            code = CLOSE_NORMAL
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


_Decoded = tuple[Any, bytes, bool]  # a client message: (decoded, raw bytes, binary)
_CLIENT_LEFT: Final = -1
_NEEDS_NURSERY: Final = -2
_INGESTS: Final = (SendEvent, SendBatch, Track, TrackBatch)


async def _serve_ingesting(socket: Socket, receive: Receive) -> int:
    """``_serve`` with a nursery for the socket's concurrent ingests, once it sent its first event."""
    async with trio.open_nursery() as nursery:
        code = await _serve(socket, receive, nursery)
        if code == _CLIENT_LEFT:
            # The client left (or we shut down): events it sent are still being stored and
            # processed; let them finish (bounded) so a page-unload "send then close" loses
            # nothing it sent.
            with trio.move_on_after(IN_FLIGHT_GRACE_S):
                while socket.in_flight:
                    await socket.inbox.wait_woken()
        nursery.cancel_scope.cancel()
    return code


async def _serve(socket: Socket, receive: Receive, nursery: trio.Nursery | None) -> int:
    """Serve the connection in this one task: read client messages, write queued frames.

    At 100k sockets every task is memory, so a connection has no writer task: the transport's
    inbox wakes this task (``receive`` returns ``pulse.wakeup``) when the subscriber's queue has
    frames or ends, and the task sends them. Sockets that send events get a nursery for their
    concurrent ingests when they first send one (we return _NEEDS_NURSERY, with the message kept in
    ``socket.pending``); listeners never pay for it. Shutdown needs no watcher: the hub closes
    every queue, this task wakes, and the connection closes with 1001. Returns a close code, or
    _CLIENT_LEFT.
    """
    while True:
        if not await socket.flush():
            return socket.end_code()
        decoded = socket.pending
        if decoded is None:
            message = await receive()
            kind = message["type"]
            if kind == "pulse.wakeup":
                continue
            if kind == "websocket.disconnect":
                return _CLIENT_LEFT
            decoded = _decode(socket, message)
            if decoded is None:
                continue
        msg = decoded[0]
        if not isinstance(msg, _INGESTS):
            _control(socket, msg)
            continue
        if nursery is None:
            socket.pending = decoded
            return _NEEDS_NURSERY
        socket.pending = None
        # Ingest concurrently (acks carry requestId), but at most IN_FLIGHT_PER_SOCKET at once:
        # a client that floods us is not read meanwhile, and TCP pushes back on it. Frames and
        # acks keep flowing while we wait.
        while socket.in_flight >= IN_FLIGHT_PER_SOCKET:
            if not await socket.flush():
                return socket.end_code()
            await socket.inbox.wait_woken()
        socket.in_flight += 1
        nursery.start_soon(_ingest, socket, msg, decoded[1], decoded[2], socket.access.project.id)


def _decode(socket: Socket, message: Message) -> _Decoded | None:
    """The client message, or None after replying with the error."""
    data = message.get("bytes")
    raw = data if data is not None else (message.get("text") or "").encode()
    if len(raw) > MAX_CLIENT_MESSAGE:
        socket.reply(ErrorMessage(code="too_large", reason=f"message exceeds {MAX_CLIENT_MESSAGE} bytes"))
        return None
    binary = data is not None
    try:
        if socket.behavioral:
            decoded = (_behavioral_msgpack if binary else _behavioral_json).decode(raw)
        else:
            decoded = (_tracking_msgpack if binary else _tracking_json).decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        err = from_msgspec(exc)
        socket.reply(ErrorMessage(code=err.code, field=err.field, reason=err.reason))
        return None
    except RecursionError:
        socket.reply(ErrorMessage(code="malformed_json", reason="message is nested too deeply"))
        return None
    return decoded, raw, binary


def _control(socket: Socket, msg: Any) -> None:
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
        socket.reply(ErrorMessage(reason=f"unsupported message {type(msg).__name__!r}"))


def _rate_limited(socket: Socket, project: str, request_id: str | None) -> ErrorMessage | None:
    """The project's rate limits for one ingest message (each message is a request, as over HTTP):
    None when admitted, else the error answered in place of the ack (nothing of it is stored)."""
    pulse = socket.pulse
    policy = pulse.policies.get(project)
    if policy.rate_limit is None and policy.ip_rate_limit is None:
        return None
    access = socket.access
    key = access.project.secret_key if access.can_read else access.project.public_key
    try:
        pulse.limits.admit(project, policy, key, socket.ip)
    except RateLimited as err:
        pulse.metrics.drops[DROP_RATE_LIMITED] += 1
        return ErrorMessage(requestId=request_id, code="rate_limited", reason=err.reason, retryAfter=err.retry_after)
    return None


async def _ingest(socket: Socket, msg: Any, raw: bytes, binary: bool, project: str) -> None:
    answer: Any = None
    try:
        answer = _rate_limited(socket, project, getattr(msg, "requestId", None))
        if answer is not None:  # answered in the finally clause
            return
        if isinstance(msg, SendEvent):
            answer = await ingest_one(socket.pulse, project, bytes(msg.event), behavioral=True, name=None,
                                      user_id=None, request_id=msg.requestId, msgpack=binary, gpc=socket.gpc)
        elif isinstance(msg, SendBatch):
            answer = await ingest_batch(socket.pulse, project, msg.events, behavioral=True, user_id=None,
                                        request_id=msg.requestId, msgpack=binary, sent_at=msg.sentAt, gpc=socket.gpc)
        elif isinstance(msg, Track):
            answer = await ingest_one(socket.pulse, project, bytes(msg.payload), behavioral=False, name=msg.eventName,
                                      user_id=None, request_id=msg.requestId, msgpack=binary, gpc=socket.gpc)
        else:
            answer = await ingest_batch(socket.pulse, project, msg.events, behavioral=False, user_id=None,
                                        request_id=msg.requestId, msgpack=binary, batch_body=raw, gpc=socket.gpc)
    except Exception:
        # a bug of ours must cost this one message, not the connection and its other messages
        log.exception("ingest over websocket failed")
        answer = ErrorMessage(requestId=getattr(msg, "requestId", None), code="internal_error",
                              reason="internal server error")
    finally:
        socket.in_flight -= 1
        if answer is not None:
            socket.reply(answer)
        socket.inbox.wake()  # the connection may be waiting for a free slot (or for the last ingest)


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
