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

from actors.pipeline import Overloaded
from protocol.errors import InvalidInput, error_body
from server import ingest_routes, sse
from server.auth import AuthError
from server.context import Pulse
from server.http import Exchange, Message, Receive, Request, Scope, Send, encode_json, respond
from server.read_app import create_read_app
from server.ws import websocket_endpoint
from storage.base import StoreError

log = logging.getLogger("pulse.http")

TRACK_PREFIX: Final = "/api/events/track/"
STREAM_PATHS: Final = ("/api/events/stream", "/api/v1/behavioral/stream")
POST_ONLY: Final = ("/api/v1/behavioral/events", "/api/v1/behavioral/batch", "/api/events/track/batch")
_json = msgspec.json.Encoder()


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
        for name, value in scope.get("headers", ()):
            if name == b"origin":
                origin = value.decode("latin-1")
                break
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

    async def route(self, method: str, path: str, scope: Scope, receive: Receive, send: Send, started: float) -> bool:
        pulse = self.pulse
        if method == "POST":
            if path == "/api/events/track/batch":
                handler = lambda req: ingest_routes.track_batch(pulse, req, send, started)  # noqa: E731
            elif path.startswith(TRACK_PREFIX):
                name = path[len(TRACK_PREFIX):]
                handler = lambda req: ingest_routes.track_one(pulse, req, send, name, started)  # noqa: E731
            elif path == "/api/v1/behavioral/events":
                handler = lambda req: ingest_routes.behavioral_one(pulse, req, send, started)  # noqa: E731
            elif path == "/api/v1/behavioral/batch":
                handler = lambda req: ingest_routes.behavioral_batch(pulse, req, send, started)  # noqa: E731
            else:
                return False
        elif path in POST_ONLY or path.startswith(TRACK_PREFIX):
            body = {"success": False, "error": {"code": "method_not_allowed", "reason": f"method {method} not allowed on {path!r}; use POST"}}
            await respond(send, 405, _json.encode(body), headers=[(b"allow", b"POST, OPTIONS")])
            return True
        elif method == "GET" and path == "/api/events/stream":
            handler = lambda req: sse.stream(pulse, req, send, behavioral=False)  # noqa: E731
        elif method == "GET" and path == "/api/v1/behavioral/stream":
            handler = lambda req: sse.stream(pulse, req, send, behavioral=True)  # noqa: E731
        else:
            return False
        req = Request(scope, receive)
        try:
            await handler(req)
        except InvalidInput as err:
            pulse.metrics.events_rejected += 1 if method == "POST" else 0
            await respond(send, err.status, encode_json(error_body(err)))
        except AuthError as err:
            code = "unauthorized" if err.status == 401 else "forbidden"
            body = {"success": False, "error": {"code": code, "reason": err.reason}}
            await respond(send, err.status, _json.encode(body))
        except Overloaded as err:
            body = {"success": False, "error": {"code": "overloaded", "reason": err.reason}}
            await respond(send, 503, _json.encode(body), headers=[(b"retry-after", str(int(err.retry_after + 0.999)).encode())])
        except StoreError as err:
            log.warning("storage unavailable: %s", err)
            body = {"success": False, "error": {"code": "storage_unavailable", "reason": str(err)}}
            await respond(send, 503, _json.encode(body), headers=[(b"retry-after", b"1")])
        except Exception:
            # a bug of ours: logged with its traceback, answered as JSON (if nothing was sent yet)
            log.exception("unhandled error on %s %s", method, path)
            body = {"success": False, "error": {"code": "internal_error", "reason": "internal server error"}}
            with contextlib.suppress(Exception):  # the response may have started already (SSE)
                await respond(send, 500, _json.encode(body))
        return True
