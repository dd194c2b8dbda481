"""``PulseMiddleware``: one Pulse event per HTTP request of an ASGI app (FastAPI, Starlette, any).

Pure ASGI, so it adds no task, no buffering of the body and no await of its own: it watches the
``http.response.start`` message for the status and, when the app is done, calls ``client.track``,
which only queues. Pulse being slow or down therefore never slows or breaks the app; a failure of
our own (the user id callable raising) is counted and the request is tracked without a user id.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from pulse_sdk.client import Client

log = logging.getLogger("pulse_sdk")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CORRELATION_HEADER = b"x-correlation-id"
STATE_KEY = "pulse_correlation_id"  # request.state.pulse_correlation_id in Starlette/FastAPI


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _route_template(scope: Scope, entry_root_path: str) -> str:
    """The matched route's template (``/users/{user_id}``) when the router left one in the scope,
    with the prefix of any Mount it went through; else the raw path (no route matched: 404)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        root_path = scope.get("root_path") or ""
        mount_prefix = root_path[len(entry_root_path):] if root_path.startswith(entry_root_path) else ""
        return mount_prefix + path
    return str(scope.get("path") or "/")


class PulseMiddleware:
    """Tracks each HTTP request as ``event_name`` with the route template, method, status, duration,
    user id (from ``user_id(scope)``), client IP, user agent and correlation id.

    ``app.add_middleware(PulseMiddleware, client=client, user_id=lambda scope: ...)``. Requests whose
    path is in ``skip_paths`` (exact match, or a prefix ending in ``/``) are not tracked; WebSocket and
    lifespan scopes pass through untouched.
    """

    def __init__(
        self,
        app: ASGIApp,
        client: Client,
        user_id: Callable[[Scope], str | None] | None = None,
        event_name: str = "http_request",
        skip_paths: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.client = client
        self.user_id = user_id
        self.event_name = event_name
        paths = tuple(skip_paths)
        self.skip_exact = frozenset(p for p in paths if not p.endswith("/"))
        self.skip_prefixes = tuple(p for p in paths if p.endswith("/"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._skipped(scope.get("path") or ""):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        entry_root_path = scope.get("root_path") or ""
        correlation_id = _header(scope, CORRELATION_HEADER) or f"req-{uuid.uuid4().hex}"
        state = scope.setdefault("state", {})
        if isinstance(state, dict):  # lets the app put the same id on the events it tracks itself
            state[STATE_KEY] = correlation_id
        status: int | None = None

        async def send_watching_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_watching_status)
        except Exception:
            self._record(scope, entry_root_path, 500, started, correlation_id, "exception")
            raise
        except BaseException:  # cancelled: the client went away or the server is stopping
            self._record(scope, entry_root_path, status, started, correlation_id, "cancelled")
            raise
        self._record(scope, entry_root_path, status, started, correlation_id, None)

    def _skipped(self, path: str) -> bool:
        return path in self.skip_exact or path.startswith(self.skip_prefixes)

    def _record(
        self,
        scope: Scope,
        entry_root_path: str,
        status: int | None,
        started: float,
        correlation_id: str,
        outcome: str | None,
    ) -> None:
        """Build and queue the event; nothing here may raise into the app."""
        try:
            duration_ms = round((time.perf_counter() - started) * 1000, 3)
            metadata: dict[str, Any] = {
                "method": scope.get("method"),
                "route": _route_template(scope, entry_root_path),
                "path": scope.get("path"),
            }
            client_addr = scope.get("client")
            if client_addr:
                metadata["clientIP"] = client_addr[0]
            if outcome is not None:
                metadata["outcome"] = outcome
            payload: dict[str, Any] = {"responseTimeMs": duration_ms, "metadata": metadata}
            if status is not None:
                payload["statusCode"] = status
            user_agent = _header(scope, b"user-agent")
            if user_agent:
                payload["userAgent"] = user_agent
            referrer = _header(scope, b"referer")
            if referrer:
                payload["referrer"] = referrer
            self.client.track(
                self.event_name, payload, user_id=self._user_id(scope), correlation_id=correlation_id
            )
        except Exception:
            self.client.count_middleware_error()
            log.exception("pulse_sdk: could not track a request")

    def _user_id(self, scope: Scope) -> str | None:
        if self.user_id is None:
            return None
        try:
            value = self.user_id(scope)
        except Exception:
            self.client.count_user_id_error()
            log.debug("pulse_sdk: the user_id callable raised", exc_info=True)
            return None
        return None if value is None else str(value)
