"""The load generator's WebSocket channel against scripted servers (wsproto on a loopback socket):
a ping crossing our close frame is not a failure of anyone (trio-websocket issue #184, RFC 6455: no
pong is owed once we sent Close); messages, batched or not, are dispatched in order as they arrive,
and a server's close ends the user's wait with the close code as the failure reason."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Event, Ping, Pong, Request, TextMessage

from loadtest import stats as names
from loadtest.channels import Incoming, WsChannel
from loadtest.clients import LoadError, SourceAddresses
from loadtest.plan import parse_target
from loadtest.stats import Stats

STEP_S = 10


async def _received(stream: trio.SocketStream, ws: WSConnection) -> list[Event] | None:
    """The events of what a wsproto server connection reads next on ``stream``; None once the
    client hung up. (A loop, not an async generator: trio cannot finalize one left early.)"""
    data = await stream.receive_some(65536)
    if not data:
        return None
    ws.receive_data(data)
    return list(ws.events())


async def _pinging_server(stream: trio.SocketStream, seen: list[str]) -> None:
    """Accept the handshake; when the client's close arrives, ping it, then answer the close, and
    read until the client hangs up: whatever it sends after its close (a pong) lands in ``seen``."""
    ws = WSConnection(ConnectionType.SERVER)
    async with stream:
        while (events := await _received(stream, ws)) is not None:
            for event in events:
                seen.append(type(event).__name__)
                if isinstance(event, Request):
                    await stream.send_all(ws.send(AcceptConnection()))
                elif isinstance(event, CloseConnection):
                    # wsproto will not send a ping once the peer closed: write the frame by hand.
                    # The client's reader takes the ping before the close behind it, so a pong (or a
                    # crash) would come before the client hangs up, which ends the read below.
                    ping = b"\x89\x00"  # FIN + ping, empty payload
                    # answered with a code of its own: the client shows it only if its reader read it
                    await stream.send_all(ping + ws.send(CloseConnection(code=4000, reason="bye")))
                    while data := await stream.receive_some(65536):
                        seen.append(f"bytes after its close: {data!r}")
                    return
                elif isinstance(event, Ping | Pong):
                    pass


async def _with_server(handler: Callable[[trio.SocketStream], Awaitable[None]],
                       user: Callable[[int, trio.Nursery], Awaitable[None]]) -> None:
    """Serve ``handler`` on a loopback port; run ``user(port, nursery)`` in a nursery of its own
    (as the runner does: trio-websocket's reader runs there, and its crash would end the user)."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    with trio.fail_after(STEP_S):
        async with trio.open_nursery() as server:
            server.start_soon(trio.serve_listeners, handler, listeners)
            async with trio.open_nursery() as nursery:
                await user(port, nursery)
            server.cancel_scope.cancel()


async def _open(port: int, nursery: trio.Nursery, stats: Stats, on_message: Any = None) -> WsChannel:
    return await WsChannel.open(nursery, parse_target(f"http://127.0.0.1:{port}"), "/ws", SourceAddresses([]), stats,
                                on_message or (lambda message, now: None), "messages.test")


async def test_a_server_ping_crossing_our_close_ends_the_socket_quietly() -> None:
    seen: list[str] = []
    stats = Stats()
    channels: list[WsChannel] = []

    async def user(port: int, nursery: trio.Nursery) -> None:
        channels.append(channel := await _open(port, nursery, stats))
        await channel.aclose()  # graceful: sends Close, the server pings, then answers

    await _with_server(lambda stream: _pinging_server(stream, seen), user)
    assert seen == ["Request", "CloseConnection"]  # no pong came back after our close
    ws = channels[0].ws
    assert ws is not None and ws.closed is not None and ws.closed.code == 4000  # the close handshake completed
    assert stats.take().failures == {}
    assert names.MESSAGES not in stats.counts


def _event(n: int) -> dict[str, Any]:
    return {"type": "event", "data": {"payload": {"metadata": {"sentAtNs": 1, "seq": n}}}}


async def _batching_server(stream: trio.SocketStream) -> None:
    """Accept, with "connected" and two events in one batch frame; when the client sends its event,
    send one event alone and a batch of an event and the event's ack, then close with 3008."""
    ws = WSConnection(ConnectionType.SERVER)
    async with stream:
        while (events := await _received(stream, ws)) is not None:
            for event in events:
                if isinstance(event, Request):
                    first = {"type": "batch", "messages": [{"type": "connected"}, _event(1), _event(2)]}
                    await stream.send_all(ws.send(AcceptConnection()) + ws.send(TextMessage(data=json.dumps(first))))
                elif isinstance(event, TextMessage):
                    request_id = json.loads(event.data)["requestId"]
                    ack = {"type": "ack", "requestId": request_id, "processed": True}
                    out = ws.send(TextMessage(data=json.dumps(_event(3))))
                    out += ws.send(TextMessage(data=json.dumps({"type": "batch", "messages": [_event(4), ack]})))
                    await stream.send_all(out + ws.send(CloseConnection(code=3008, reason="too slow")))
                elif isinstance(event, CloseConnection):
                    return


async def test_messages_are_dispatched_in_order_as_they_arrive_and_a_server_close_ends_the_wait() -> None:
    stats = Stats()
    got: list[int] = []

    def on_message(message: Incoming, now: int) -> None:
        assert message.marks is not None
        got.append(message.marks.seq)

    async def user(port: int, nursery: trio.Nursery) -> None:
        channel = await _open(port, nursery, stats, on_message)
        await channel.handshake(None, "connected")  # found inside the first batch
        await channel.send_event({"eventType": "click"})
        with pytest.raises(LoadError) as ended:
            await channel.pump_until(trio.current_time() + STEP_S)
        assert ended.value.reason == "ws_closed_3008"
        assert channel.pending == {}  # the ack inside the last batch was matched
        await channel.aclose()

    await _with_server(_batching_server, user)
    assert got == [1, 2, 3, 4]
    delta = stats.take()
    assert delta.counts[names.MESSAGES] == 4 and delta.counts["messages.test"] == 4 and delta.counts[names.EVENTS] == 1
    assert set(delta.histograms) == {names.ACK_WS, names.CONNECT_WS}
    assert delta.failures == {}
