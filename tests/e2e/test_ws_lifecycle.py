"""WebSocket connections served by one task each (server/ws.py): what must still hold end to end.

A slow subscriber is closed with 3008 after what was queued; shutdown closes every socket with 1001,
listening or ingesting; a client may have more events in flight than the per-socket limit and
flood the server with messages, and still gets every answer; an idle keep-alive HTTP connection
is closed at once when the server shuts down.
"""

from __future__ import annotations

import json
import pathlib
import signal

import httpx
import trio

from tests.e2e.server_process import ServerProcess
from tests.e2e.ws_client import STEP_S, Client


async def _exited(proc: ServerProcess) -> None:
    """Wait for a server we sent SIGTERM to exit (a second signal while it drains would kill it)."""
    assert proc.proc is not None
    await trio.to_thread.run_sync(proc.proc.wait, STEP_S)


async def test_a_subscriber_that_falls_behind_is_closed_with_3008_after_what_was_queued(
        server: ServerProcess, client: httpx.AsyncClient) -> None:
    ws = await Client.connect(server.url, "/api/v1/behavioral/stream")
    await ws.send({"type": "connection"})  # the whole project
    assert (await ws.json())["type"] == "connection_ack"
    # one batch is offered to the subscriber in one go: 1,000 events + 100 sessions' metrics are
    # more than its queue holds (1,024 frames), so it is too slow by definition
    events = [{"sessionId": f"slow-{i % 100}", "eventType": "click"} for i in range(1000)]
    answer = await client.post("/api/v1/behavioral/batch", json={"events": events})
    assert answer.status_code == 200, answer.text
    code, seen = await ws.until_closed()
    await ws.aclose()
    assert code == 3008
    assert len(seen) == 1024  # everything queued before the eviction is still delivered
    assert {m["type"] for m in seen} <= {"behavioral_event", "session_metrics"}
    performance = (await client.get("/api/v1/behavioral/monitoring/performance")).json()
    assert performance["drops"]["slow_subscriber"] == 1
    assert performance["connections"]["websockets"] == 0


async def test_shutdown_closes_listening_and_ingesting_sockets_with_1001(tmp_path: pathlib.Path) -> None:
    proc = ServerProcess(tmp_path / "data").start()
    try:
        listener = await Client.connect(proc.url, "/api/v1/behavioral/stream")
        sender = await Client.connect(proc.url, "/api/v1/behavioral/stream")
        tracker = await Client.connect(proc.url, "/api/events/ws")
        await listener.send({"type": "connection", "sessionId": "drain-1"})
        assert (await listener.json())["type"] == "connection_ack"
        await sender.send({"type": "event", "requestId": "e1", "event": {"sessionId": "drain-2", "eventType": "click"}})
        assert (await sender.json())["type"] == "ack"  # this socket now ingests (has a nursery)
        assert (await tracker.json())["type"] == "connected"
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGTERM)
        for ws in (listener, sender, tracker):
            code, _ = await ws.until_closed()
            await ws.aclose()
            assert code == 1001
        await _exited(proc)
    finally:
        assert proc.stop() == 0


async def test_more_events_in_flight_than_the_socket_limit_are_all_acked(server: ServerProcess) -> None:
    ws = await Client.connect(server.url, "/api/v1/behavioral/stream")
    for i in range(40):  # IN_FLIGHT_PER_SOCKET is 8: the rest wait for a free slot
        await ws.send({"type": "event", "requestId": f"r{i}",
                       "event": {"sessionId": f"many-{i % 3}", "eventType": "scroll"}})
    acks: set[str] = set()
    while len(acks) < 40:
        message = await ws.json()
        assert message["type"] == "ack" and message["processed"] is True, message
        acks.add(message["requestId"])
    await ws.aclose()
    assert acks == {f"r{i}" for i in range(40)}


async def test_a_client_that_floods_messages_without_reading_gets_every_answer(server: ServerProcess) -> None:
    ws = await Client.connect(server.url, "/api/v1/behavioral/stream")
    for i in range(300):  # far more than hypercorn's app queue (10): its reader waits for us
        await ws.send({"type": "ping", "requestId": f"p{i}"})
    answers = [await ws.json() for _ in range(300)]
    await ws.aclose()
    assert [a["requestId"] for a in answers] == [f"p{i}" for i in range(300)]
    assert {a["type"] for a in answers} == {"pong"}


async def test_an_idle_keep_alive_connection_is_closed_at_once_on_shutdown(tmp_path: pathlib.Path) -> None:
    proc = ServerProcess(tmp_path / "data").start()
    try:
        host, port = proc.url.removeprefix("http://").split(":")
        stream = await trio.open_tcp_stream(host, int(port))
        await stream.send_all(f"GET /api/v1/behavioral/health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        response = b""
        with trio.fail_after(STEP_S):
            while b"\r\n\r\n" not in response:
                response += await stream.receive_some(65536)
        assert response.startswith(b"HTTP/1.1 200")
        # A busy connection beside it: a request whose body is still on its way. Shutdown gives
        # such a request the graceful timeout (3 s) and ends it at that deadline.
        busy = await trio.open_tcp_stream(host, int(port))
        body = json.dumps({"sessionId": "shutdown-busy", "eventType": "click"}).encode()
        await busy.send_all(
            f"POST /api/v1/behavioral/events HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Expect: 100-continue\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        interim = b""
        with trio.fail_after(STEP_S):  # the server has the request and waits for its body
            while b"\r\n\r\n" not in interim:
                interim += await busy.receive_some(65536)
        assert interim.startswith(b"HTTP/1.1 100"), interim
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGTERM)
        with trio.fail_after(STEP_S):
            while await stream.receive_some(65536):
                pass  # the rest of the body, then the server's close
        # The idle connection went while the busy request was still being served: its body, sent
        # only now, still gets an answer. (Closed at the graceful deadline instead, the idle
        # connection would go together with the busy one, which would then get no answer.)
        await busy.send_all(body)
        answer = b""
        with trio.fail_after(STEP_S):
            while b"\r\n" not in answer and (chunk := await busy.receive_some(65536)):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 "), answer
        await busy.aclose()
        await stream.aclose()
        await _exited(proc)
    finally:
        assert proc.stop() == 0
