"""A minimal WebSocket client for end-to-end tests (wsproto on a trio stream): it sees each frame as
the server sent it (one whole message: ``str`` for text, ``bytes`` for binary), the server's close
code, and a refused handshake's status and body."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.extensions import Extension

STEP_S = 10  # generous per-step deadline: a hang fails the test instead of stalling the suite


class Rejected(Exception):
    """The server refused the handshake with an HTTP answer."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"handshake refused with {status}: {body!r}")
        self.status = status
        self.body = body


class Client:
    def __init__(self, stream: trio.SocketStream, ws: WSConnection) -> None:
        self.stream = stream
        self.ws = ws
        self.messages: list[Any] = []  # whole frames (messages), str or bytes, oldest first
        self.partial: list[Any] = []  # wsproto hands a message over in pieces when its frame spans reads
        self.close_code: int | None = None
        self.accepted: AcceptConnection | None = None
        self._rejected: tuple[int, bytearray] | None = None

    @classmethod
    async def connect(cls, base_url: str, path: str, *, subprotocols: Sequence[str] = (),
                      extensions: Sequence[Extension] = ()) -> Client:
        """Open a WebSocket on ``path`` (query string included); raises Rejected when refused."""
        host, port = base_url.removeprefix("http://").removeprefix("ws://").split(":")
        stream = await trio.open_tcp_stream(host, int(port))
        client = cls(stream, WSConnection(ConnectionType.CLIENT))
        request = Request(host=host, target=path, subprotocols=list(subprotocols), extensions=list(extensions))
        await stream.send_all(client.ws.send(request))
        with trio.fail_after(STEP_S):
            while True:
                event = await client._next_event()
                if isinstance(event, AcceptConnection):
                    client.accepted = event
                    return client
                if isinstance(event, RejectData) and event.body_finished or event is _CLOSED:
                    await stream.aclose()
                    status, body = client._rejected or (0, bytearray())
                    raise Rejected(status, bytes(body))

    async def send(self, message: dict[str, Any]) -> None:
        await self.stream.send_all(self.ws.send(TextMessage(data=json.dumps(message))))

    async def frame(self) -> Any:
        """The next frame's whole message (str or bytes)."""
        with trio.fail_after(STEP_S):
            while not self.messages:
                if self.close_code is not None:
                    raise AssertionError(f"closed with {self.close_code} while waiting for a message")
                await self._next_event()
        return self.messages.pop(0)

    async def json(self) -> dict[str, Any]:
        return json.loads(await self.frame())  # type: ignore[no-any-return]

    async def until_closed(self) -> tuple[int, list[dict[str, Any]]]:
        """Read until the server closes; returns the close code and the messages before it."""
        with trio.fail_after(STEP_S):
            while self.close_code is None:
                await self._next_event()
        seen = [json.loads(m) for m in self.messages]
        self.messages.clear()
        return self.close_code, seen

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def _next_event(self) -> object:
        for event in self.ws.events():
            return self._note(event)
        data = await self.stream.receive_some(65536)
        if not data and self._rejected is not None:
            return _CLOSED  # a refusal without a body (or the server closed after its headers)
        self.ws.receive_data(data or None)
        for event in self.ws.events():
            return self._note(event)
        return None

    def _note(self, event: object) -> object:
        if isinstance(event, Message):
            self.partial.append(event.data)
            if event.message_finished:
                whole = "".join(self.partial) if isinstance(event, TextMessage) else b"".join(self.partial)
                self.messages.append(whole)
                self.partial = []
        elif isinstance(event, CloseConnection):
            self.close_code = event.code
        elif isinstance(event, RejectConnection):
            self._rejected = (event.status_code, bytearray())
            if not event.has_body:
                return _CLOSED
        elif isinstance(event, RejectData):
            assert self._rejected is not None
            self._rejected[1].extend(event.data)
        elif isinstance(event, Ping):
            pass  # the server pings every 25 s; these tests are shorter
        return event


_CLOSED = object()
