"""Regressions found in review: each test reproduces what a hostile or careless client did."""

from __future__ import annotations

import json
import pathlib
import socket

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from tests.e2e.server_process import ServerProcess

STEP_S = 10


async def test_public_key_cannot_widen_its_stream_with_subscribe(keyed_server: ServerProcess) -> None:
    url = f"{keyed_server.ws_url}/api/v1/behavioral/stream?key={keyed_server.public_key}"
    async with open_websocket_url(url) as ws:
        await ws.send_message(json.dumps({"type": "subscribe", "subscriptions": ["behavioral_events"]}))
        with trio.fail_after(STEP_S):
            refused = json.loads(await ws.get_message())
        assert refused["type"] == "error" and refused["code"] == "forbidden"
        async with httpx.AsyncClient(base_url=keyed_server.url) as http:
            sent = await http.post("/api/v1/behavioral/events", json={"sessionId": "victim", "eventType": "click"},
                                   headers={"X-API-Key": keyed_server.public_key})
            assert sent.status_code == 200
        await ws.send_message(json.dumps({"type": "ping", "requestId": "after"}))
        with trio.fail_after(STEP_S):
            # the next message is the pong: the other session's event never arrives
            assert json.loads(await ws.get_message())["type"] == "pong"


async def test_only_the_default_projects_secret_key_manages_projects(keyed_server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=keyed_server.url) as http:
        owner = {"Authorization": f"Bearer {keyed_server.secret_key}"}
        created = await http.post("/api/admin/projects", json={"name": "tenant-b"}, headers=owner)
        assert created.status_code == 201
        tenant = {"Authorization": f"Bearer {created.json()['secretKey']}"}
        listing = await http.get("/api/admin/projects", headers=tenant)
        assert listing.status_code == 403
        assert keyed_server.secret_key not in listing.text
        assert (await http.post("/api/admin/projects", json={"name": "c"}, headers=tenant)).status_code == 403
        names = [p["name"] for p in (await http.get("/api/admin/projects", headers=owner)).json()["projects"]]
        assert sorted(names) == ["default", "tenant-b"]


async def test_events_sent_just_before_a_websocket_close_are_stored_and_processed(server: ServerProcess) -> None:
    for n in range(10):
        async with open_websocket_url(f"{server.ws_url}/api/v1/behavioral/stream") as ws:
            await ws.send_message(json.dumps({"type": "event", "requestId": str(n),
                                              "event": {"sessionId": "unload", "eventType": "exit", "eventId": f"x{n}"}}))
        # closed right after sending, without waiting for the ack (a page unload)
    async with httpx.AsyncClient(base_url=server.url) as http:
        with trio.fail_after(STEP_S):
            while True:
                stored = (await http.get("/api/events", params={"sessionId": "unload"})).json()
                if stored["filtered"] == 10:
                    break
                await trio.sleep(0.05)
    assert sorted(e["payload"]["eventId"] for e in stored["events"]) == sorted(f"x{n}" for n in range(10))


def test_sigterm_exits_promptly_while_a_subscriber_has_stopped_reading(tmp_path: pathlib.Path) -> None:
    """A client that never reads its socket must not keep the server from shutting down."""
    proc = ServerProcess(tmp_path / "data").start()
    host, port = proc.url.removeprefix("http://").split(":")
    stalled = socket.create_connection((host, int(port)))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(b"GET /api/events/stream HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
    try:
        with httpx.Client(base_url=proc.url, timeout=10) as http:
            big = {"serviceName": "s", "metadata": {"pad": "x" * 200_000}}
            for _ in range(20):  # ~4 MB towards a client that reads nothing
                assert http.post("/api/events/track/big", json=big).status_code == 200
        # stop() waits STOP_TIMEOUT_S (the server's own shutdown bound, 10 s) and fails beyond it
        assert proc.stop() == 0
    finally:
        stalled.close()
        proc.kill()


@pytest.mark.parametrize("route", ["/api/events?from=0001-01-01T00:00:00%2B14:00", "/api/events?to=9999-12-31T23:59:59-14:00"])
async def test_times_out_of_range_are_400(client: httpx.AsyncClient, route: str) -> None:
    answer = await client.get(route)
    assert answer.status_code == 400
    assert answer.json()["error"]["field"] in ("from", "to")
