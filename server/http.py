"""Plain-ASGI request/response helpers for the hot routes: capped body reads, gzip, JSON answers.

The ingest routes and streams are ASGI handlers without Quart's per-request machinery (DESIGN.md:
it costs ~30% of a small request). Every failure here is a 4xx naming the field and the reason.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final, Protocol
from urllib.parse import parse_qsl

import msgspec
import trio

from protocol.errors import InvalidInput, TooLarge

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY_BYTES: Final = 5 * 1024 * 1024  # as sent on the wire (compressed or not)
MAX_INFLATED_BYTES: Final = 20 * 1024 * 1024  # after gzip: a zip bomb stops here with 413
BODY_TIMEOUT_S: Final = 30.0  # a body that has not fully arrived by then is answered 408
JSON_TYPES: Final = ("application/json", "text/plain", "application/csp-report")  # text/plain: sendBeacon
MSGPACK_TYPES: Final = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")

_json = msgspec.json.Encoder()


class HotRequest(Protocol):
    """What the ingest routes read of a request: ``Request`` here, or the native edge's
    (server/edge/native.py)."""

    @property
    def headers(self) -> dict[str, str]: ...
    @property
    def query(self) -> dict[str, str]: ...
    @property
    def peer(self) -> str | None: ...  # the socket's remote address (server/privacy/client_ip.py)
    async def read(self) -> bytes: ...


class Request:
    """The parts of an ASGI HTTP request Pulse reads, decoded once."""

    __slots__ = ("scope", "receive", "headers", "path", "method", "_query")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self.receive = receive
        self.path: str = scope["path"]
        self.method: str = scope["method"]
        self.headers: dict[str, str] = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())
        }
        self._query: dict[str, str] | None = None

    @property
    def peer(self) -> str | None:
        client = self.scope.get("client")
        return client[0] if client else None

    @property
    def query(self) -> dict[str, str]:
        if self._query is None:
            raw = self.scope.get("query_string", b"").decode("latin-1")
            self._query = dict(parse_qsl(raw, keep_blank_values=True))
        return self._query

    async def read(self) -> bytes:
        """The request body as sent (not inflated), capped, under one deadline."""
        declared = self.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise TooLarge("body", f"body of {int(declared)} bytes exceeds the limit of {MAX_BODY_BYTES}")
        chunks: list[bytes] = []
        size = 0
        deadline = trio.current_time() + BODY_TIMEOUT_S
        while True:
            with trio.move_on_at(deadline) as scope:
                message = await self.receive()
            if scope.cancelled_caught:
                raise InvalidInput("body", f"the body did not arrive within {BODY_TIMEOUT_S:g} s",
                                   status=408, code="request_timeout")
            if message["type"] == "http.disconnect":
                raise InvalidInput("body", "client disconnected before the body was complete")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise TooLarge("body", f"body exceeds the limit of {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def is_msgpack(headers: dict[str, str]) -> bool:
    """A body's format from its Content-Type: True for MessagePack, False for JSON; 415 otherwise."""
    ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if not ctype or ctype in JSON_TYPES or ctype.endswith("+json"):
        return False
    if ctype in MSGPACK_TYPES:
        return True
    raise InvalidInput(
        "content-type",
        f"unsupported content type {ctype!r}; send application/json or application/msgpack",
        status=415,
        code="unsupported_media_type",
    )


def decode_body(headers: dict[str, str], body: bytes) -> bytes:
    """A whole request body as sent, inflated when gzip/deflate encoded (capped after inflating)."""
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip", "deflate"):
        return inflate(body, gzip=encoding != "deflate")
    raise InvalidInput(
        "content-encoding", f"unsupported content encoding {encoding!r}", status=415, code="unsupported_encoding"
    )


def inflate(data: bytes, *, gzip: bool) -> bytes:
    """Decompress with a hard cap on the output size (zip bombs get 413, not our memory)."""
    inflater = zlib.decompressobj(wbits=31 if gzip else 15)
    try:
        out = inflater.decompress(data, MAX_INFLATED_BYTES + 1)
    except zlib.error as exc:
        raise InvalidInput("body", f"body is not valid {'gzip' if gzip else 'deflate'}: {exc}") from None
    if len(out) > MAX_INFLATED_BYTES or inflater.unconsumed_tail:
        raise TooLarge("body", f"decompressed body exceeds the limit of {MAX_INFLATED_BYTES} bytes")
    if not inflater.eof or inflater.unused_data:
        raise InvalidInput("body", f"{'gzip' if gzip else 'deflate'} body is truncated or has trailing data")
    return out


def encode_json(body: Any) -> bytes:
    return _json.encode(body)


async def respond(
    send: Send,
    status: int,
    body: bytes,
    *,
    content_type: bytes = b"application/json",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    out = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if headers:
        out.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": body})


DRAIN_MAX_BYTES: Final = 16 * 1024 * 1024  # rest of a refused body we read and drop to keep the connection
DRAIN_TIMEOUT_S: Final = 5.0


class Exchange:
    """One HTTP request/response as the app sees it: wraps ASGI receive/send to

    - add the CORS headers to the response,
    - remember the status (for the metrics),
    - keep a keep-alive connection usable when we answer before reading the whole body (a 401, a
      413): the rest is read and dropped, up to a cap and under a deadline, or else the answer says
      ``Connection: close`` so the client does not send its next request into a closing socket.
    """

    __slots__ = ("_receive", "_send", "extra_headers", "status", "body_done", "_reading", "_done", "_gone")

    def __init__(self, scope: Scope, receive: Receive, send: Send, extra_headers: list[tuple[bytes, bytes]]) -> None:
        self._receive = receive
        self._send = send
        self.extra_headers = extra_headers
        self.status = 500
        self.body_done = not _has_body(scope)
        self._reading = 0  # receive() calls in flight (Quart reads the body in a task of its own)
        self._done: trio.Event | None = None
        self._gone = False  # the client disconnected: every later receive() says so again

    async def receive(self) -> Message:
        if self._gone:
            return {"type": "http.disconnect"}
        self._reading += 1
        try:
            message = await self._receive()
        finally:
            self._reading -= 1
        if message["type"] == "http.disconnect":
            self._gone = True
        if self._gone or not message.get("more_body", False):
            self.body_done = True
            if self._done is not None:
                self._done.set()
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            headers = [*message.get("headers", ()), *self.extra_headers]
            if not self.body_done and not await self._drain():
                headers.append((b"connection", b"close"))
            message = {**message, "headers": headers}
        await self._send(message)

    async def _drain(self) -> bool:
        dropped = 0
        with trio.move_on_after(DRAIN_TIMEOUT_S):
            while not self.body_done:
                if self._reading:
                    # someone else is already reading the body: wait for them to reach its end
                    self._done = self._done or trio.Event()
                    await self._done.wait()
                    continue
                dropped += len((await self.receive()).get("body", b""))
                if dropped > DRAIN_MAX_BYTES:
                    return False
            return True
        return False


def _has_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return value.strip() not in (b"0", b"")
        if name == b"transfer-encoding":
            return True
    return False
