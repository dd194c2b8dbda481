"""The ASGI application: hot routes and streams first, everything else to the Quart app.

Routing here is a handful of string comparisons, cheaper than any router; the read and admin
routes live in Quart (server/read_app.py). Errors from the hot routes become 4xx/503 answers with
the field and the reason; an unexpected exception is logged and answered 500 (and counted).
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Final

import msgspec

from protocol.errors import InvalidInput, error_body
from server import ingest_routes, sse
from server.context import Pulse
from server.http import Exchange, Message, Receive, Request, Scope, Send, encode_json, respond
from server.read_app import create_read_app
from server.ws import websocket_endpoint

log = logging.getLogger("pulse.http")

STREAM_PATHS: Final = ("/api/events/stream", "/api/v1/behavioral/stream")
_json = msgspec.json.Encoder()


def hot_methods(path: str) -> tuple[str, str] | None:
    """The methods answered on a path of the hot routes, the one served first (the others: the
    405's Allow, RFC 9110 15.5.6); None for the Quart app's paths. OPTIONS is every path's
    CORS preflight. The streams do not answer HEAD: their answer has no end to measure."""
    if path in STREAM_PATHS:
        return ("GET", "OPTIONS")
    if ingest_routes.hot_route(path) is not None:  # the ingest routes, whatever their vendor
        return ("POST", "OPTIONS")
    return None


class PulseApp:
    def __init__(self, pulse: Pulse) -> None:
        self.pulse = pulse
        # typed loosely: Quart's ASGI signature is stricter than the plain dicts we pass along
        self.read_app: Any = create_read_app(pulse)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.http(scope, receive, send)
        elif kind == "websocket":
            await self.websocket(scope, receive, send)
        else:  # lifespan
            await self.read_app(scope, receive, send)

    async def websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if path in ("/api/v1/behavioral/stream", "/behavioral/stream"):
            behavioral = True
        elif path == "/api/events/ws":
            behavioral = False
        else:
            await send({"type": "websocket.close", "code": 1008})
            return
        accepted = False

        async def tracking_send(message: Message) -> None:
            nonlocal accepted
            await send(message)
            accepted = accepted or message["type"] == "websocket.accept"  # only once it went through

        try:
            await websocket_endpoint(self.pulse, scope, receive, tracking_send, behavioral=behavioral)
        except Exception:
            # hypercorn 0.18 turns an app exception before accept into an error that takes down
            # its whole server nursery: never let one escape from here.
            log.exception("websocket handler failed on %s", path)
            if not accepted:
                try:
                    await send({"type": "websocket.close", "code": 1011})
                except Exception:  # noqa: BLE001  the handshake state may be unusable; the close is best effort
                    log.debug("could not close a failed websocket handshake", exc_info=True)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        pulse = self.pulse
        method, path = scope["method"], scope["path"]
        origin = None
        framing = 0  # Content-Length and Transfer-Encoding headers seen
        for name, value in scope.get("headers", ()):
            if name == b"origin":
                origin = value.decode("latin-1")
            elif name == b"content-length" or name == b"transfer-encoding":
                framing += 1
        if framing > 1:
            await self.refuse_ambiguous_framing(send, origin)
            return
        if method == "OPTIONS":
            await respond(send, 200, b"", content_type=b"text/plain", headers=pulse.cors.preflight_headers(origin))
            return
        exchange = Exchange(scope, receive, send, pulse.cors.headers_for(origin))
        try:
            handled = await self.route(method, path, scope, exchange.receive, exchange.send, started)
            if not handled:
                await self.read_app(scope, exchange.receive, exchange.send)
        finally:
            if path not in STREAM_PATHS:
                pulse.metrics.count_response(exchange.status, (time.perf_counter() - started) * 1000)

    async def refuse_ambiguous_framing(self, send: Send, origin: str | None) -> None:
        """Both Content-Length and Transfer-Encoding, or Content-Length twice: the body's end is
        ambiguous, the shape of request smuggling (RFC 9112 6.3). h11 would follow the
        Transfer-Encoding (or a repeated equal length); Pulse answers 400 and closes the
        connection, as its native edge does (server/edge/)."""
        refusal = InvalidInput("content-length", "a request may carry one Content-Length or a Transfer-Encoding, "
                               "not both or twice", code="ambiguous_framing")
        headers = [*self.pulse.cors.headers_for(origin), (b"connection", b"close")]
        self.pulse.metrics.count_response(400, 0.0)
        await respond(send, 400, encode_json(error_body(refusal)), headers=headers)

    async def route(self, method: str, path: str, scope: Scope, receive: Receive, send: Send, started: float) -> bool:
        pulse = self.pulse
        req = Request(scope, receive)
        ingest = ingest_routes.hot_route(path) if method == "POST" else None
        if ingest is not None:
            try:
                body = await ingest(pulse, req, started)
            except Exception as err:  # noqa: BLE001  each refusal becomes its answer (a bug: 500, logged)
                status, body, headers = ingest_routes.error_answer(err, method, path, pulse)
                await respond(send, status, body, headers=headers)
            else:
                await respond(send, 200, body)
            return True
        allowed = hot_methods(path)
        if allowed is None:
            return False  # a route of the Quart app (which answers its own 404 and 405)
        if method != allowed[0]:
            names = ", ".join(allowed)
            reason = f"method {method} not allowed on {path!r}; use {names}"
            refusal = {"success": False, "error": {"code": "method_not_allowed", "reason": reason}}
            await respond(send, 405, _json.encode(refusal), headers=[(b"allow", names.encode())])
            return True
        try:
            await sse.stream(pulse, req, send, behavioral=path == "/api/v1/behavioral/stream")
        except Exception as err:  # noqa: BLE001
            status, answer, headers = ingest_routes.error_answer(err, method, path, pulse)
            with contextlib.suppress(Exception):  # the response may have started already
                await respond(send, status, answer, headers=headers)
        return True
