"""WebSocket keepalive: the server pings, and closes a peer that stops answering (code 3001)."""

from __future__ import annotations

import pathlib

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, Request

from tests.e2e.server_process import ServerProcess

PING_INTERVAL_S = 0.3
PING_TIMEOUT_S = 1.0  # a silent peer goes after interval + timeout; a live one answers far sooner
FAST_PINGS = {"PULSE_WS_PING_INTERVAL": str(PING_INTERVAL_S), "PULSE_WS_PING_TIMEOUT": str(PING_TIMEOUT_S)}
# pings a live peer answers without being closed: they span the silent peer's deadline twice over
PINGS_KEPT = 2 * round((PING_INTERVAL_S + PING_TIMEOUT_S) / PING_INTERVAL_S)
STEP_S = 10


async def _open(url: str) -> tuple[trio.SocketStream, WSConnection]:
    host, port = url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(ws.send(Request(host=host, target="/api/v1/behavioral/stream")))
    return stream, ws


async def _events(stream: trio.SocketStream, ws: WSConnection, *, answer_pings: bool, until: type) -> list[object]:
    seen: list[object] = []
    with trio.fail_after(STEP_S):
        while True:
            data = await stream.receive_some(65536)
            ws.receive_data(data or None)
            for event in ws.events():
                seen.append(event)
                if isinstance(event, Ping) and answer_pings:
                    await stream.send_all(ws.send(event.response()))
                if isinstance(event, until):
                    return seen
            if not data:
                return seen


async def test_silent_peer_is_closed_with_3001_and_a_live_one_is_kept(tmp_path: pathlib.Path) -> None:
    proc = ServerProcess(tmp_path / "data", env=FAST_PINGS).start()
    try:
        silent_stream, silent = await _open(proc.url)
        seen = await _events(silent_stream, silent, answer_pings=False, until=CloseConnection)
        assert isinstance(seen[0], AcceptConnection)
        assert any(isinstance(e, Ping) for e in seen)
        close = seen[-1]
        assert isinstance(close, CloseConnection) and close.code == 3001
        await silent_stream.aclose()

        live_stream, live = await _open(proc.url)
        for _ in range(PINGS_KEPT):  # a peer that answers stays open, however long it is idle
            seen = await _events(live_stream, live, answer_pings=True, until=Ping)
            assert not any(isinstance(e, CloseConnection) for e in seen), seen
            assert isinstance(seen[-1], Ping), seen  # not the end of the stream
        await live_stream.aclose()
    finally:
        assert proc.stop() == 0
