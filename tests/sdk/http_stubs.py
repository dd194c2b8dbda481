"""Real HTTP servers on loopback that stand in front of (or in place of) Pulse, for the SDK tests:
scripted answers, a gate that holds answers back, and a proxy that loses Pulse's first answer."""

from __future__ import annotations

import gzip
import http.server
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

WAIT_S = 15.0  # generous deadline for conditions the tests wait for


@dataclass
class Received:
    """One request as the stub saw it, with its body inflated and decoded."""

    at: float  # time.monotonic() on arrival
    path: str
    headers: dict[str, str]
    raw: bytes  # as sent on the wire
    body: Any


@dataclass
class Script:
    """What the stub answers: ``answers`` are (status, headers, body) taken in order, the last one
    repeating; ``gate`` (when set) holds each answer back until it is set."""

    answers: list[tuple[int, dict[str, str], bytes]]
    gate: threading.Event | None = None
    received: list[Received] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, count: int, timeout: float = WAIT_S) -> list[Received]:
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.received) >= count, timeout):
                raise AssertionError(f"stub got {len(self.received)} requests, expected {count}")
            return list(self.received)

    def events(self) -> list[dict[str, Any]]:
        """Every event of every request received, in order."""
        return [event for request in self.received for event in request.body["events"]]


def ok_answer(events: int) -> tuple[int, dict[str, str], bytes]:
    body = {"success": True, "processedCount": events, "storedCount": events, "duplicateCount": 0,
            "rejectedCount": 0, "rejected": [], "results": [], "suggestions": [], "batchId": None,
            "timestamp": "2026-01-01T00:00:00.000Z"}  # fmt: skip
    return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()


def decode_request(headers: dict[str, str], raw: bytes) -> Any:
    data = gzip.decompress(raw) if headers.get("content-encoding") == "gzip" else raw
    return json.loads(data)


class _Quiet(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (the stdlib's name)
        pass

    def _read(self) -> tuple[dict[str, str], bytes]:
        headers = {k.lower(): v for k, v in self.headers.items()}
        raw = self.rfile.read(int(headers.get("content-length", "0")))
        return headers, raw


def _scripted_handler(script: Script) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(_Quiet):
        def do_POST(self) -> None:
            headers, raw = self._read()
            with script.cond:
                script.received.append(Received(time.monotonic(), self.path, headers, raw, decode_request(headers, raw)))
                index = len(script.received) - 1
                script.cond.notify_all()
            if script.gate is not None:
                script.gate.wait(WAIT_S)
            status, extra, body = script.answers[min(index, len(script.answers) - 1)]
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """A threading HTTP server on a free loopback port; yields its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(WAIT_S)


@contextmanager
def stub(script: Script) -> Iterator[str]:
    with serving(_scripted_handler(script)) as url:
        yield url


@dataclass
class ProxyLog:
    forwarded: int = 0  # requests forwarded to Pulse
    answers_lost: int = 0  # Pulse answers the proxy threw away (closing the connection instead)


def _losing_proxy_handler(upstream: str, lose_first: int, log: ProxyLog) -> type[http.server.BaseHTTPRequestHandler]:
    lock = threading.Lock()

    class Handler(_Quiet):
        def do_POST(self) -> None:
            headers, raw = self._read()
            keep = {k: v for k, v in headers.items() if k in ("content-type", "content-encoding", "authorization")}
            request = urllib.request.Request(upstream + self.path, data=raw, headers=keep, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=WAIT_S) as response:
                    status, body = response.status, response.read()
            except urllib.error.HTTPError as err:
                status, body = err.code, err.read()
            with lock:
                log.forwarded += 1
                lose = log.answers_lost < lose_first
                if lose:
                    log.answers_lost += 1
            if lose:  # Pulse has stored the batch; its client never hears so
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@contextmanager
def losing_proxy(upstream: str, lose_first: int = 1) -> Iterator[tuple[str, ProxyLog]]:
    """A proxy to ``upstream`` that forwards every request but drops the first ``lose_first`` answers."""
    log = ProxyLog()
    with serving(_losing_proxy_handler(upstream, lose_first, log)) as url:
        yield url, log


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT_S, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
