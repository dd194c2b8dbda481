"""Three transport changes to hypercorn 0.18, installed once at start.

1. permessage-deflate: hypercorn always accepts it when offered, and browsers always offer it; zlib
   state costs tens to hundreds of KiB per socket (DESIGN.md), which 100k sockets cannot afford.
   Pulse's default is off; ``--ws-compression on`` restores hypercorn's behaviour.
2. Keepalive with a deadline: hypercorn can send pings but never notices a peer that stopped
   answering. We record the time of every frame the peer sends (pongs included) and close the
   connection with CLOSE_NO_PONG when nothing came back within interval + timeout.
3. Keep-alive as one deadline per connection: stock hypercorn cancels and starts an idle-timer task
   on every request (twice); DESIGN.md measured that glue as the main cost of a small request. We
   keep one watcher task per connection and move its deadline instead.
"""

from __future__ import annotations

import time
from typing import Any, Final

import trio
from hypercorn.events import Closed, RawData
from hypercorn.protocol import ws_stream
from hypercorn.protocol.events import StreamClosed
from hypercorn.trio import tcp_server
from wsproto.events import CloseConnection, Ping
from wsproto.extensions import Extension, PerMessageDeflate

from protocol.stream import CLOSE_NO_PONG

WRITE_TIMEOUT_S: Final = 3.0  # a socket write that cannot complete in this long closes the connection

_original_handle_events = ws_stream.WSStream._handle_events
_original_ws_handle = ws_stream.WSStream.handle
_settings: dict[str, float] = {"timeout": 20.0}


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


def set_compression(enabled: bool) -> None:
    ws_stream.PerMessageDeflate = _SafeDeflate if enabled else _NoCompression  # type: ignore[misc,attr-defined,assignment]


_original_ws_init = ws_stream.WSStream.__init__


def _ws_init(self: Any, *args: Any, **kwargs: Any) -> None:
    _original_ws_init(self, *args, **kwargs)
    # Set here, in every instance and in the same order, so CPython keeps sharing the instance
    # dict's keys between streams: attributes added later give each socket a private dict (~1 KiB).
    self.pulse_last_heard = time.monotonic()
    self.pulse_closed = None


async def _handle_events(self: Any) -> None:
    self.pulse_last_heard = time.monotonic()
    await _original_handle_events(self)


async def _ws_handle(self: Any, event: Any) -> None:
    await _original_ws_handle(self, event)
    if self.closed:
        _closed_event(self).set()  # wakes the ping loop so the connection can go at once


def _closed_event(stream: Any) -> trio.Event:
    event = stream.pulse_closed
    if event is None:
        event = stream.pulse_closed = trio.Event()
    return event


async def _send_pings(self: Any) -> None:
    interval = self.config.websocket_ping_interval
    deadline = interval + _settings["timeout"]
    closed = _closed_event(self)
    while not self.closed:
        with trio.move_on_after(interval):
            await closed.wait()
        if self.closed:
            return
        if time.monotonic() - self.pulse_last_heard > deadline:
            await self._send_wsproto_event(CloseConnection(code=CLOSE_NO_PONG, reason="no pong"))
            await self.send(StreamClosed(stream_id=self.stream_id))
            return
        await self._send_wsproto_event(Ping())


class IdleDeadline:
    """Drop-in for the TrioSingleTask a TCPServer uses as ``idle_task``.

    ``restart`` (the connection went idle) and ``stop`` (a request started) only move a deadline;
    one watcher per connection closes it when it stays idle for keep_alive_timeout, or at once
    when the server shuts down while the connection is idle.
    """

    __slots__ = ("server", "idle_since", "scope", "wake")

    def __init__(self, server: Any) -> None:
        self.server = server
        self.idle_since: float | None = None
        self.scope: trio.CancelScope | None = None
        self.wake = trio.Event()  # set when the connection goes idle

    async def restart(self, task_group: Any, action: Any) -> None:
        self.idle_since = trio.current_time()
        self.wake.set()
        if self.scope is None:
            self.scope = trio.CancelScope()
            task_group.spawn(self._watch)

    async def stop(self) -> None:
        self.idle_since = None

    def cancel(self) -> None:
        if self.scope is not None:
            self.scope.cancel()
        self.scope = self.scope or trio.CancelScope()  # no watcher may start after the connection ended

    async def _watch(self) -> None:
        assert self.scope is not None
        timeout = self.server.config.keep_alive_timeout
        terminated = self.server.context.terminated
        with self.scope:
            while True:
                since = self.idle_since
                now = trio.current_time()
                if since is not None and (now - since >= timeout or terminated._event.is_set()):
                    with trio.CancelScope(shield=True):
                        await self.server._initiate_server_close()
                    return
                self.wake = trio.Event()
                with trio.move_on_at((since if since is not None else now) + timeout):
                    if terminated._event.is_set():
                        await self.wake.wait()  # shutting down mid-request: close when it is answered
                    else:
                        await terminated.wait()


_original_protocol_send = tcp_server.TCPServer.protocol_send


async def _protocol_send(self: Any, event: Any) -> None:
    """Stock protocol_send, but the send lock is taken without a checkpoint when it is free.

    trio.Lock's ``async with`` yields to the scheduler twice even uncontended, on every write; the
    lock is only ever contended on WebSockets (pings and app frames), so try acquire_nowait first.
    """
    if not isinstance(event, RawData):
        await _original_protocol_send(self, event)
        return
    lock = self.send_lock
    try:
        lock.acquire_nowait()
    except trio.WouldBlock:
        await lock.acquire()
    try:
        # Shielded (a cancelled write would corrupt the stream) but with a deadline: a peer that
        # stopped reading must not hold this task, the lock behind it, or shutdown, forever.
        with trio.CancelScope(shield=True, deadline=trio.current_time() + WRITE_TIMEOUT_S) as scope:
            await self.stream.send_all(event.data)
        if scope.cancelled_caught:
            with trio.CancelScope(shield=True):
                await self.stream.aclose()
                await self.protocol.handle(Closed())
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        await self.protocol.handle(Closed())
    finally:
        lock.release()


_original_tcp_init = tcp_server.TCPServer.__init__
_original_read_data = tcp_server.TCPServer._read_data


def _tcp_init(self: Any, *args: Any, **kwargs: Any) -> None:
    _original_tcp_init(self, *args, **kwargs)
    self.idle_task = IdleDeadline(self)


async def _read_data(self: Any) -> None:
    try:
        await _original_read_data(self)
    finally:
        self.idle_task.cancel()


def install(*, compression: bool, ping_timeout: float) -> None:
    set_compression(compression)
    _settings["timeout"] = ping_timeout
    ws_stream.WSStream._handle_events = _handle_events  # type: ignore[method-assign]
    ws_stream.WSStream._send_pings = _send_pings  # type: ignore[method-assign]
    ws_stream.WSStream.handle = _ws_handle  # type: ignore[method-assign]
    ws_stream.WSStream.__init__ = _ws_init  # type: ignore[method-assign]
    tcp_server.TCPServer.__init__ = _tcp_init  # type: ignore[method-assign]
    tcp_server.TCPServer._read_data = _read_data  # type: ignore[method-assign]
    tcp_server.TCPServer.protocol_send = _protocol_send  # type: ignore[method-assign]
