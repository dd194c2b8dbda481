"""Transport changes to hypercorn 0.18 (trio worker), installed once at start by ``install``.

At 100k sockets every task, frame and object a connection keeps is memory (DESIGN.md: Pulse's own
state must cost almost nothing on top of hypercorn), so besides behaviour these patches remove what
a connection holds. An idle WebSocket keeps two tasks, hypercorn's reader and the ASGI app's, and
about 10 KiB in all (stock hypercorn: five tasks once Pulse's writer is counted, ~38 KiB).
Figures per idle socket are from loadtest/ws_memory.py (docs/performance.md). Each patch:

1. permessage-deflate: hypercorn always accepts it when offered, and browsers always offer it; zlib
   state costs tens to hundreds of KiB per socket (DESIGN.md), which 100k sockets cannot afford.
   Pulse's default is off; ``--ws-compression on`` restores hypercorn's behaviour, and
   ``--ws-compression no-context-takeover`` negotiates it without context takeover either way.
2. Timers without tasks per connection: one timer wheel per server for keep-alive deadlines and
   one for WebSocket pings (``_Wheel``), each a task that runs only while it has entries.
3. Connections (``TCPServer``): the app tasks of a connection run in the server's connection
   nursery, counted (``ConnectionTasks``), instead of in a nursery per connection (~1.1 KiB); the
   reader calls recv and wait_readable itself instead of SocketStream.receive_some under a
   ``fail_after(inf)`` (~1.5 KiB less while parked); keep-alive is a deadline in the server's wheel
   (stock restarts a timer task twice per request: DESIGN.md measured that glue as the main cost
   of a small request); writes take a slim lock without a checkpoint when it is free, and a write
   that cannot complete in WRITE_TIMEOUT_S closes the connection instead of holding it forever.
4. WebSockets: the app's receive side is a ``WebSocketInbox`` instead of a trio memory channel
   (~1.7 KiB), one the app can be woken from (``wake``), so one task both reads and writes
   (server/ws.py). Keepalive with a deadline: stock hypercorn runs a ping task per socket (~4 KiB)
   and never notices a peer that stopped answering; here the server's ping wheel asks each socket's
   inbox, every interval, to send a ping, or, when nothing (pongs included) came from the peer
   within interval + timeout, to close with CLOSE_NO_PONG. The inbox does it in the app's task
   the next time that task waits, which a Pulse WebSocket handler does whenever it is idle; the
   wheel itself never writes, so a slow peer cannot hold it. After the handshake, what it leaves
   behind is dropped (~2 KiB): the parsed handshake, the h11 connection of an upgraded HTTP/1.1
   connection (it only passes bytes through from then on), the pause event, wsproto's deque.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final

import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.events import Closed, RawData
from hypercorn.protocol import ProtocolWrapper, ws_stream
from hypercorn.protocol.events import Response, StreamClosed
from hypercorn.protocol.h11 import H11Protocol, H11WSConnection
from hypercorn.trio import task_group, tcp_server
from hypercorn.typing import ConnectionState
from hypercorn.utils import parse_socket_addr
from trio.lowlevel import Abort, Task
from wsproto.events import CloseConnection, Ping
from wsproto.extensions import Extension, PerMessageDeflate

from protocol.stream import CLOSE_NO_PONG

WRITE_TIMEOUT_S: Final = 3.0  # a socket write that cannot complete in this long closes the connection
TICKS_PER_PERIOD: Final = 8  # timer wheel resolution: a ping or an idle close is up to period/8 late
MAX_TICK_S: Final = 1.0
WAKEUP: Final = {"type": "pulse.wakeup"}  # what WebSocketInbox.receive returns after wake()

_settings: dict[str, float] = {"timeout": 20.0}


# 1. permessage-deflate ---------------------------------------------------------------------------


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


def set_compression(mode: bool | str) -> None:
    """``off`` (or False): never negotiated; ``on`` (or True): hypercorn's permessage-deflate, whose
    zlib state costs ~100 KiB per socket once it has sent a message; ``no-context-takeover``."""
    name = mode if isinstance(mode, str) else ("on" if mode else "off")
    ws_stream.PerMessageDeflate = COMPRESSION_MODES[name]  # type: ignore[misc,attr-defined,assignment]


# 2. server state and timer wheels ----------------------------------------------------------------


class _ServerState:
    """What the connections of one hypercorn ``serve()`` share, kept on its WorkerContext."""

    __slots__ = ("nursery", "context", "idle", "pings", "addresses")

    def __init__(self, nursery: trio.Nursery, context: Any) -> None:
        self.nursery = nursery  # the server's connection nursery: lives until the server stops
        self.context = context
        self.idle: _Wheel | None = None  # idle keep-alive connections (IdleDeadline)
        self.pings: _Wheel | None = None  # open WebSockets (WebSocketInbox)
        self.addresses: dict[Any, Any] = {}  # the listening addresses, one tuple shared by connections


def _server_state(context: Any) -> _ServerState:
    """The state of the server ``context`` belongs to; made by its first connection, whose task
    hypercorn runs in the server's connection nursery (trio.serve_listeners' handler nursery)."""
    state = getattr(context, "pulse_state", None)
    if state is None:
        nursery = trio.lowlevel.current_task().parent_nursery
        assert nursery is not None
        state = context.pulse_state = _ServerState(nursery, context)
    return state


class _Wheel:
    """Entries (objects with a ``slot`` attribute) due at a time, in slots of ``tick`` seconds.

    ``expire(entry, now)`` is called for each entry whose slot has come, in the wheel's one task,
    which runs only while there are entries and ends when the server shuts down, after calling
    ``at_shutdown`` for each entry left. Every entry is added with the same period, so slots come
    in the order they were added and a slot costs a set entry.
    """

    __slots__ = ("state", "tick", "slots", "running", "expire", "at_shutdown")

    def __init__(self, state: _ServerState, period: float, expire: Callable[[Any, float], None],
                 at_shutdown: Callable[[Any], None] | None = None) -> None:
        self.state = state
        self.tick = min(MAX_TICK_S, period / TICKS_PER_PERIOD)
        self.slots: dict[int, set[Any]] = {}
        self.running = False
        self.expire = expire
        self.at_shutdown = at_shutdown

    def add(self, entry: Any, due: float) -> None:
        slot = entry.slot = math.ceil(due / self.tick)
        members = self.slots.get(slot)
        if members is None:
            self.slots[slot] = {entry}
        else:
            members.add(entry)
        if not self.running:
            self.running = True
            self.state.nursery.start_soon(self._run)

    def remove(self, entry: Any) -> None:
        slot = entry.slot
        if slot:
            entry.slot = 0
            members = self.slots.get(slot)
            if members is not None:
                members.discard(entry)
                if not members:
                    del self.slots[slot]

    async def _run(self) -> None:
        terminated = self.state.context.terminated
        try:
            while self.slots and not terminated.is_set():
                slot = min(self.slots)
                with trio.move_on_at(slot * self.tick):
                    await terminated.wait()
                if terminated.is_set():
                    break
                now = trio.current_time()
                for entry in self.slots.pop(slot, ()):
                    entry.slot = 0
                    self.expire(entry, now)
            if terminated.is_set():
                left = [entry for members in self.slots.values() for entry in members]
                self.slots.clear()
                if self.at_shutdown is not None:
                    for entry in left:
                        entry.slot = 0
                        self.at_shutdown(entry)
        finally:
            self.running = False


# 3. connections ----------------------------------------------------------------------------------


class ConnectionTasks:
    """Drop-in for the TaskGroup (a trio nursery) hypercorn opens per connection: the app tasks of a
    connection run in the server's connection nursery instead, and the connection waits for them
    (``wait_done``) before it closes, as it waited for its nursery. A nursery held for the whole
    life of every connection costs ~1.1 KiB; this, ~70 bytes.

    ``spawn_app`` runs the app in one frame instead of hypercorn's ``_handle`` and ASGIWrapper,
    with ``_handle``'s error handling, and for a WebSocket its receive side is a WebSocketInbox.
    """

    __slots__ = ("nursery", "running", "waiter")

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.running = 0
        self.waiter: Task | None = None

    async def spawn_app(self, app: Any, config: Any, scope: Any, send: Any) -> Any:
        receive, put = _app_channel(config, scope, send)
        self.running += 1
        self.nursery.start_soon(self._run_app, app, config, scope, receive, send)
        return put

    def spawn(self, func: Any, *args: Any) -> None:
        self.running += 1
        self.nursery.start_soon(self._run, func, args)

    async def wait_done(self) -> None:
        while self.running:
            self.waiter = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort)

    async def _run_app(self, app: Any, config: Any, scope: Any, receive: Any, send: Any) -> None:
        try:
            try:
                if isinstance(app, ASGIWrapper):
                    await app.app(scope, receive, send)
                else:
                    await app(scope, receive, send, trio.to_thread.run_sync, trio.from_thread.run)
            except trio.Cancelled:
                raise
            except BaseExceptionGroup as error:
                _, others = error.split(trio.Cancelled)
                if others is None:
                    raise
                await config.log.exception("Error in ASGI Framework")
            except Exception:
                await config.log.exception("Error in ASGI Framework")
            finally:
                await send(None)
        finally:
            self._done()

    async def _run(self, func: Any, args: Any) -> None:
        try:
            await func(*args)
        finally:
            self._done()

    def _done(self) -> None:
        self.running -= 1
        waiter = self.waiter
        if not self.running and waiter is not None:
            self.waiter = None
            trio.lowlevel.reschedule(waiter)

    def _abort(self, _: Any) -> Abort:
        self.waiter = None
        return Abort.SUCCEEDED


def _app_channel(config: Any, scope: Any, send: Any) -> tuple[Any, Any]:
    """The app's receive and hypercorn's put: a WebSocketInbox for a WebSocket, else stock's channel."""
    if scope["type"] == "websocket":
        stream = send.__self__  # hypercorn passes its WSStream's bound app_send
        inbox = stream.pulse_inbox = WebSocketInbox(stream, config.max_app_queue_size)
        scope["extensions"]["pulse.inbox"] = inbox  # for the app: inbox.wake()
        return inbox.receive, inbox.put
    put_channel, receive_channel = trio.open_memory_channel[Any](config.max_app_queue_size)
    return receive_channel.receive, put_channel.send


async def _spawn_app(self: Any, app: Any, config: Any, scope: Any, send: Any) -> Any:
    """Stock TaskGroup.spawn_app (TLS connections keep hypercorn's TaskGroup) with _app_channel."""
    receive, put = _app_channel(config, scope, send)
    self._nursery.start_soon(task_group._handle, app, config, scope, receive, send, trio.to_thread.run_sync,
                             trio.from_thread.run)
    return put


class IdleDeadline:
    """Drop-in for the TrioSingleTask a TCPServer uses as ``idle_task``, with no task of its own.

    ``restart`` (the connection went idle) puts the connection in the server's idle wheel, due at
    now + keep_alive_timeout; ``stop`` (a request started) takes it out. When it comes due, or the
    server shuts down while it is idle, its socket is closed, as stock hypercorn's idle timer does
    (the reader then sees the connection closed and ends it).
    """

    __slots__ = ("server", "slot")

    def __init__(self, server: Any) -> None:
        self.server = server
        self.slot = 0

    async def restart(self, task_group: Any, action: Any) -> None:
        server = self.server
        if server.context.terminated.is_set():
            _close_idle(self)  # shutting down: an idle connection goes now
            return
        state = _server_state(server.context)
        wheel = state.idle
        if wheel is None:
            wheel = state.idle = _Wheel(state, server.config.keep_alive_timeout, _expire_idle, _close_idle)
        wheel.remove(self)
        wheel.add(self, trio.current_time() + server.config.keep_alive_timeout)

    async def stop(self) -> None:
        self.forget()

    def forget(self) -> None:
        if self.slot:
            wheel = _server_state(self.server.context).idle
            if wheel is not None:
                wheel.remove(self)


def _expire_idle(idle: IdleDeadline, now: float) -> None:
    _close_idle(idle)


def _close_idle(idle: IdleDeadline) -> None:
    stream = idle.server.stream
    sock = getattr(stream, "socket", None) or stream.transport_stream.socket  # TLS: close the TCP socket
    sock.close()  # wakes the reader (trio's notify_closing), which ends the connection


class _SendLock:
    """TCPServer.send_lock: a FIFO lock for the connection's writers (the app's task, and the reader
    answering a ping), without trio.Lock's ParkingLot (~330 bytes per connection)."""

    __slots__ = ("held", "waiters")

    def __init__(self) -> None:
        self.held = False
        self.waiters: list[Task] | None = None

    def acquire_nowait(self) -> None:
        if self.held:
            raise trio.WouldBlock
        self.held = True

    async def acquire(self) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self.held:
            self.held = True
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        task = trio.lowlevel.current_task()
        if self.waiters is None:
            self.waiters = [task]
        else:
            self.waiters.append(task)

        def abort(_: Any) -> Abort:
            assert self.waiters is not None
            self.waiters.remove(task)
            return Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)  # release() handed the lock over

    def release(self) -> None:
        if self.waiters:
            trio.lowlevel.reschedule(self.waiters.pop(0))  # still held: now by that task
            if not self.waiters:
                self.waiters = None
        else:
            self.held = False

    def locked(self) -> bool:
        return self.held


_original_tcp_init = tcp_server.TCPServer.__init__
_original_run = tcp_server.TCPServer.run
_original_protocol_send = tcp_server.TCPServer.protocol_send


def _tcp_init(self: Any, *args: Any, **kwargs: Any) -> None:
    _original_tcp_init(self, *args, **kwargs)
    self.idle_task = IdleDeadline(self)
    self.send_lock = _SendLock()
    stream = self.stream  # the plain TCP socket, written to directly by _protocol_send (not TLS)
    self.pulse_socket = getattr(stream.socket, "_sock", None) if isinstance(stream, trio.SocketStream) else None


async def _run(self: Any) -> None:
    """Stock ``TCPServer.run`` for plain TCP (TLS keeps hypercorn's), with ConnectionTasks instead
    of a nursery per connection, and without probing ``do_handshake`` (whose AttributeError on a
    plain socket also keeps a frame object alive in every connection)."""
    stream = self.stream
    if not isinstance(stream, trio.SocketStream):
        await _original_run(self)
        return
    try:
        state = _server_state(self.context)
        socket = stream.socket
        client = parse_socket_addr(socket.family, socket.getpeername())
        server = parse_socket_addr(socket.family, socket.getsockname())
        server = state.addresses.setdefault(server, server)
        tasks = self._task_group = ConnectionTasks(state.nursery)
        self.protocol = ProtocolWrapper(self.app, self.config, self.context, tasks,  # type: ignore[arg-type]
                                        ConnectionState(self.state), False, client, server, self.protocol_send,
                                        "http/1.1")
        await self.protocol.initiate()
        await self.idle_task.restart(tasks, None)
        await self._read_data()
        await tasks.wait_done()
    except OSError:
        pass
    finally:
        await self._close()
        # Nothing uses them any more; each is in a reference cycle with this TCPServer (its bound
        # protocol_send, its ``server``), which would wait for the cyclic GC to free the whole
        # connection. At 20k sockets per process that GC runs rarely (main.py's thresholds).
        self.protocol = None
        self.idle_task = None


async def _read_data(self: Any) -> None:
    """Stock ``_read_data``, reading a plain TCP socket with trio's primitives directly (recv, and
    wait_readable when there is nothing) instead of SocketStream.receive_some under
    ``fail_after(read_timeout or inf)``. Same behaviour, but a parked reader, which every idle
    WebSocket has, holds no cancel scope, no error-translating context manager and three coroutine
    frames fewer."""
    stream = self.stream
    timeout = self.config.read_timeout
    raw = self.pulse_socket if timeout is None else None  # None: TLS or a read timeout, hypercorn's way
    try:
        while True:
            try:
                if raw is None:
                    with trio.fail_after(timeout or math.inf):
                        data = bytes(await stream.receive_some(tcp_server.MAX_RECV))
                else:
                    try:
                        data = raw.recv(tcp_server.MAX_RECV)
                    except BlockingIOError:
                        data = None
                    if data is None:
                        # waited for here, not in the except block: parked there, the error and its
                        # traceback would stay alive for as long as the connection is idle
                        await trio.lowlevel.wait_readable(raw)
                        continue
                    await trio.lowlevel.checkpoint()  # as trio's recv: a busy peer cannot starve others
            except (trio.ClosedResourceError, trio.BrokenResourceError, trio.TooSlowError, OSError):
                break
            await self.protocol.handle(RawData(data))  # type: ignore[arg-type]
            if data == b"":
                break
        await self.protocol.handle(Closed())
    finally:
        self.idle_task.forget()


async def _protocol_send(self: Any, event: Any) -> None:
    """Stock protocol_send, but a write is first tried at once: the send lock is taken without a
    checkpoint when it is free, and the bytes go to the socket with one non-blocking send. Only
    what the socket cannot take now (the peer is slow) is sent the async way, shielded (a cancelled
    write would corrupt the stream) under a deadline. Stock takes trio.Lock's ``async with`` (two
    schedule points even uncontended) and SocketStream.send_all (one more) on every write: a
    write in progress then holds ~5 KiB of frames and scopes, and when the ping wheel wakes a few
    thousand sockets at once, that peak stays in the process's RSS."""
    if not isinstance(event, RawData):
        await _original_protocol_send(self, event)
        return
    lock = self.send_lock
    if lock.held:
        await lock.acquire()
    else:
        lock.held = True
    try:
        data: bytes | memoryview = event.data
        raw = self.pulse_socket
        if raw is not None:
            try:
                sent = raw.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                raise trio.BrokenResourceError from None  # reset, or closed under us
            if sent == len(data):
                return
            data = memoryview(data)[sent:]
        # The peer must not hold this task, the lock behind it, or shutdown, forever.
        with trio.CancelScope(shield=True, deadline=trio.current_time() + WRITE_TIMEOUT_S) as scope:
            await self.stream.send_all(data)
        if scope.cancelled_caught:
            with trio.CancelScope(shield=True):
                await self.stream.aclose()
                await self.protocol.handle(Closed())
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        await self.protocol.handle(Closed())
    finally:
        lock.release()


# 4. WebSockets -----------------------------------------------------------------------------------

_PING, _NO_PONG = 1, 2


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


def _expire_ping(inbox: WebSocketInbox, now: float) -> None:
    """A socket's ping is due: ping it again in an interval, or close it if it has been silent."""
    stream = inbox.stream
    if stream.closed:
        return
    interval = stream.config.websocket_ping_interval
    if now - inbox.heard > interval + _settings["timeout"]:
        inbox.want_ping(_NO_PONG)
        return
    inbox.want_ping(_PING)
    wheel = _server_state(stream.context).pings
    assert wheel is not None
    wheel.add(inbox, now + interval)


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
_original_ws_init = ws_stream.WSStream.__init__
_original_handle_events = ws_stream.WSStream._handle_events
_original_ws_handle = ws_stream.WSStream.handle


def _ws_init(self: Any, *args: Any, **kwargs: Any) -> None:
    _original_ws_init(self, *args, **kwargs)
    # Set here, in every instance and in the same order, so CPython keeps sharing the instance
    # dict's keys between streams: attributes added later give each socket a private dict (~1 KiB).
    self.pulse_inbox = None


async def _handle_events(self: Any) -> None:
    inbox = self.pulse_inbox
    if inbox is not None:
        inbox.heard = trio.current_time()  # any frame from the peer proves it is alive
    await _original_handle_events(self)


async def _ws_handle(self: Any, event: Any) -> None:
    await _original_ws_handle(self, event)
    inbox = self.pulse_inbox
    if self.closed and inbox is not None:
        if inbox.slot:
            wheel = _server_state(self.context).pings
            if wheel is not None:
                wheel.remove(inbox)
        # Closed: hypercorn ignores everything from now on. Break the reference cycles (stream <->
        # inbox, wsproto's frame protocol <-> its parser generator) so the connection is freed as
        # soon as the app's task lets go of the inbox, not at the next full GC.
        self.pulse_inbox = None
        self.app_put = None
        connection = getattr(self, "connection", None)
        if connection is not None:
            connection._proto._parse_more.close()


async def _accept(self: Any, message: Any) -> None:
    """Stock ``WSStream._accept``, with the socket put in the server's ping wheel instead of a ping
    task of its own, and what the handshake leaves behind dropped."""
    self.state = ws_stream.ASGIWebsocketState.CONNECTED
    status_code, headers, self.connection = self.handshake.accept(message.get("subprotocol"), message.get("headers", []))
    await self.send(Response(stream_id=self.stream_id, status_code=status_code, headers=headers))
    await self.config.log.access(self.scope, {"status": status_code, "headers": []}, ws_stream.time() - self.start_time)
    self.handshake = _ACCEPTED
    self.connection._events = _EventQueue()
    protocol = getattr(self.send, "__self__", None)  # the H11Protocol whose stream_send this is
    if isinstance(protocol, H11Protocol) and isinstance(protocol.connection, H11WSConnection):
        protocol.connection.h11_connection = None  # type: ignore[assignment]
        protocol.can_read = _NO_WAIT
    interval = self.config.websocket_ping_interval
    if interval is not None and self.pulse_inbox is not None and not self.closed:
        state = _server_state(self.context)
        if state.pings is None:
            state.pings = _Wheel(state, interval, _expire_ping)
        state.pings.add(self.pulse_inbox, trio.current_time() + interval)


def install(*, compression: bool | str, ping_timeout: float) -> None:
    set_compression(compression)
    _settings["timeout"] = ping_timeout
    task_group.TaskGroup.spawn_app = _spawn_app  # type: ignore[method-assign]
    tcp_server.TCPServer.__init__ = _tcp_init  # type: ignore[method-assign]
    tcp_server.TCPServer.run = _run  # type: ignore[method-assign]
    tcp_server.TCPServer._read_data = _read_data  # type: ignore[method-assign]
    tcp_server.TCPServer.protocol_send = _protocol_send  # type: ignore[method-assign]
    ws_stream.WSStream.__init__ = _ws_init  # type: ignore[method-assign]
    ws_stream.WSStream._handle_events = _handle_events  # type: ignore[method-assign]
    ws_stream.WSStream.handle = _ws_handle  # type: ignore[method-assign]
    ws_stream.WSStream._accept = _accept  # type: ignore[method-assign]
