"""Batched WebSocket delivery (``?batch=1``, protocol/stream.py) against a real server: what a client
sees on the wire. Default sockets keep one message per frame; a batching socket gets the same
messages, in the same order, several to a frame; a bad ``batch`` value is refused at the handshake.

Each test publishes a burst with one batch request (its messages are queued to every subscriber
before any connection writes), then sends a ping on each socket: its pong comes after the burst.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import msgspec
import pytest

from protocol.stream import BATCH_MAX_MESSAGES, SUBPROTOCOL_MSGPACK, batch_json, batch_msgpack
from tests.e2e.server_process import ServerProcess
from tests.e2e.ws_client import Client, Rejected


async def _until_pong(ws: Client, decode: Any = json.loads) -> list[Any]:
    """Frames (raw) up to, not including, the pong answering our ping "end"."""
    frames = []
    while True:
        frame = await ws.frame()
        message = decode(frame)
        if message.get("type") == "pong" and message.get("requestId") == "end":
            return frames
        frames.append(frame)


def _flatten(frames: list[Any], decode: Any) -> tuple[list[Any], list[int]]:
    """The messages of ``frames`` with batches unpacked, and how many messages each frame held."""
    messages, sizes = [], []
    for frame in frames:
        message = decode(frame)
        if message["type"] == "batch":
            messages.extend(message["messages"])
            sizes.append(len(message["messages"]))
        else:
            messages.append(message)
            sizes.append(1)
    return messages, sizes


async def test_default_sockets_get_one_message_per_frame_and_batching_ones_the_same_messages_in_batches(
        server: ServerProcess, client: httpx.AsyncClient) -> None:
    paths = {"default": "/api/events/ws", "off": "/api/events/ws?batch=0",
             "on": "/api/events/ws?batch=1", "true": "/api/events/ws?batch=true"}
    sockets = {name: await Client.connect(server.url, path) for name, path in paths.items()}
    for ws in sockets.values():
        assert (await ws.json())["type"] == "connected"
    count = 600  # more than a batch holds (256): several batch frames
    events = [{"eventName": "api-call", "payload": {"serviceName": "api", "metadata": {"n": n}}} for n in range(count)]
    answer = await client.post("/api/events/track/batch", json={"events": events})
    assert answer.status_code == 200, answer.text
    received = {}
    for name, ws in sockets.items():
        await ws.send({"type": "ping", "requestId": "end"})
        received[name] = await _until_pong(ws)
        await ws.aclose()

    for name in ("default", "off"):  # one JSON message per frame, as seed clients expect
        frames = received[name]
        assert len(frames) == count
        decoded = [json.loads(frame) for frame in frames]
        assert [m["type"] for m in decoded] == ["event"] * count
        assert [m["data"]["payload"]["metadata"]["n"] for m in decoded] == list(range(count))
    assert received["off"] == received["default"]

    for name in ("on", "true"):
        frames = received[name]
        messages, sizes = _flatten(frames, json.loads)
        assert messages == [json.loads(frame) for frame in received["default"]]  # the same, in order
        assert len(frames) < count and max(sizes) == BATCH_MAX_MESSAGES and sum(sizes) == count
        # a batch is the very bytes of the frames it replaces, spliced into the envelope
        at = 0
        for frame, size in zip(frames, sizes, strict=True):
            parts = received["default"][at:at + size]
            assert frame == (parts[0] if size == 1 else batch_json([p.encode() for p in parts]).decode())
            at += size


async def test_a_message_alone_in_the_queue_is_sent_without_an_envelope(server: ServerProcess) -> None:
    ws = await Client.connect(server.url, "/api/v1/behavioral/stream?batch=1")
    await ws.send({"type": "connection", "sessionId": "alone"})
    assert (await ws.json())["type"] == "connection_ack"
    await ws.send({"type": "ping", "requestId": "p1"})
    pong = await ws.json()
    assert pong["type"] == "pong" and pong["requestId"] == "p1"
    await ws.aclose()


async def test_msgpack_batches_decode_to_the_messages_a_msgpack_socket_gets_one_by_one(
        server: ServerProcess, client: httpx.AsyncClient) -> None:
    default = await Client.connect(server.url, "/api/v1/behavioral/stream", subprotocols=[SUBPROTOCOL_MSGPACK])
    batching = await Client.connect(server.url, "/api/v1/behavioral/stream?batch=1", subprotocols=[SUBPROTOCOL_MSGPACK])
    for ws in (default, batching):
        assert ws.accepted is not None and ws.accepted.subprotocol == SUBPROTOCOL_MSGPACK
        await ws.send({"type": "connection"})  # the whole project (a text frame is read as JSON)
        ack = await ws.frame()
        assert isinstance(ack, bytes) and msgspec.msgpack.decode(ack)["type"] == "connection_ack"
    events = [{"sessionId": f"mp-{i % 3}", "eventType": "click", "eventData": {"i": i}} for i in range(300)]
    answer = await client.post("/api/v1/behavioral/batch", json={"events": events})
    assert answer.status_code == 200, answer.text
    received = {}
    for name, ws in (("default", default), ("batching", batching)):
        await ws.send({"type": "ping", "requestId": "end"})
        received[name] = await _until_pong(ws, msgspec.msgpack.decode)
        await ws.aclose()
    one_by_one = [msgspec.msgpack.decode(frame) for frame in received["default"]]
    assert all(isinstance(frame, bytes) for frame in received["batching"])
    messages, sizes = _flatten(received["batching"], msgspec.msgpack.decode)
    assert messages == one_by_one
    assert [m["event"]["i"] for m in messages if m["type"] == "behavioral_event"] == list(range(300))
    assert max(sizes) > 15  # past MessagePack's fixarray: the array header of the envelope has 3 bytes


@pytest.mark.parametrize("path", ["/api/events/ws", "/api/v1/behavioral/stream"])
@pytest.mark.parametrize("value", ["yes", "2", "on"])
async def test_a_bad_batch_value_is_refused_at_the_handshake_naming_the_parameter(
        server: ServerProcess, path: str, value: str) -> None:
    with pytest.raises(Rejected) as refused:
        await Client.connect(server.url, f"{path}?batch={value}")
    assert refused.value.status == 400
    error = json.loads(refused.value.body)["error"]
    assert error["field"] == "batch" and value in error["reason"], error


def test_the_envelopes_are_what_json_and_msgpack_decoders_read() -> None:
    for count in (2, 15, 16, 65_535, 65_536):  # MessagePack: fixarray, array 16, array 32
        messages = [{"type": "event", "n": n} for n in range(count)]
        packed = batch_msgpack([msgspec.msgpack.encode(m) for m in messages])
        assert msgspec.msgpack.decode(packed) == {"type": "batch", "messages": messages}
    messages = [{"type": "event", "n": n} for n in range(3)]
    assert json.loads(batch_json([msgspec.json.encode(m) for m in messages])) == {"type": "batch", "messages": messages}
