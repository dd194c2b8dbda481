"""Seed 004's "Python/FastAPI Integration" story, on the SDK (docs/sdk.md).

The seed hand-writes an ``EventTracker`` that awaits one HTTP call per event inside each request, and
a ``BaseHTTPMiddleware`` that tracks "api-request-received" and "api-response-sent". Here the
middleware tracks one ``http_request`` event per request (route template, method, status, duration,
user, correlation id), and the route's own events go through ``client.track``, which only queues:
the answer never waits for Pulse, and Pulse being down changes nothing for the API's users.

    .venv/bin/pulse serve --port 3000 &
    PULSE_URL=http://127.0.0.1:3000 .venv/bin/hypercorn examples.fastapi_app:app --bind 127.0.0.1:8080
    curl -X POST localhost:8080/users/ -H 'content-type: application/json' -H 'x-user-id: u-1' \
         -d '{"email": "ada@example.com"}'
    curl 'http://127.0.0.1:3000/api/events?serviceName=python-api'
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request

from pulse_sdk import Client, PulseMiddleware

tracker = Client(
    os.environ.get("PULSE_URL", "http://localhost:3000"),
    key=os.environ.get("PULSE_KEY"),  # a project's public key (pk_...) when Pulse is not on loopback
    service_name="python-api",
)


def user_from_header(scope: Any) -> str | None:
    """Who made the request: here the X-User-Id header; in a real app, the authenticated user."""
    for name, value in scope["headers"]:
        if name == b"x-user-id":
            return str(value.decode("latin-1"))
    return None


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    tracker.close()  # send what is queued (within close_timeout) before the server exits


app = FastAPI(lifespan=lifespan)
app.add_middleware(PulseMiddleware, client=tracker, user_id=user_from_header, skip_paths=("/health",))


def correlation_id(request: Request) -> str | None:
    """The id the middleware gave this request, so the route's events can be joined to it."""
    return getattr(request.state, "pulse_correlation_id", None)


@app.post("/users/")
async def create_user(user_data: dict[str, str], request: Request) -> dict[str, Any]:
    email = user_data.get("email")
    tracker.track("user-creation-attempt", {"metadata": {"source": "python-api"}}, user_id=email,
                  correlation_id=correlation_id(request))  # fmt: skip
    if not email:
        tracker.track("user-creation-failed", {"metadata": {"error": "email is required", "source": "api"}},
                      correlation_id=correlation_id(request))  # fmt: skip
        raise HTTPException(status_code=422, detail="email is required")
    user = {"id": f"user-{uuid.uuid4().hex[:12]}", "email": email}  # your user creation logic here
    tracker.track("user-created", {"metadata": {"source": "python-api"}}, user_id=user["id"],
                  correlation_id=correlation_id(request))  # fmt: skip
    return {"success": True, "user": user}


@app.get("/health")
async def health() -> dict[str, Any]:
    stats = tracker.stats()
    return {"status": "ok", "tracking": {"queued": stats.queued, "delivered": stats.delivered,
                                         "lastError": stats.last_error}}  # fmt: skip
