"""A small SSE client over a raw trio socket and h11 (no async generators to leak under trio)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import h11
import trio

STEP_S = 10  # per-message deadline: a hang fails the test instead of stalling the suite


class SSEClient:
    """``async with SSEClient(url, headers) as sse: status, msg = sse.status, await sse.next()``."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.url = urlsplit(url)
        self.headers = headers or {}
        self.conn = h11.Connection(h11.CLIENT)
        self.buffer = ""
        self.status = 0
        self.response_headers: dict[str, str] = {}
        self.stream: trio.SocketStream | None = None

    async def __aenter__(self) -> SSEClient:
        self.stream = await trio.open_tcp_stream(self.url.hostname or "127.0.0.1", self.url.port or 80)
        target = self.url.path + (f"?{self.url.query}" if self.url.query else "")
        headers = [("host", self.url.netloc), ("accept", "text/event-stream"), *self.headers.items()]
        await self.stream.send_all(self.conn.send(h11.Request(method="GET", target=target, headers=headers)))
        await self.stream.send_all(self.conn.send(h11.EndOfMessage()))
        while True:
            event = await self._next_event()
            if isinstance(event, h11.Response):
                self.status = event.status_code
                self.response_headers = {k.decode(): v.decode() for k, v in event.headers}
                return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.stream is not None
        await self.stream.aclose()

    async def _next_event(self) -> Any:
        assert self.stream is not None
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.stream.receive_some(65536))
                continue
            return event

    async def body(self) -> bytes:
        """The whole body of a non-stream answer (e.g. a 4xx)."""
        chunks = []
        while True:
            event = await self._next_event()
            if isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return b"".join(chunks)

    async def next(self) -> tuple[str | None, dict[str, Any]]:
        """The next message with a data line: (id or None, parsed data)."""
        while True:
            if "\n\n" in self.buffer:
                block, self.buffer = self.buffer.split("\n\n", 1)
                event_id, data = None, None
                for line in block.split("\n"):
                    if line.startswith("id: "):
                        event_id = line[4:]
                    elif line.startswith("data: "):
                        data = json.loads(line[6:])
                if data is not None:
                    return event_id, data
                continue
            event = await self._next_event()
            if isinstance(event, h11.Data):
                self.buffer += bytes(event.data).decode()
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                raise EOFError("stream ended")

    async def next_of_type(self, kind: str) -> tuple[str | None, dict[str, Any]]:
        with trio.fail_after(STEP_S):
            while True:
                event_id, data = await self.next()
                if data.get("type") == kind:
                    return event_id, data
