"""The native path for the hot ingest routes: llhttp (httptools) parses, Pulse answers in one write.

A request takes this path when llhttp parses its request line and headers cleanly and it is a POST
to an ingest route (``ingest_routes.hot_route``) with a Content-Length, no Transfer-Encoding, no
Upgrade, and (HTTP/1.1) a Host. Everything else, including whatever llhttp refuses, goes to
hypercorn's protocol classes from the request's first byte, so both edges answer it the same way.
The parser stops at the end of the headers (``HeadParser``): the body is framed by its
Content-Length, and nothing past the request is parsed before it is answered.
"""

from __future__ import annotations

import time
from email.utils import formatdate
from typing import Final
from urllib.parse import parse_qsl, unquote

import httptools

MAX_HEAD_BYTES: Final = 16 * 1024  # request line + headers; h11's default limit too (431 beyond it)
_REASONS: Final = {200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found",
                   408: b"Request Timeout", 413: b"Payload Too Large", 415: b"Unsupported Media Type",
                   429: b"Too Many Requests", 431: b"Request Header Fields Too Large",
                   500: b"Internal Server Error", 503: b"Service Unavailable"}


class _HeadDone(Exception):
    """Raised from on_headers_complete to stop llhttp right after the headers."""


class HeadParser:
    """One request's line and headers, from llhttp's callbacks."""

    __slots__ = ("parser", "url", "headers", "done", "error", "method", "http10", "keep_alive")

    def __init__(self) -> None:
        # parser <-> self is a reference cycle: on_headers_complete breaks it, so a parsed head is
        # freed at once rather than by the cyclic GC (which main.py makes rare)
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: dict[str, str] = {}
        self.done = False
        self.error: str | None = None  # llhttp's reason, when it refused the request
        self.method = b""
        self.http10 = False
        self.keep_alive = False

    def feed(self, data: bytes | bytearray) -> None:
        """Parse more of the request's head; ``done`` or ``error`` tell when it is over."""
        parser = self.parser
        if parser is None:
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if not self.done:
                self.error = str(exc) or type(exc).__name__
                self.parser = None

    def ambiguous_framing(self) -> bool:
        """llhttp refused the head over where its body ends (Content-Length twice or malformed, or
        with a Transfer-Encoding): the shape of request smuggling, refused with 400 and a close."""
        return self.error is not None and ("Content-Length" in self.error or "Transfer-Encoding" in self.error)

    # llhttp's callbacks
    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        if key in self.headers:  # a repeated header: one value, as ASGI apps read them
            self.headers[key] = f"{self.headers[key]}, {value.decode('latin-1')}"
        else:
            self.headers[key] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        parser = self.parser
        assert parser is not None
        self.method = parser.get_method()
        self.http10 = parser.get_http_version() == "1.0"
        self.keep_alive = bool(parser.should_keep_alive())
        self.done = True
        self.parser = None
        raise _HeadDone


class NativeRequest:
    """A hot request as the ingest routes read it (server.http.HotRequest)."""

    __slots__ = ("headers", "_raw_query", "_query", "body", "peer")

    def __init__(self, headers: dict[str, str], raw_query: bytes, body: bytes, peer: str | None = None) -> None:
        self.headers = headers
        self.peer = peer  # the socket's remote address
        self._raw_query = raw_query
        self._query: dict[str, str] | None = None
        self.body = body

    @property
    def query(self) -> dict[str, str]:
        if self._query is None:
            self._query = dict(parse_qsl(self._raw_query.decode("latin-1"), keep_blank_values=True))
        return self._query

    async def read(self) -> bytes:
        return self.body


def split_target(url: bytes) -> tuple[str, bytes]:
    """(path, query) of a request target; a percent-encoded path is decoded as ASGI servers do."""
    path, _, query = url.partition(b"?")
    text = path.decode("latin-1")
    if "%" in text:
        text = unquote(text)
    return text, query


class DateHeader:
    """The Date header line, formatted once per second."""

    __slots__ = ("second", "line")

    def __init__(self) -> None:
        self.second = 0
        self.line = b""

    def current(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.line = b"date: " + formatdate(now, usegmt=True).encode("ascii") + b"\r\n"
        return self.line


def response(status: int, body: bytes, headers: list[tuple[bytes, bytes]], date: bytes, *, close: bool,
             content_type: bytes = b"application/json") -> bytes:
    """A whole HTTP/1.1 response, for one write."""
    parts = [b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n" % (
        status, _REASONS.get(status, b"Unknown"), content_type, len(body)), date, b"server: pulse\r\n"]
    for name, value in headers:
        parts.append(name + b": " + value + b"\r\n")
    if close:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    parts.append(body)
    return b"".join(parts)
