"""The transport under Pulse (server/edge/) with small ASGI apps, in this process:
keep-alive deadlines from the server's timer wheel, the no-context-takeover deflate mode, the
inbox's wake-up, and the subscriber queue (actors.hub.FrameQueue) the WebSocket task drains, as
the hub fills it.

``use_pulse_websockets`` sets hypercorn's WebSocket stream class for the whole process; no other
test serves hypercorn in-process.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from hypercorn.config import Config
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage
from wsproto.extensions import PerMessageDeflate

from actors.hub import KIND_EVENT, Attrs, Frame, FrameQueue, Hub, Subscriber
from actors.metrics import Metrics
from server.edge.server import DEADLINE_TICK_S, serve
from server.edge.websocket import use_pulse_websockets

STEP_S = 10


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """200 "ok" over HTTP; over a WebSocket, echoes text, and "wake" tests the inbox's wake-up."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] == "http":
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    inbox = scope["extensions"]["pulse.inbox"]
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") == "wake":
            inbox.wake()
            await send({"type": "websocket.send", "text": (await receive())["type"]})
        else:
            await send({"type": "websocket.send", "text": message.get("text") or ""})


@asynccontextmanager
async def _server(*, compression: str = "off", keep_alive: float = 5.0) -> AsyncIterator[tuple[str, int]]:
    use_pulse_websockets(compression, ping_timeout=20.0)
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.loglevel = "WARNING"
    config.keep_alive_timeout = keep_alive
    config.graceful_timeout = 1
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve, _app, config, pulse=None, shutdown_trigger=shutdown.wait))  # type: ignore[arg-type]
        host, port = binds[0].removeprefix("http://").rsplit(":", 1)
        yield host, int(port)
        shutdown.set()


async def _get(stream: trio.SocketStream, host: str) -> bytes:
    await stream.send_all(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    response = b""
    with trio.fail_after(STEP_S):
        while not response.endswith(b"ok"):
            chunk = await stream.receive_some(65536)
            assert chunk, "closed before the response"
            response += chunk
    return response


async def test_a_connection_idle_for_the_keep_alive_timeout_is_closed_and_requests_keep_it_open(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Virtual time: client and server run in this trio run, so the clock only jumps when neither
    # has anything to do, and the deadlines are exact.
    keep_alive = 0.6
    async with _server(keep_alive=keep_alive) as (host, port):
        stream = await trio.open_tcp_stream(host, port)
        for _ in range(4):  # 4 x 0.3 s: longer than the timeout, but never idle for that long
            assert (await _get(stream, host)).startswith(b"HTTP/1.1 200")
            await trio.sleep(keep_alive / 2)
        idle_since = trio.current_time()
        with trio.fail_after(STEP_S):
            assert await stream.receive_some(65536) == b""  # the server closed it
        idle = trio.current_time() - idle_since
        # 0.6 s less the 0.3 s already idle, late by up to one tick of the deadline wheel, never early
        assert keep_alive / 2 <= idle <= keep_alive / 2 + DEADLINE_TICK_S + 1e-9, idle
        await stream.aclose()


async def _ws_client(host: str, port: int, extensions: list[Any]) -> tuple[trio.SocketStream, WSConnection, Any]:
    stream = await trio.open_tcp_stream(host, port)
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(ws.send(Request(host=host, target="/ws", extensions=extensions)))
    with trio.fail_after(STEP_S):
        while True:
            ws.receive_data(await stream.receive_some(65536))
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    return stream, ws, event


async def _exchange(stream: trio.SocketStream, ws: WSConnection, text: str) -> tuple[str, bytes]:
    """Send ``text``; return the reply and the raw bytes it came in."""
    await stream.send_all(ws.send(TextMessage(data=text)))
    raw = b""
    reply = ""
    with trio.fail_after(STEP_S):
        while True:
            data = await stream.receive_some(65536)
            raw += data
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, TextMessage):
                    reply += event.data
                    if event.message_finished:
                        return reply, raw


async def test_deflate_without_context_takeover_is_negotiated_and_keeps_no_zlib_state() -> None:
    async with _server(compression="no-context-takeover") as (host, port):
        deflate = PerMessageDeflate()
        stream, ws, accepted = await _ws_client(host, port, [deflate])
        (extension,) = accepted.extensions
        assert extension.client_no_context_takeover and extension.server_no_context_takeover
        message = json.dumps({"type": "event", "payload": "x" * 500})
        for _ in range(3):
            reply, raw = await _exchange(stream, ws, message)
            assert reply == message
            assert raw[0] & 0x40  # RSV1: the server compressed it
            assert len(raw) < len(message)
            assert deflate._compressor is None and deflate._decompressor is None  # per message only
        await stream.aclose()


@pytest.mark.parametrize("mode", ["off", "on"])
async def test_compression_off_declines_the_browser_offer_and_on_accepts_it(mode: str) -> None:
    async with _server(compression=mode) as (host, port):
        stream, ws, accepted = await _ws_client(host, port, [PerMessageDeflate()])
        assert len(accepted.extensions) == (1 if mode == "on" else 0)
        assert (await _exchange(stream, ws, "hello"))[0] == "hello"
        await stream.aclose()


async def test_a_woken_inbox_gives_the_app_a_wakeup_between_client_messages() -> None:
    async with _server() as (host, port):
        stream, ws, _ = await _ws_client(host, port, [])
        assert (await _exchange(stream, ws, "one"))[0] == "one"
        assert (await _exchange(stream, ws, "wake"))[0] == "pulse.wakeup"
        assert (await _exchange(stream, ws, "two"))[0] == "two"
        await stream.aclose()


def _frame(n: int) -> Frame:
    return Frame(n, str(n).encode(), False)


async def test_frame_queue_hands_frames_over_in_order_and_ends_after_close() -> None:
    queue = FrameQueue(2)
    got: list[int] = []

    async def consume() -> None:
        async for frame in queue:
            got.append(frame.seq)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        queue.send_nowait(_frame(1))  # wakes the parked consumer
        await trio.testing.wait_all_tasks_blocked()
        queue.send_nowait(_frame(2))
        queue.send_nowait(_frame(3))
        with pytest.raises(trio.WouldBlock):
            queue.send_nowait(_frame(4))  # full: the hub evicts such a subscriber
        queue.close()
        with pytest.raises(trio.ClosedResourceError):
            queue.send_nowait(_frame(5))
    assert got == [1, 2, 3]  # what was queued before the close is still delivered
    with pytest.raises(trio.EndOfChannel):
        queue.receive_nowait()


async def test_frame_queue_allows_one_receiver_and_survives_a_cancelled_receive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue = FrameQueue(4)
    with trio.move_on_after(1) as waited:  # virtual time: an empty queue's receive waits until cancelled
        await queue.receive()
    assert waited.cancelled_caught
    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.receive)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await queue.receive()
        queue.send_nowait(_frame(7))
    with pytest.raises(trio.WouldBlock):
        queue.receive_nowait()  # the nursery's receiver took it


def test_a_subscriber_wakes_its_connection_for_each_frame_and_when_its_queue_ends() -> None:
    woken: list[str] = []
    sub = Subscriber("p1", ["event"], queue_size=1)
    sub.wakeup = lambda: woken.append("wake")
    assert sub.offer(_frame(1))
    assert not sub.offer(_frame(2)) and sub.evicted  # full: evicted, its queue closed
    assert woken == ["wake", "wake"]
    assert sub.frames.receive_nowait().seq == 1
    with pytest.raises(trio.EndOfChannel):
        sub.frames.receive_nowait()


def test_frame_queue_hands_over_what_waits_in_bounded_groups() -> None:
    queue = FrameQueue(16)
    with pytest.raises(trio.WouldBlock):
        queue.receive_many_nowait(4, 100)
    for n in range(1, 7):
        queue.send_nowait(Frame(n, b"x" * 10, False))
    queue.send_nowait(Frame(7, b"y" * 500, False))  # bigger than a whole group may be
    queue.send_nowait(Frame(8, b"z", False))
    groups = []
    while True:
        try:
            groups.append([frame.seq for frame in queue.receive_many_nowait(4, 100)])
        except trio.WouldBlock:
            break
    assert groups == [[1, 2, 3, 4], [5, 6], [7], [8]]  # at most 4 frames / 100 bytes, but never none
    queue.send_nowait(_frame(9))
    queue.close()
    assert [frame.seq for frame in queue.receive_many_nowait(4, 100)] == [9]  # queued before the close
    with pytest.raises(trio.EndOfChannel):
        queue.receive_many_nowait(4, 100)


def test_publishing_a_requests_messages_together_wakes_each_subscriber_once_and_keeps_order() -> None:
    metrics = Metrics()
    hub = Hub(metrics)
    woken: dict[str, int] = {"wide": 0, "session": 0, "small": 0}
    wide = Subscriber("p1", [KIND_EVENT])
    session = Subscriber("p1", [KIND_EVENT], session_id="s1")
    small = Subscriber("p1", [KIND_EVENT], queue_size=3)  # falls behind within the request
    for name, sub in (("wide", wide), ("session", session), ("small", small)):
        sub.wakeup = lambda name=name: woken.__setitem__(name, woken[name] + 1)  # type: ignore[misc]
        hub.subscribe(sub)
    messages = [(KIND_EVENT, Attrs(session_id="s1" if n % 2 else "s2"), {"n": n}, n, "") for n in range(1, 7)]
    delivered = hub.publish_many("p1", messages)

    def drained(sub: Subscriber) -> list[int]:
        seqs = []
        while True:
            try:
                seqs.append(sub.frames.receive_nowait().seq)
            except (trio.WouldBlock, trio.EndOfChannel):
                return seqs

    assert drained(wide) == [1, 2, 3, 4, 5, 6]
    assert drained(session) == [1, 3, 5]  # its session's messages only, in order
    assert drained(small) == [1, 2, 3] and small.evicted  # what fit is still delivered, then it is closed
    assert delivered == 6 + 3 + 3
    assert woken == {"wide": 1, "session": 1, "small": 1}  # once per request, not once per message
    assert metrics.drops["slow_subscriber"] == 1 and hub.subscriber_count() == 2
    assert hub.publish_many("p1", messages[:1]) == 2  # the evicted one is gone from the hub
