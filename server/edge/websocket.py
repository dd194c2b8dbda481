"""WebSockets on hypercorn's protocol classes, as Pulse serves them (server/edge/server.py).

At 100k sockets every task, frame and object a connection keeps is memory (DESIGN.md: Pulse's own
state must cost almost nothing on top of hypercorn). hypercorn's WSStream runs a ping task per
socket (~4 KiB), never notices a peer that stopped answering, keeps the parsed handshake and
wsproto's deque for the socket's lifetime, and accepts permessage-deflate whenever it is offered
(browsers always offer it; zlib state costs ~100 KiB per socket). ``PulseWSStream`` is
hypercorn's WSStream with those four things changed; ``use_pulse_websockets`` makes hypercorn's
HTTP/1.1 and HTTP/2 protocols create it, and selects the deflate mode.

- The app's receive side is a ``WebSocketInbox`` instead of a trio memory channel (~1.7 KiB), one
  the app can be woken from (``wake``), so one task both reads and writes (server/ws.py).
- Keepalive with a deadline: the edge's ping wheel (server/edge/wheel.py) asks each socket's inbox,
  every interval, to send a ping, or, when nothing (pongs included) came from the peer within
  interval + timeout, to close with CLOSE_NO_PONG. The inbox does it in the app's task the next time
  that task waits, which a Pulse WebSocket handler does whenever it is idle; the wheel itself never
  writes, so a slow peer cannot hold it.
- After the handshake, what it leaves behind is dropped (~2 KiB): the parsed handshake, the h11
  connection of an upgraded HTTP/1.1 connection (it only passes bytes through from then on), the
  pause event, wsproto's deque.

The overridden methods are hypercorn 0.18's (pyproject pins hypercorn below 0.19); the
``--edge hypercorn`` fallback serves WebSockets with none of this (server/edge/stock.py).
"""

from __future__ import annotations

from typing import Any, Final

import trio
from hypercorn.protocol import h2, h11, ws_stream
from hypercorn.protocol.events import Response, StreamClosed
from hypercorn.protocol.h11 import H11Protocol, H11WSConnection
from trio.lowlevel import Abort, Task
from wsproto.events import CloseConnection, Ping
from wsproto.extensions import Extension, PerMessageDeflate

from protocol.stream import CLOSE_NO_PONG

WAKEUP: Final = {"type": "pulse.wakeup"}  # what WebSocketInbox.receive returns after wake()
# The ping wheel's tick: a ping or a no-pong close is up to one tick late. Short, so each tick wakes
# few sockets: with 1 s ticks, 16,700 sockets on a worker pinged every 25 s came due ~670 at a time,
# a burst of writes and of pongs that held up every other task of the worker for its duration (the
# own-session latency tail with 100k sockets held, docs/performance.md); 50 ms ticks wake ~35.
PING_TICK_S: Final = 0.05

# permessage-deflate ------------------------------------------------------------------------------


class _NoCompression(Extension):
    """An extension no client offers, so the deflate handshake never matches."""

    name = "x-pulse-no-compression"

    def offer(self) -> bool:
        return False

    def accept(self, offer: str) -> None:
        return None


class _SafeDeflate(PerMessageDeflate):
    """permessage-deflate that declines a malformed offer instead of raising inside hypercorn's
    accept (which would take the whole server down)."""

    def accept(self, offer: str) -> str | bool | None:
        try:
            return super().accept(offer)
        except ValueError:
            return None


class _DeflatePerMessage(_SafeDeflate):
    """permessage-deflate with no context takeover either way (RFC 7692 lets the server require
    both): wsproto then drops its zlib objects after every message, so an idle socket holds no zlib
    state. Compression is per message only (less effective on small messages), and creating the
    zlib state per message costs CPU on every frame sent."""

    def __init__(self) -> None:
        super().__init__(client_no_context_takeover=True, server_no_context_takeover=True)


COMPRESSION_MODES: Final = {"off": _NoCompression, "on": _SafeDeflate, "no-context-takeover": _DeflatePerMessage}


# the app's inbox and the ping wheel's entries -----------------------------------------------------

_PING, _NO_PONG = 1, 2
_settings: dict[str, float] = {"timeout": 20.0}  # the pong deadline after a ping (--ws-ping-timeout)


class WebSocketInbox:
    """The ASGI receive side of one WebSocket (``put`` is hypercorn's ``app_put``).

    One consumer (the app's task) and one producer (hypercorn's reader; only the final
    ``websocket.disconnect`` may come from elsewhere, and it never waits). ``receive`` also sends
    the pings and the no-pong close the ping wheel asks for, and returns ``WAKEUP`` after ``wake``.
    """

    __slots__ = ("stream", "limit", "messages", "getter", "putter", "woken", "ping", "heard", "slot")

    def __init__(self, stream: Any, limit: int) -> None:
        self.stream = stream
        self.limit = limit
        self.messages: list[dict[str, Any]] | None = None  # None when empty: an idle socket holds no list
        self.getter: Task | None = None  # the app's task, parked in receive
        self.putter: Task | None = None  # hypercorn's reader, parked in put while the inbox is full
        self.woken = False
        self.ping = 0  # _PING or _NO_PONG when the ping wheel asked for one
        self.heard = trio.current_time()  # when the peer last sent anything (pongs included)
        self.slot = 0  # the ping wheel's slot this socket is in (0: none)

    async def put(self, message: dict[str, Any]) -> None:
        if message["type"] != "websocket.disconnect":
            while self.messages is not None and len(self.messages) >= self.limit:
                self.putter = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(self._abort_put)
        if self.messages is None:
            self.messages = [message]
        else:
            self.messages.append(message)
        self._wake_getter()

    async def receive(self) -> dict[str, Any]:
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            if self.ping:
                await self._send_ping()
            messages = self.messages
            if messages:
                message = messages.pop(0)
                if not messages:
                    self.messages = None
                putter = self.putter
                if putter is not None:
                    self.putter = None
                    trio.lowlevel.reschedule(putter)
                await trio.lowlevel.cancel_shielded_checkpoint()
                return message
            if self.woken:
                self.woken = False
                await trio.lowlevel.cancel_shielded_checkpoint()
                return WAKEUP
            self.getter = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort_get)

    async def wait_woken(self) -> None:
        """Wait for ``wake`` (sending the pings asked for meanwhile); client messages stay queued."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self.woken:
            if self.ping:
                await self._send_ping()
                continue
            self.getter = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort_get)
        self.woken = False
        await trio.lowlevel.cancel_shielded_checkpoint()

    def wake(self) -> None:
        """Make the app's next (or current) ``receive`` return ``WAKEUP``."""
        self.woken = True
        self._wake_getter()

    def want_ping(self, what: int) -> None:
        self.ping = max(self.ping, what)
        self._wake_getter()

    async def _send_ping(self) -> None:
        what, self.ping = self.ping, 0
        stream = self.stream
        if stream.closed:
            return
        if what == _NO_PONG:
            await stream._send_wsproto_event(CloseConnection(code=CLOSE_NO_PONG, reason="no pong"))
            await stream.send(StreamClosed(stream_id=stream.stream_id))  # puts websocket.disconnect here
        else:
            await stream._send_wsproto_event(Ping())

    def _wake_getter(self) -> None:
        getter = self.getter
        if getter is not None:
            self.getter = None
            trio.lowlevel.reschedule(getter)

    def _abort_get(self, _: Any) -> Abort:
        self.getter = None
        return Abort.SUCCEEDED

    def _abort_put(self, _: Any) -> Abort:
        self.putter = None
        return Abort.SUCCEEDED


def expire_ping(inbox: WebSocketInbox, now: float) -> None:
    """A socket's ping is due: ping it again in an interval, or close it if it has been silent."""
    stream = inbox.stream
    if stream.closed:
        return
    interval = stream.config.websocket_ping_interval
    if now - inbox.heard > interval + _settings["timeout"]:
        inbox.want_ping(_NO_PONG)
        return
    inbox.want_ping(_PING)
    stream.context.pings.add(inbox, now + interval)


class _Accepted:
    """Stands for a WSStream's Handshake once accepted: hypercorn then only reads ``accepted``."""

    accepted = True


class _NoWait:
    """Stands for H11Protocol.can_read once the connection is a WebSocket: hypercorn only waits on
    it for a paused HTTP/1.1 cycle, which a WebSocket never has, and sets it as the stream ends."""

    async def set(self) -> None:
        pass

    async def clear(self) -> None:
        pass

    async def wait(self) -> None:
        pass

    def is_set(self) -> bool:
        return True


class _EventQueue(list[Any]):
    """wsproto's Connection queues at most one event itself (the close on an aborted connection),
    in a deque of ~0.7 KiB; a list does as well, in 56 bytes."""

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)


_ACCEPTED: Final = _Accepted()
_NO_WAIT: Final = _NoWait()


# the stream --------------------------------------------------------------------------------------


class PulseWSStream(ws_stream.WSStream):
    """hypercorn's WSStream with an inbox for the app, pings from the edge's wheel, and what the
    handshake leaves behind dropped once accepted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Set here, in every instance and in the same order, so CPython keeps sharing the instance
        # dict's keys between streams: attributes added later give each socket a private dict (~1 KiB).
        self.pulse_inbox: WebSocketInbox | None = None

    async def _handle_events(self) -> None:
        inbox = self.pulse_inbox
        if inbox is not None:
            inbox.heard = trio.current_time()  # any frame from the peer proves it is alive
        await super()._handle_events()

    async def handle(self, event: Any) -> None:
        await super().handle(event)
        inbox = self.pulse_inbox
        if self.closed and inbox is not None:
            if inbox.slot:
                self.context.pings.remove(inbox)  # type: ignore[attr-defined]
            # Closed: hypercorn ignores everything from now on. Break the reference cycles (stream <->
            # inbox, wsproto's frame protocol <-> its parser generator) so the connection is freed as
            # soon as the app's task lets go of the inbox, not at the next full GC.
            self.pulse_inbox = None
            self.app_put = None  # type: ignore[assignment]
            connection = getattr(self, "connection", None)
            if connection is not None:
                connection._proto._parse_more.close()

    async def _accept(self, message: Any) -> None:
        """hypercorn's ``_accept``, with the socket put in the edge's ping wheel instead of a ping
        task of its own, and what the handshake leaves behind dropped."""
        self.state = ws_stream.ASGIWebsocketState.CONNECTED
        status_code, headers, self.connection = self.handshake.accept(message.get("subprotocol"), message.get("headers", []))
        await self.send(Response(stream_id=self.stream_id, status_code=status_code, headers=headers))
        await self.config.log.access(self.scope, {"status": status_code, "headers": []}, ws_stream.time() - self.start_time)
        self.handshake = _ACCEPTED  # type: ignore[assignment]
        self.connection._events = _EventQueue()  # type: ignore[assignment]
        protocol = getattr(self.send, "__self__", None)  # the H11Protocol whose stream_send this is
        if isinstance(protocol, H11Protocol) and isinstance(protocol.connection, H11WSConnection):
            protocol.connection.h11_connection = None  # type: ignore[assignment]
            protocol.can_read = _NO_WAIT  # type: ignore[assignment]
        interval = self.config.websocket_ping_interval
        pings = getattr(self.context, "pings", None)
        if interval is not None and pings is not None and self.pulse_inbox is not None and not self.closed:
            pings.add(self.pulse_inbox, trio.current_time() + interval)


def open_inbox(stream: Any, limit: int) -> WebSocketInbox:
    """The app's receive side of a PulseWSStream (``stream`` is it, from its bound app_send)."""
    inbox = stream.pulse_inbox = WebSocketInbox(stream, limit)
    return inbox


def ping_tick(interval: float) -> float:
    return min(PING_TICK_S, interval / 8)


def use_pulse_websockets(compression: bool | str, ping_timeout: float) -> None:
    """Make hypercorn's protocols create PulseWSStream, with ``compression`` (COMPRESSION_MODES:
    ``off`` never negotiated; ``on`` hypercorn's permessage-deflate, whose zlib state costs ~100
    KiB per socket once it has sent a message; ``no-context-takeover``)."""
    name = compression if isinstance(compression, str) else ("on" if compression else "off")
    ws_stream.PerMessageDeflate = COMPRESSION_MODES[name]  # type: ignore[misc,assignment]
    _settings["timeout"] = ping_timeout
    h11.WSStream = PulseWSStream  # type: ignore[misc]
    h2.WSStream = PulseWSStream  # type: ignore[misc]


def use_stock_websockets() -> None:
    """hypercorn's own WSStream and permessage-deflate (the ``--edge hypercorn`` fallback)."""
    ws_stream.PerMessageDeflate = PerMessageDeflate  # type: ignore[misc]
    h11.WSStream = ws_stream.WSStream  # type: ignore[misc]
    h2.WSStream = ws_stream.WSStream  # type: ignore[misc]
