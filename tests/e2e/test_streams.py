"""Streams end to end: SSE and both WebSockets against a real server process."""

from __future__ import annotations

import json
from typing import Any

import httpx
import msgspec
import trio
from trio_websocket import open_websocket_url

from tests.e2e.server_process import ServerProcess
from tests.e2e.sse_client import SSEClient

STEP_S = 10  # generous per-step deadline: a hang fails the test instead of stalling the suite


async def test_sse_delivers_tracked_events_and_resumes_from_last_event_id(server: ServerProcess, client: httpx.AsyncClient) -> None:
    async with SSEClient(f"{server.url}/api/events/stream") as sse:
        assert sse.status == 200
        assert sse.response_headers["content-type"].startswith("text/event-stream")
        sent = await client.post("/api/events/track/page-view", json={"serviceName": "web-analytics", "sessionId": "s-1"})
        first_id, first = await sse.next_of_type("event")
        assert first["data"]["id"] == sent.json()["eventId"]
        assert first["data"]["name"] == "page-view"
        assert first["data"]["payload"] == {"serviceName": "web-analytics", "sessionId": "s-1"}
        assert first_id is not None
    # while disconnected, two more events happen
    missed = []
    for name in ("click", "scroll"):
        missed.append((await client.post(f"/api/events/track/{name}", json={"serviceName": "web-analytics"})).json()["eventId"])
    headers = {"Last-Event-ID": first_id}
    async with SSEClient(f"{server.url}/api/events/stream", headers) as sse:
        replayed = [(await sse.next_of_type("event"))[1]["data"]["id"] for _ in missed]
        assert replayed == missed
        live = await client.post("/api/events/track/exit", json={})
        assert (await sse.next_of_type("event"))[1]["data"]["id"] == live.json()["eventId"]


async def test_sse_sends_stats_and_ping(tmp_path: Any) -> None:
    proc = ServerProcess(tmp_path / "data", env={"PULSE_SSE_PING_INTERVAL": "0.2", "PULSE_SSE_STATS_INTERVAL": "0.2"}).start()
    try:
        async with httpx.AsyncClient(base_url=proc.url, timeout=10) as client:
            await client.post("/api/events/track/login", json={"serviceName": "user-service"})
            async with SSEClient(f"{proc.url}/api/events/stream") as sse:
                _, stats = await sse.next_of_type("stats")
                assert stats["data"]["totalEventCount"] == 1
                assert stats["data"]["totalServices"] == 1
                _, ping = await sse.next_of_type("ping")
                assert isinstance(ping["timestamp"], int)
    finally:
        assert proc.stop() == 0


async def ws_json(ws: Any) -> dict[str, Any]:
    with trio.fail_after(STEP_S):
        return json.loads(await ws.get_message())


async def ws_until(ws: Any, kind: str) -> dict[str, Any]:
    while True:
        message = await ws_json(ws)
        if message["type"] == kind:
            return message


async def test_events_ws_filters_by_service(server: ServerProcess, client: httpx.AsyncClient) -> None:
    async with open_websocket_url(f"{server.ws_url}/api/events/ws") as ws:
        assert (await ws_json(ws))["type"] == "connected"
        await ws.send_message(json.dumps({"type": "filter", "serviceName": "payment-service"}))
        applied = await ws_until(ws, "filter_applied")
        assert applied["filter"]["serviceName"] == "payment-service"
        await client.post("/api/events/track/page-view", json={"serviceName": "web-analytics"})
        paid = await client.post("/api/events/track/charge", json={"serviceName": "payment-service"})
        message = await ws_until(ws, "event")
        assert message["data"]["id"] == paid.json()["eventId"]  # the web-analytics event was filtered out


async def test_behavioral_ws_connection_ack_stream_and_send(server: ServerProcess, client: httpx.AsyncClient) -> None:
    async with open_websocket_url(f"{server.ws_url}/api/v1/behavioral/stream") as ws:
        await ws.send_message(json.dumps({
            "type": "connection", "sessionId": "session_123", "userId": "user_456",
            "subscriptions": ["behavioral_events", "engagement_metrics", "conversion_triggers"],
        }))
        ack = await ws_until(ws, "connection_ack")
        assert ack["sessionId"] == "session_123"
        assert ack["subscriptions"] == ["behavioral_events", "engagement_metrics", "conversion_triggers"]
        # an event of another session is not delivered; one of ours is, with its live session state
        await client.post("/api/v1/behavioral/events", json={"sessionId": "other", "eventType": "page_view"})
        await ws.send_message(json.dumps({
            "type": "event", "requestId": "r1",
            "event": {"sessionId": "session_123", "userId": "user_456", "eventType": "page_view",
                      "eventData": {"url": "/product/123"}},
        }))
        kinds: dict[str, dict[str, Any]] = {}
        while len(kinds) < 3:
            message = await ws_json(ws)
            kinds[message["type"]] = message
        assert kinds["ack"]["requestId"] == "r1" and kinds["ack"]["processed"] is True
        event = kinds["behavioral_event"]
        assert event["eventId"] == kinds["ack"]["eventId"]
        assert event["sessionId"] == "session_123" and event["eventType"] == "page_view"
        assert event["session"]["currentPage"] == "/product/123"
        metrics = kinds["session_metrics"]
        assert metrics["metrics"]["eventCount"] == 1 and metrics["metrics"]["pageViews"] == 1


async def test_behavioral_ws_batch_ack_and_invalid_message(server: ServerProcess) -> None:
    async with open_websocket_url(f"{server.ws_url}/api/v1/behavioral/stream") as ws:
        await ws.send_message(json.dumps({"type": "batch", "requestId": "b1", "events": [
            {"sessionId": "s", "eventType": "click", "eventId": "c-1"},
            {"sessionId": "s"},
        ]}))
        ack = await ws_until(ws, "batch_ack")
        assert ack["requestId"] == "b1" and ack["stored"] == 1
        assert ack["rejected"] == [{"index": 1, "field": "$.events[1].eventType", "reason": "required field is missing"}]
        await ws.send_message("{not json")
        error = await ws_until(ws, "error")
        assert error["code"] == "malformed_json"
        await ws.send_message(json.dumps({"type": "teleport"}))
        error = await ws_until(ws, "error")
        assert error["field"] == "$.type"
        # the socket is still usable after bad input
        await ws.send_message(json.dumps({"type": "ping", "requestId": "p"}))
        assert (await ws_until(ws, "pong"))["requestId"] == "p"


async def test_msgpack_subprotocol(server: ServerProcess) -> None:
    async with open_websocket_url(f"{server.ws_url}/api/v1/behavioral/stream", subprotocols=["pulse.msgpack"]) as ws:
        await ws.send_message(msgspec.msgpack.encode({"type": "connection", "sessionId": "m1"}))
        with trio.fail_after(STEP_S):
            raw = await ws.get_message()
        assert isinstance(raw, bytes)
        assert msgspec.msgpack.decode(raw)["type"] == "connection_ack"
        await ws.send_message(msgspec.msgpack.encode({"type": "event", "requestId": "x",
                                                      "event": {"sessionId": "m1", "eventType": "scroll"}}))
        seen = set()
        with trio.fail_after(STEP_S):
            while "ack" not in seen:
                seen.add(msgspec.msgpack.decode(await ws.get_message())["type"])
    async with httpx.AsyncClient(base_url=server.url) as client:
        stored = (await client.get("/api/events", params={"sessionId": "m1"})).json()
    assert [e["name"] for e in stored["events"]] == ["scroll"]


async def test_sse_refuses_resume_ids_that_cannot_be_real(server: ServerProcess) -> None:
    """An id past int64, or a stream position far in the future, would break or silence the
    stream after its 200: refuse it up front with a 400 that names the header."""
    for bad in ("9223372036854775808", "99999999999999-0/0", "abc"):
        async with SSEClient(f"{server.url}/api/events/stream", {"Last-Event-ID": bad}) as sse:
            assert sse.status == 400, bad
            assert json.loads(await sse.body())["error"]["field"] == "Last-Event-ID"
