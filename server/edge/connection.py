"""One TCP connection of the Pulse edge: the native path first, hypercorn's protocol when needed.

A connection starts on the native path (server/edge/native.py): each request's head is parsed by
llhttp, and a hot ingest request is read, handled and answered in this task, in one write, with
no ASGI scope, task or channel. The first request that is not hot (a read route, a WebSocket
upgrade, a chunked body, anything llhttp refuses) hands the connection to hypercorn's protocol
classes with every byte from that request's first one; the connection comes back to the native
path when hypercorn has finished its requests and the peer starts a new one.

Deadlines are entries in the edge's wheel (server/edge/wheel.py), one per connection at a time:
keep-alive while idle, the whole request (head and body) while one arrives. When one passes, the
connection's socket is woken as closing; a request that did not arrive in time is answered 408.
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Any, Final

import h11
import trio
from hypercorn.events import Closed, RawData, Updated
from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.h11 import H11Protocol

from protocol.errors import InvalidInput, TooLarge, error_body
from server.edge.hosted import ConnectionTasks, SendLock
from server.edge.native import MAX_HEAD_BYTES, HeadParser, NativeRequest, response, split_target
from server.http import MAX_BODY_BYTES, encode_json
from server.ingest_routes import error_answer, hot_route

if TYPE_CHECKING:
    from server.edge.server import Edge

MAX_RECV: Final = 64 * 1024
# a request's head and body must arrive within this (else 408); the variable is for tests
REQUEST_TIMEOUT_S: Final = float(os.environ.get("PULSE_REQUEST_TIMEOUT_S") or 30.0)
WRITE_TIMEOUT_S: Final = 3.0  # a write that cannot complete in this long closes the connection
CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
POST: Final = b"POST "  # every hot route is a POST
LINGER_S: Final = 2.0  # after closing our side, how long unread input is still read and dropped
LINGER_MAX_BYTES: Final = 1024 * 1024

# what the connection's deadline in the wheel stands for
NONE, IDLE, REQUEST = 0, 1, 2


def _recv_now(sock: socket.socket) -> bytes | None:
    """The bytes the peer has sent; b"" when it closed (or the socket failed), None when nothing
    has arrived yet.

    A function of its own so that the BlockingIOError of an empty socket is raised and caught in
    this short-lived frame, never in the coroutine that then waits: a coroutine an exception passes
    through gets a frame object (the size of its frame, 0.2-0.3 KiB) that lives as long as the
    coroutine does, and one that waits inside the except block also keeps the error, its traceback
    and its message (~0.5 KiB more). An idle WebSocket's reader waits for the socket's whole life."""
    try:
        return sock.recv(MAX_RECV)
    except BlockingIOError:
        return None
    except OSError:
        return b""


class Connection:
    __slots__ = ("edge", "sock", "client", "slot", "waiting", "timed_out", "closed", "linger", "handover",
                 "protocol", "tasks", "send_lock")

    def __init__(self, edge: Edge, sock: socket.socket, client: Any) -> None:
        self.edge = edge
        self.sock = sock
        self.client = client
        self.slot = 0  # the deadline wheel's slot (0: none)
        self.waiting = NONE
        self.timed_out = False
        self.closed = False
        self.linger = False  # we end the connection while the peer may still be sending
        self.handover = b""  # the bytes hypercorn's protocol starts from
        self.protocol: ProtocolWrapper | None = None
        self.tasks: ConnectionTasks | None = None
        self.send_lock: SendLock | None = None

    async def run(self) -> None:
        try:
            data: bytes | None = b""
            while data is not None:
                # no name holds the bytes handed over while hypercorn serves (a WebSocket's handshake
                # would stay referenced for the socket's lifetime)
                data = await self._serve_native(data)
                if data is not None:
                    self.handover, data = data, None
                    data = await self._serve_hosted()
        except OSError:
            pass
        finally:
            self._deadline(NONE)
            self._shut()
            if self.linger:
                await self._linger()
            self.sock.close()

    async def _linger(self) -> None:
        """Close our side first and read what the peer still sends, for a while: closing a socket
        with unread input makes the kernel answer with a reset, which can destroy the response we
        just wrote before the peer reads it (a 400 or 413 that arrives as "connection reset")."""
        sock = self.sock
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return
        dropped = 0
        with trio.move_on_after(LINGER_S):
            while dropped < LINGER_MAX_BYTES:
                try:
                    data = sock.recv(MAX_RECV)
                except BlockingIOError:
                    try:
                        await trio.lowlevel.wait_readable(sock)
                    except trio.ClosedResourceError:
                        return
                    continue
                except OSError:
                    return
                if not data:
                    return
                dropped += len(data)

    # deadlines and closing -------------------------------------------------------------------------
    def _deadline(self, waiting: int, after: float = 0.0) -> None:
        wheel = self.edge.deadlines
        self.waiting = waiting
        if waiting == NONE:
            wheel.remove(self)
        else:
            wheel.add(self, trio.current_time() + after)

    def expire(self, now: float) -> None:
        """The wheel's call when this connection's deadline passed."""
        self.timed_out = self.waiting == REQUEST
        self._shut()

    def at_shutdown(self) -> None:
        """The server is stopping: an idle connection closes now; a request in progress finishes."""
        if self.waiting != REQUEST:
            self._shut()

    def _shut(self) -> None:
        """Wake every task waiting on this socket; the connection then ends (run's finally closes it)."""
        if not self.closed:
            self.closed = True
            trio.lowlevel.notify_closing(self.sock)

    async def _recv(self, *, wait_first: bool = False) -> bytes:
        """The next bytes from the peer; b"" when it closed, or the connection was shut.
        ``wait_first``: the peer has just been answered and is unlikely to have sent more yet, so
        wait for the socket to be readable before the recv that would most likely find nothing."""
        sock = self.sock
        if wait_first:
            try:
                await trio.lowlevel.wait_readable(sock)
            except trio.ClosedResourceError:
                return b""
        while not self.closed:
            data = _recv_now(sock)
            if data is not None:
                return data
            try:
                await trio.lowlevel.wait_readable(sock)
            except trio.ClosedResourceError:
                return b""
        return b""

    async def _write(self, data: bytes) -> bool:
        """Write all of ``data``: at once when the socket takes it, else waiting for room under
        WRITE_TIMEOUT_S. False when the peer is gone or too slow (the connection is then shut)."""
        sock = self.sock
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._shut()
            return False
        if sent == len(data):
            return True
        view = memoryview(data)[sent:]
        with trio.move_on_after(WRITE_TIMEOUT_S):
            while view:
                try:
                    await trio.lowlevel.wait_writable(sock)
                    view = view[sock.send(view):]
                except BlockingIOError:
                    continue
                except (OSError, trio.ClosedResourceError):
                    break
            else:
                return True
        self._shut()
        return False

    # the native path -------------------------------------------------------------------------------
    async def _serve_native(self, data: bytes) -> bytes | None:
        """Serve hot requests; the bytes from the first byte of the first request that is not hot
        (for hypercorn), or None when the connection is over."""
        edge = self.edge
        if edge.pulse is None:
            return data  # no Pulse behind this edge: hypercorn's protocol serves everything
        buf = bytearray(data)
        answered = False  # a request of this connection has been answered
        while True:
            if not buf:
                if edge.stopping.is_set():
                    return None
                self._deadline(IDLE, edge.keep_alive_s)
                chunk = await self._recv(wait_first=answered)
                if not chunk:
                    return None
                buf += chunk
            self._deadline(REQUEST, REQUEST_TIMEOUT_S)
            while len(buf) < len(POST) and POST.startswith(buf):
                chunk = await self._recv()
                if not chunk:
                    await self._timed_out()
                    return None
                buf += chunk
            if not buf.startswith(POST):  # a read, a WebSocket upgrade: hypercorn's, unparsed here
                self._deadline(NONE)
                return bytes(buf)
            head = HeadParser()
            head.feed(buf)
            while not head.done and head.error is None:
                if len(buf) > MAX_HEAD_BYTES:
                    break
                chunk = await self._recv()
                if not chunk:
                    await self._timed_out()
                    return None
                buf += chunk
                head.feed(chunk)
            if head.error is not None:
                if head.ambiguous_framing():
                    self._deadline(NONE)
                    await self._answer_refusal(InvalidInput("content-length", f"ambiguous message framing: {head.error}",
                                                           code="ambiguous_framing"), head.headers)
                    return None
                return bytes(buf)  # hypercorn's h11 answers, as it would on the hypercorn edge
            path, query = split_target(head.url)
            headers = head.headers
            handler = hot_route(path) if head.method == b"POST" else None
            declared = headers.get("content-length")
            if (handler is None or declared is None or "transfer-encoding" in headers or "upgrade" in headers
                    or headers.get("expect", "100-continue").lower() != "100-continue"
                    or ("host" not in headers and not head.http10)):
                return bytes(buf)
            start = buf.find(b"\r\n\r\n") + 4  # llhttp accepted the head: CRLF line ends, no folding
            if not head.done or start > MAX_HEAD_BYTES:  # as h11 (hypercorn) does
                self._deadline(NONE)
                await self._answer_refusal(InvalidInput("headers", f"request line and headers exceed {MAX_HEAD_BYTES} bytes",
                                                        status=431, code="headers_too_large"), headers)
                return None
            length = int(declared)
            keep = head.keep_alive and not edge.stopping.is_set()
            if length > MAX_BODY_BYTES:
                self._deadline(NONE)
                await self._answer_refusal(TooLarge("body", f"body of {length} bytes exceeds the limit of {MAX_BODY_BYTES}"), headers)
                return None
            end = start + length
            if len(buf) < end and "expect" in headers and not await self._write(CONTINUE):
                return None
            while len(buf) < end:
                chunk = await self._recv()
                if not chunk:
                    await self._timed_out()
                    return None
                buf += chunk
            body = bytes(buf[start:end])
            del buf[:end]
            self._deadline(NONE)  # the pipeline bounds the handling itself
            if not await self._answer(handler, NativeRequest(headers, query, body, self.client[0] if self.client else None), path, keep):
                return None
            if not keep:
                self.linger = True
                return None
            answered = True

    async def _answer(self, handler: Any, req: NativeRequest, path: str, keep: bool) -> bool:
        pulse = self.edge.pulse
        assert pulse is not None
        started = time.perf_counter()
        extra: list[tuple[bytes, bytes]] = []
        try:
            status, answer = 200, await handler(pulse, req, started)
        except Exception as err:  # noqa: BLE001  each refusal becomes its answer (a bug: 500, logged)
            status, answer, extra = error_answer(err, "POST", path, pulse)
        pulse.metrics.count_response(status, (time.perf_counter() - started) * 1000)
        extra += self.edge.cors_headers(req.headers.get("origin"))
        return await self._write(response(status, answer, extra, self.edge.date.current(), close=not keep))

    async def _answer_refusal(self, refusal: InvalidInput, headers: dict[str, str]) -> None:
        """Answer a request the edge refuses before it reaches a route, and end the connection."""
        self.linger = True
        if self.edge.pulse is not None:
            self.edge.pulse.metrics.count_response(refusal.status, 0.0)
        await self._write(response(refusal.status, encode_json(error_body(refusal)),
                                   self.edge.cors_headers(headers.get("origin")), self.edge.date.current(), close=True))

    async def _timed_out(self) -> None:
        """The peer closed mid-request, or the request's deadline passed (then it gets a 408)."""
        if self.timed_out:  # the socket is shut for reading only: the 408 still goes out
            await self._answer_refusal(InvalidInput("body", f"the request did not arrive within {REQUEST_TIMEOUT_S:g} s",
                                                    status=408, code="request_timeout"), {})

    # hypercorn's protocol --------------------------------------------------------------------------
    async def _serve_hosted(self) -> bytes | None:
        """Serve through hypercorn's protocol classes from ``self.handover`` on. Returns the first bytes of a
        new request once hypercorn is done and idle (back to the native path), or None at the end."""
        edge = self.edge
        self._deadline(NONE)
        tasks = self.tasks = ConnectionTasks(edge.nursery)
        self.send_lock = SendLock()
        protocol = self.protocol = ProtocolWrapper(
            edge.app, edge.config, edge.context, tasks,  # type: ignore[arg-type]
            edge.connection_state, False, self.client, edge.address, self._protocol_send, "http/1.1",
        )
        try:
            await protocol.initiate()
            if self.handover:
                first, self.handover = RawData(self.handover), b""
                await protocol.handle(first)
                del first
            sock = self.sock
            while True:
                # _recv's loop, inline: an idle WebSocket parks here, and a frame less is ~0.2 KiB
                # per socket at 100k sockets. The BlockingIOError stays in _recv_now (see there).
                chunk = b"" if self.closed else _recv_now(sock)
                if chunk is None:
                    try:
                        await trio.lowlevel.wait_readable(sock)
                    except trio.ClosedResourceError:
                        pass
                    continue
                if chunk and self._idle_again():
                    return chunk
                await protocol.handle(RawData(chunk))
                if not chunk:
                    break
                await trio.lowlevel.checkpoint()  # a busy peer cannot starve the others
            await protocol.handle(Closed())
            return None
        finally:
            await tasks.wait_done()
            self.protocol = self.tasks = self.send_lock = None  # each holds a cycle back to this connection

    def _idle_again(self) -> bool:
        """hypercorn has answered everything and waits for a new request: nothing of its own in
        flight (no stream, no app task, no buffered bytes), so the native path can take over."""
        protocol = self.protocol.protocol if self.protocol is not None else None
        if not isinstance(protocol, H11Protocol) or protocol.stream is not None or self.tasks is None or self.tasks.running:
            return False
        connection = protocol.connection
        return (isinstance(connection, h11.Connection) and connection.our_state is h11.IDLE
                and connection.their_state is h11.IDLE and connection.trailing_data == (b"", False))

    async def _protocol_send(self, event: Any) -> None:
        if isinstance(event, RawData):
            lock = self.send_lock
            assert lock is not None
            if lock.held:
                await lock.acquire()
            else:
                lock.held = True
            try:
                # shielded: a write cut in the middle would corrupt the stream; _write has a deadline
                with trio.CancelScope(shield=True):
                    written = await self._write(event.data)
            finally:
                lock.release()
            if not written and self.protocol is not None:
                await self.protocol.handle(Closed())
        elif isinstance(event, Closed):
            self.linger = True
            self._shut()
        elif isinstance(event, Updated):
            if event.idle:
                if self.edge.stopping.is_set():
                    self._shut()
                else:
                    self._deadline(IDLE, self.edge.keep_alive_s)
            else:
                self._deadline(NONE)
