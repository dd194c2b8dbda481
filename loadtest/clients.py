"""The load generator's network clients: TCP with a chosen source address, a keep-alive HTTP/1.1
pool, an SSE reader, and WebSocket connections (trio-websocket) opened over our own TCP streams.

Why not httpx for the hot path: on this machine httpx on trio costs ~1.1 ms of CPU per small POST,
h11 over a trio stream ~0.19 ms (measured with 20 concurrent keep-alive clients). The generator
shares a 2-core machine with the server, so every request it sends through httpx would take CPU
from the server it is measuring. httpx is used for the few one-off calls (health, server metrics).

Every failure a simulated user can meet is raised as ``LoadError(reason)``; ``reason`` is the short
key the report counts failures by (``connect_refused``, ``http_503``, ``ws_rejected_503``, ...).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any, Final
from urllib.parse import quote

import h11
import trio
import trio_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import Ping

from loadtest.plan import Target

CONNECT_TIMEOUT_S: Final = 10.0
REQUEST_TIMEOUT_S: Final = 15.0
RECEIVE_BYTES: Final = 65536
WS_QUEUE: Final = 64  # messages trio-websocket buffers per socket before it stops reading (TCP pushes back)
WS_MAX_MESSAGE: Final = 16 * 1024 * 1024
USER_AGENT: Final = b"pulse-loadtest/1"


class LoadError(Exception):
    """A failure a simulated user met; ``reason`` is what the report counts it under."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class SourceAddresses:
    """Round robin over the local addresses to connect from (empty: the kernel chooses)."""

    def __init__(self, addresses: Sequence[str], start: int = 0) -> None:
        self.addresses = list(addresses)
        self._turn = itertools.count(start)

    def next(self) -> str | None:
        if not self.addresses:
            return None
        return self.addresses[next(self._turn) % len(self.addresses)]


async def connect_tcp(target: Target, sources: SourceAddresses) -> trio.SocketStream:
    """A TCP stream to the target from the next source address; raises LoadError."""
    local = sources.next()
    try:
        with trio.fail_after(CONNECT_TIMEOUT_S):
            return await trio.open_tcp_stream(target.ip, target.port, local_address=local)
    except trio.TooSlowError:
        raise LoadError("connect_timeout") from None
    except OSError as exc:
        raise LoadError(_os_reason(exc), str(exc)) from None


def _os_reason(exc: OSError) -> str:
    text = str(exc).lower()
    if "refused" in text:
        return "connect_refused"
    if "cannot assign requested address" in text or "address not available" in text:
        return "connect_no_ports"  # this source address ran out of ephemeral ports
    if "too many open files" in text:
        return "connect_too_many_files"
    return "connect_error"


def with_key(path: str, target: Target) -> str:
    """Browsers cannot set headers on WebSocket/EventSource: the key goes in the query string."""
    if not target.key:
        return path
    return f"{path}{'&' if '?' in path else '?'}key={quote(target.key)}"


# -- HTTP/1.1 ---------------------------------------------------------------------------------------


class HttpConnection:
    """One keep-alive HTTP/1.1 connection (h11 over a trio stream)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)
        self.used = False  # has answered a request: if it fails now, the server may have closed it

    async def request(self, method: bytes, path: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, bytes]:
        conn = self.h11
        data = conn.send(h11.Request(method=method, target=path, headers=headers))
        data += conn.send(h11.Data(data=body)) if body else b""
        data += conn.send(h11.EndOfMessage())
        await self.stream.send_all(data)
        status, chunks = 0, []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await self.stream.receive_some(RECEIVE_BYTES))
            elif type(event) is h11.Response:
                status = event.status_code
            elif type(event) is h11.Data:
                chunks.append(event.data)
            elif type(event) is h11.EndOfMessage:
                if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                    conn.start_next_cycle()
                return status, b"".join(chunks)
            elif type(event) is h11.ConnectionClosed:
                raise LoadError("http_closed", "the server closed the connection before answering")

    @property
    def reusable(self) -> bool:
        return self.h11.our_state is h11.IDLE and self.h11.their_state is h11.IDLE


class HttpPool:
    """At most ``size`` keep-alive connections shared by all users of a process.

    A browser would hold its own connection; the pool stands for many browsers' connections, so a
    visitor's request may wait for a free one, and that wait counts in the latency it measures.
    """

    def __init__(self, target: Target, sources: SourceAddresses, size: int) -> None:
        self.target = target
        self.sources = sources
        self._slots = trio.Semaphore(size)
        self._idle: list[HttpConnection] = []
        self._base = [(b"host", target.host_header.encode()), (b"user-agent", USER_AGENT)]
        if target.key:
            self._base.append((b"authorization", b"Bearer " + target.key.encode()))

    async def request(self, method: bytes, path: str, body: bytes = b"", *, content_type: bytes = b"application/json",
                      headers: Sequence[tuple[bytes, bytes]] = ()) -> tuple[int, bytes]:
        """Send one request and return (status, body); raises LoadError (timeouts included)."""
        all_headers = [*self._base, *headers]
        if body or method == b"POST":
            all_headers += [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
        target = path.encode()
        async with self._slots:
            try:
                with trio.fail_after(REQUEST_TIMEOUT_S):
                    return await self._send(method, target, all_headers, body)
            except trio.TooSlowError:
                raise LoadError("http_timeout") from None

    async def _send(self, method: bytes, path: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, bytes]:
        while True:
            conn = self._idle.pop() if self._idle else HttpConnection(await connect_tcp(self.target, self.sources))
            try:
                status, answer = await conn.request(method, path, headers, body)
            except (LoadError, trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError, OSError) as exc:
                await trio.aclose_forcefully(conn.stream)
                if conn.used:
                    continue  # a kept-alive connection the server had closed: retry on a new one
                if isinstance(exc, LoadError):
                    raise
                raise LoadError("http_connection_error", repr(exc)) from None
            except BaseException:
                await trio.aclose_forcefully(conn.stream)  # cancelled mid-request: unusable
                raise
            conn.used = True
            if conn.reusable:
                self._idle.append(conn)
            else:
                await trio.aclose_forcefully(conn.stream)
            return status, answer

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await trio.aclose_forcefully(conn.stream)


# -- Server-Sent Events -----------------------------------------------------------------------------


class SseStream:
    """A GET on an SSE endpoint, read message by message (``data:`` payloads; ids and comments dropped)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)
        self._buffer = bytearray()
        self._ready: list[bytes] = []

    @classmethod
    async def open(cls, target: Target, path: str, sources: SourceAddresses) -> SseStream:
        stream = await connect_tcp(target, sources)
        sse = cls(stream)
        try:
            with trio.fail_after(CONNECT_TIMEOUT_S):
                await sse._start(target, with_key(path, target))
        except trio.TooSlowError:
            await trio.aclose_forcefully(stream)
            raise LoadError("sse_connect_timeout") from None
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return sse

    async def _start(self, target: Target, path: str) -> None:
        headers = [(b"host", target.host_header.encode()), (b"accept", b"text/event-stream"),
                   (b"user-agent", USER_AGENT), (b"cache-control", b"no-cache")]
        await self.stream.send_all(self.h11.send(h11.Request(method=b"GET", target=path.encode(), headers=headers))
                                   + self.h11.send(h11.EndOfMessage()))
        while True:
            event = await self._next_event()
            if type(event) is h11.Response:
                if event.status_code != 200:
                    raise LoadError(f"sse_status_{event.status_code}")
                return

    async def _next_event(self) -> h11.Event:
        try:
            while True:
                event = self.h11.next_event()
                if event is h11.NEED_DATA:
                    self.h11.receive_data(await self.stream.receive_some(RECEIVE_BYTES))
                elif event is h11.PAUSED or type(event) in (h11.ConnectionClosed, h11.EndOfMessage):
                    raise LoadError("sse_closed", "the server ended the stream")
                else:
                    assert isinstance(event, h11.Event)
                    return event
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError, OSError) as exc:
            raise LoadError("sse_closed", repr(exc)) from None

    async def receive(self) -> bytes:
        """The next message's data (several ``data:`` lines joined by newlines)."""
        while not self._ready:
            await self._read()
        return self._ready.pop(0)

    async def receive_many(self) -> list[bytes]:
        """Every message read so far (waiting for one if there is none), oldest first."""
        while not self._ready:
            await self._read()
        ready, self._ready = self._ready, []
        return ready

    async def _read(self) -> None:
        event = await self._next_event()
        if type(event) is h11.Data:
            self._buffer += event.data
            self._split()

    def _split(self) -> None:
        """Move the complete messages of the buffer to ``_ready``. A server's write holds many
        messages under load: they are cut out in one pass, and a message of one ``data:`` line
        (Pulse's kind) takes a fast path."""
        buffer = self._buffer
        end = buffer.rfind(b"\n\n")
        if end < 0:
            return
        blocks = bytes(buffer[:end]).split(b"\n\n")
        del buffer[: end + 2]
        ready = self._ready
        for block in blocks:
            at = block.find(b"data:")
            if at >= 0 and (at == 0 or block[at - 1] == 10) and block.find(b"\n", at) < 0:
                ready.append(block[at + 5:].lstrip(b" "))  # one data line, the block's last
                continue
            data = [line[5:].lstrip(b" ") for line in block.split(b"\n") if line.startswith(b"data:")]
            if data:
                ready.append(b"\n".join(data))

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


# -- WebSocket --------------------------------------------------------------------------------------


OnFrame = Callable[[str | bytes], None]  # a whole WebSocket message, as it arrives


class _Direct:
    """Stands for the send side of trio-websocket's message queue: each whole message goes to
    ``on_frame`` in the reader task as it is read, instead of into a queue that another task reads.

    trio-websocket hands a message from its reader task to the user's task through a memory
    channel: one more trip through trio's scheduler per frame. With the generator's loop busy (200
    dashboards at 200,000 deliveries/s) that trip added ~8 ms at p50 and ~20 ms at p99 to what the
    WebSocket dashboards measured, against the same server's SSE stream and against a one-task
    client (the e2e probe in docs/performance.md). Closing it still closes the real channel, so
    ``get_message`` ends with ConnectionClosed as before."""

    __slots__ = ("channel", "on_frame", "on_end", "closed")

    def __init__(self, channel: trio.MemorySendChannel[Any], on_frame: OnFrame, on_end: Callable[[], None]) -> None:
        self.channel = channel
        self.on_frame = on_frame
        self.on_end = on_end
        self.closed = False

    async def send(self, message: str | bytes) -> None:
        if self.closed:
            raise trio.ClosedResourceError  # as the channel would: trio-websocket drops the message
        self.on_frame(message)

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            self.on_end()
        await self.channel.aclose()

    async def __aenter__(self) -> _Direct:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class WebSocket(trio_websocket.WebSocketConnection):
    """trio-websocket's connection, with its messages dispatched in its reader task (``_Direct``)
    when opened with ``on_frame``, its TCP socket closed when its reader ends, and without one crash
    (trio-websocket issue #184, still open in 0.12): a server ping that arrives after our close
    frame went out (we closed, the server pinged meanwhile) makes its reader task answer with a
    pong wsproto refuses to send in LOCAL_CLOSING; the reader dies with LocalProtocolError
    ("simulated user failed unexpectedly", counted as error_LocalProtocolError), takes the user's
    nursery with it, and the close handshake never completes. RFC 6455 owes no pong once we sent
    Close: skip it, and the reader goes on to read the server's close as usual."""

    async def _handle_ping_event(self, event: Ping) -> None:
        if self._wsproto.state is not ConnectionState.OPEN:
            return
        await super()._handle_ping_event(event)

    async def _reader_task(self) -> None:
        try:
            await super()._reader_task()
        finally:
            # When the server closed first, trio-websocket leaves our TCP socket to the garbage
            # collector (its aclose returns early), which the runner keeps frozen during a run.
            await self._close_stream()


async def open_websocket(nursery: trio.Nursery, target: Target, path: str, sources: SourceAddresses,
                         *, subprotocols: Sequence[str] = (), on_frame: OnFrame | None = None,
                         on_end: Callable[[], None] = lambda: None) -> WebSocket:
    """A WebSocket from the next source address. Its reader task runs in ``nursery``; a refused
    handshake raises ``trio_websocket.ConnectionRejected`` there (the caller's nursery ends with it).
    With ``on_frame``, every message is handed to it by the reader task as it arrives (from the
    first one, sent before the handshake returns) and ``on_end`` is called once the socket is
    closed; ``get_message`` then only raises ConnectionClosed at the end. Raises LoadError on
    connect and handshake timeouts."""
    stream = await connect_tcp(target, sources)
    try:
        with trio.fail_after(CONNECT_TIMEOUT_S):
            # trio_websocket.wrap_client_stream, with the connection class above
            connection = WebSocket(
                stream, WSConnection(ConnectionType.CLIENT), host=target.host_header, path=with_key(path, target),
                client_subprotocols=list(subprotocols), message_queue_size=WS_QUEUE,
                max_message_size=WS_MAX_MESSAGE, receive_buffer_size=RECEIVE_BYTES,
            )
            if on_frame is not None:
                connection._send_channel = _Direct(connection._send_channel, on_frame, on_end)  # type: ignore[assignment]
            nursery.start_soon(connection._reader_task)
            await connection._open_handshake.wait()
            return connection
    except trio.TooSlowError:
        await trio.aclose_forcefully(stream)
        raise LoadError("ws_handshake_timeout") from None
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
