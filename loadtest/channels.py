"""A simulated user's stream subscription as the user sees it: the events it sends on a WebSocket and
their acks, and the stream messages the server delivers to it.

Sends do not wait for their ack (a browser's ``ws.send`` does not either): each request id is kept
with its send time and matched when the ack arrives. A WebSocket's messages are dispatched by
trio-websocket's reader task as they arrive (a browser's ``onmessage`` does not wait for the page's
code either), so a socket needs no task of its own beyond that reader. An SSE stream is read in
``pump_until``: a user thinks by reading it until its next action is due.

Batched delivery: a WebSocket opened with ``?batch=1`` (the dashboards' sockets) may get several
messages in one ``{"type":"batch","messages":[...]}`` frame (protocol/stream.py); each inner message
is dispatched as if it had come alone (a delivery with its own end-to-end latency, or an ack), all
with the frame's arrival time. Frames holding one message (seed style) work on every socket.

End-to-end latency: every event the generator sends carries ``sentAtNs`` (``time.time_ns()`` at the
send) in ``eventData`` (seed 000 events; the stream's flat ``event`` has it at its top) or
``metadata`` (seed 004 events). Any subscriber that gets the event back, in any worker process on this machine, subtracts it from its own ``time.time_ns()``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any, Final

import msgspec
import trio
import trio_websocket

from loadtest import stats as names
from loadtest.clients import LoadError, SourceAddresses, SseStream, WebSocket, open_websocket
from loadtest.plan import Target
from loadtest.stats import Stats

ACK_TIMEOUT_NS: Final = 10_000_000_000  # an ack later than this counts as the failure "ack_timeout"
HANDSHAKE_TIMEOUT_S: Final = 10.0  # connection message -> connection_ack (or "connected")
CLOSE_TIMEOUT_S: Final = 1.0


class Marks(msgspec.Struct):
    """What the generator puts into each event it sends, to find it again at the subscribers."""

    sentAtNs: int = 0
    device: str = ""  # cross-device: which device sent it
    seq: int = 0


class _Payload(msgspec.Struct):
    eventData: Marks | None = None  # seed 000 events
    metadata: Marks | None = None  # seed 004 events

    @property
    def marks(self) -> Marks | None:
        return self.eventData or self.metadata


class _FlatEvent(msgspec.Struct):
    """Seed 000's flat ``event`` of a ``behavioral_event``: the ``eventData`` fields at its top."""

    sentAtNs: int = 0
    device: str = ""
    seq: int = 0

    @property
    def marks(self) -> Marks | None:
        return Marks(self.sentAtNs, self.device, self.seq) if self.sentAtNs else None


class _StoredEvent(msgspec.Struct):
    payload: _Payload | None = None


class Incoming(msgspec.Struct):
    """Every server -> client message, with only the fields the generator reads (msgspec skips the
    rest without building them: a session's live state, a stored event's other fields...)."""

    type: str = ""
    requestId: str | None = None
    processed: bool | int | None = None  # ack: bool; batch_ack: count
    rejected: list[msgspec.Raw] = []
    code: str | None = None
    event: _FlatEvent | None = None  # behavioral_event (seed 000)
    data: _StoredEvent | None = None  # event (seed 004); also stats, whose payload is None
    messages: list[Incoming] = []  # batch: the messages it carries, in order (decoded in the same pass)

    @property
    def marks(self) -> Marks | None:
        carrier = self.event if self.event is not None else (self.data.payload if self.data is not None else None)
        return carrier.marks if carrier is not None else None


_decode = msgspec.json.Decoder(Incoming).decode
_decode_many = msgspec.json.Decoder(list[Incoming]).decode
_encode = msgspec.json.Encoder().encode

OnMessage = Callable[[Incoming, int], None]  # (message, time.time_ns() at its arrival)
STREAM_TYPES: Final = frozenset({"behavioral_event", "event", "session_metrics", "trigger_notification"})
BATCH: Final = "batch"  # several messages in one frame (sockets opened with ?batch=1)


class Channel:
    """Reading and dispatching shared by WebSocket and SSE subscriptions."""

    def __init__(self, stats: Stats, on_message: OnMessage, messages_counter: str) -> None:
        self.stats = stats
        self.on_message = on_message
        self.messages_counter = messages_counter  # per-scenario counter of stream messages

    async def receive(self) -> bytes | str:
        raise NotImplementedError

    def dispatch(self, raw: bytes | str) -> Incoming | None:
        now = time.time_ns()
        try:
            message = _decode(raw)
        except msgspec.DecodeError:  # not ours (another client's odd payload): count, never crash
            self.stats.count("undecodable_messages")
            self.stats.count(names.MESSAGES)
            return None
        kind = message.type
        if kind in STREAM_TYPES:
            self.stats.count(names.MESSAGES)
            self.stats.count(self.messages_counter)
            self.on_message(message, now)
        elif kind == BATCH:
            self.deliver(message.messages, now)
        else:
            self.control(message)
        return message

    def dispatch_many(self, raws: list[bytes]) -> None:
        """Dispatch several messages that arrived together, decoded in one pass (as a JSON array)."""
        if len(raws) == 1:
            self.dispatch(raws[0])
            return
        now = time.time_ns()
        try:
            messages = _decode_many(b"[" + b",".join(raws) + b"]")
        except msgspec.DecodeError:
            messages = []
        if len(messages) != len(raws):  # one of them is not a message of ours: one by one
            for raw in raws:
                self.dispatch(raw)
            return
        self.deliver(messages, now)

    def deliver(self, messages: list[Incoming], now: int) -> None:
        """Messages that arrived together (a batch frame, an SSE read) at ``now``, in order."""
        delivered = 0
        on_message, control = self.on_message, self.control
        for message in messages:
            if message.type in STREAM_TYPES:
                delivered += 1
                on_message(message, now)
            else:
                control(message)
        if delivered:
            self.stats.count(names.MESSAGES, delivered)
            self.stats.count(self.messages_counter, delivered)

    def control(self, message: Incoming) -> None:
        """Acks, errors and the like (WebSocket only)."""

    async def pump_until(self, deadline: float) -> None:
        """Read and dispatch messages until ``deadline`` (trio time)."""
        with trio.move_on_at(deadline):
            await self.pump_forever()

    async def pump_forever(self) -> None:
        while True:
            self.dispatch(await self.receive())

    async def aclose(self, graceful: bool = True) -> None:
        raise NotImplementedError


class WsChannel(Channel):
    """A WebSocket whose messages are dispatched by trio-websocket's reader task as they arrive
    (clients._Direct: no extra trip through the scheduler per frame). The user's task sends, and
    waits (``pump_until``, ``handshake``, ``drain``) for what it needs or for the socket to end."""

    def __init__(self, stats: Stats, on_message: OnMessage, messages_counter: str) -> None:
        super().__init__(stats, on_message, messages_counter)
        self.ws: WebSocket | None = None
        self.closing = False  # closed by us: a reader that sees it close is not a failure
        self.pending: dict[str, tuple[int, str]] = {}  # requestId -> (perf_counter_ns at send, histogram)
        self._ids = itertools.count(1)
        self._ended = False  # the socket is closed: no more messages
        self._answers: set[str] = set()  # types of the replies received (not stream messages): handshake()
        self._progress: trio.Event | None = None  # set when a message arrives or the socket ends

    @classmethod
    async def open(cls, nursery: trio.Nursery, target: Target, path: str, sources: SourceAddresses, stats: Stats,
                   on_message: OnMessage, messages_counter: str) -> WsChannel:
        """Connect; trio-websocket's reader runs in ``nursery`` (see clients.open_websocket)."""
        channel = cls(stats, on_message, messages_counter)
        channel.ws = await open_websocket(nursery, target, path, sources, on_frame=channel._on_frame,
                                          on_end=channel._on_end)
        return channel

    def _on_frame(self, raw: bytes | str) -> None:
        """A message, in the reader task, as it arrives."""
        incoming = self.dispatch(raw)
        if incoming is not None:
            answers = self._answers
            for message in incoming.messages or (incoming,):
                if message.type not in STREAM_TYPES:
                    answers.add(message.type)
        self._poke()

    def _on_end(self) -> None:
        self._ended = True
        self._poke()

    def _poke(self) -> None:
        progress = self._progress
        if progress is not None:
            self._progress = None
            progress.set()

    async def _until(self, done: Callable[[], bool]) -> None:
        """Wait until ``done()``; raises LoadError (the close reason) if the socket ends first."""
        while not done():
            if self._ended:
                raise LoadError(_reason(self.ws.closed if self.ws is not None else None))
            if self._progress is None:
                self._progress = trio.Event()
            await self._progress.wait()

    async def receive(self) -> bytes | str:
        """Messages are dispatched as they arrive: this only waits for the end of the socket."""
        await self._until(lambda: False)
        raise AssertionError("unreachable")

    async def pump_forever(self) -> None:
        await self._until(lambda: False)

    async def send(self, message: Any) -> None:
        assert self.ws is not None, "WsChannel.open connects it"
        try:
            # a text frame: the server reads binary frames as MessagePack
            await self.ws.send_message(_encode(message).decode())
        except trio_websocket.ConnectionClosed as exc:
            raise LoadError(_reason(exc.reason)) from None

    async def send_event(self, event: dict[str, Any], histogram: str = names.ACK_WS) -> None:
        """Send one seed-000 event; its ack is matched later by request id."""
        request_id = str(next(self._ids))
        self.pending[request_id] = (time.perf_counter_ns(), histogram)
        self.stats.count(names.REQUESTS)
        self.stats.count(names.EVENTS)
        await self.send({"type": "event", "requestId": request_id, "event": event})

    async def handshake(self, message: Any | None, answer: str) -> None:
        """Send ``message`` (if any) and wait until a reply of the ``answer`` type has arrived (it may
        have already: "connected" comes with the handshake); records the connect time."""
        started = time.perf_counter_ns()
        if message is not None:
            await self.send(message)
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT_S):
                await self._until(lambda: answer in self._answers)
        except trio.TooSlowError:
            raise LoadError(f"{answer}_timeout") from None
        self.stats.latency_ns(names.CONNECT_WS, time.perf_counter_ns() - started)

    def control(self, message: Incoming) -> None:
        kind = message.type
        if kind == "ack" or kind == "batch_ack":
            sent = self.pending.pop(message.requestId or "", None)
            if sent is not None:
                self.stats.latency_ns(sent[1], time.perf_counter_ns() - sent[0])
            if message.processed is False:
                self.stats.fail("not_processed")  # stored, but the live actors could not take it in time
            if message.rejected:
                self.stats.fail("rejected_events", len(message.rejected))
        elif kind == "error":
            if message.requestId is not None:
                self.pending.pop(message.requestId, None)
            self.stats.fail(f"ws_error_{message.code or 'unknown'}")

    def sweep(self) -> None:
        """Count acks that are overdue as failures (the oldest come first: dicts keep insertion order)."""
        if not self.pending:
            return
        limit = time.perf_counter_ns() - ACK_TIMEOUT_NS
        while self.pending:
            request_id, (sent, _) = next(iter(self.pending.items()))
            if sent > limit:
                return
            del self.pending[request_id]
            self.stats.fail("ack_timeout")

    async def drain(self, deadline: float) -> None:
        """At the stop: read until every ack is in, or ``deadline``; what is left is not a failure
        unless overdue (the run stopped while it was on its way)."""
        with trio.move_on_at(deadline):
            await self._until(lambda: not self.pending)
        self.sweep()
        if self.pending:
            self.stats.count("acks_unconfirmed_at_stop", len(self.pending))
            self.pending.clear()

    async def aclose(self, graceful: bool = True) -> None:
        """Graceful: the close handshake, as a browser closing a tab does (bounded by
        CLOSE_TIMEOUT_S). Not graceful: just close the TCP connection. At the end of a run
        thousands of sockets close at once, and their close handshakes would cost both sides
        seconds of CPU (measured: ~7 s for 9,000 sockets here) for nothing the run measures."""
        self.closing = True
        with trio.move_on_after(CLOSE_TIMEOUT_S if graceful else 0) as scope:
            scope.shield = True
            # Already cancelled when not graceful: trio-websocket then sends nothing and closes
            # its stream (the ``finally`` of its aclose).
            if self.ws is not None:
                await self.ws.aclose()


class SseChannel(Channel):
    def __init__(self, sse: SseStream, stats: Stats, on_message: OnMessage, messages_counter: str) -> None:
        super().__init__(stats, on_message, messages_counter)
        self.sse = sse

    async def receive(self) -> bytes:
        return await self.sse.receive()

    async def pump_forever(self) -> None:
        while True:  # every message read so far, decoded in one pass
            self.dispatch_many(await self.sse.receive_many())

    async def aclose(self, graceful: bool = True) -> None:
        await self.sse.aclose()


def _reason(closed: trio_websocket.CloseReason | None) -> str:
    code = closed.code if closed is not None else 0
    return f"ws_closed_{code}"  # 1001 server going away, 3008 too slow, 1006 connection lost...
