"""PulseMiddleware in a real FastAPI app (driven in-process through httpx.ASGITransport), reporting to
a real Pulse; and the same app with Pulse down."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

import anyio
import httpx
import pytest
import trio
from fastapi import FastAPI, HTTPException
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from pulse_sdk import Client, PulseMiddleware
from tests.e2e.server_process import ServerProcess
from tests.sdk.conftest import stored_events
from tests.sdk.http_stubs import closed_port

Scope = dict[str, Any]


def _user_from_header(scope: Scope) -> str | None:
    for key, value in scope["headers"]:
        if key == b"x-user":
            return str(value.decode())
    return None


def _broken_user_id(scope: Scope) -> str | None:
    raise KeyError("session")


def make_app(client: Client | None, **options: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/users/{user_id}")
    async def get_user(user_id: str) -> dict[str, str]:
        return {"id": user_id}

    @app.post("/users", status_code=201)
    async def create_user(body: dict[str, str]) -> dict[str, Any]:
        return {"success": True, "user": body}

    @app.get("/forbidden")
    async def forbidden() -> None:
        raise HTTPException(status_code=403, detail="no")

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("the app broke")

    @app.get("/slow")
    async def slow() -> dict[str, str]:
        await anyio.sleep(60)
        return {"late": "yes"}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    if client is not None:
        app.add_middleware(PulseMiddleware, client=client, **options)
    return app


@pytest.fixture
def tracked(pulse: ServerProcess, service: str) -> Iterator[Client]:
    client = Client(pulse.url, service_name=service, flush_at_exit=False)
    yield client
    client.close()


def _http(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app.test")


async def _stored(pulse: ServerProcess, client: Client, service: str) -> list[dict[str, Any]]:
    assert await trio.to_thread.run_sync(client.flush, 15.0)
    return await trio.to_thread.run_sync(stored_events, pulse, service)


async def test_each_request_is_tracked_with_route_method_status_duration_and_user(
    pulse: ServerProcess, service: str, tracked: Client
) -> None:
    app = make_app(tracked, user_id=_user_from_header, skip_paths=("/health",))
    async with _http(app) as http:
        got = await http.get("/users/42", headers={"x-user": "alice", "user-agent": "tests/1.0",
                                                   "x-correlation-id": "corr-1"})  # fmt: skip
        assert (got.status_code, got.json()) == (200, {"id": "42"})
        assert (await http.post("/users", json={"email": "a@b.c"}, headers={"x-user": "bob"})).status_code == 201
        assert (await http.get("/forbidden")).status_code == 403
        assert (await http.get("/nowhere/7")).status_code == 404
        assert (await http.get("/health")).status_code == 200  # skipped
    events = {e["payload"]["metadata"]["path"]: e for e in await _stored(pulse, tracked, service)}
    assert sorted(events) == ["/forbidden", "/nowhere/7", "/users", "/users/42"]
    get = events["/users/42"]
    assert get["name"] == "http_request" and get["userId"] == "alice"
    assert get["payload"]["metadata"] == {"method": "GET", "route": "/users/{user_id}", "path": "/users/42",
                                          "clientIP": "127.0.0.1"}  # fmt: skip
    assert get["payload"]["statusCode"] == 200 and get["payload"]["userAgent"] == "tests/1.0"
    assert get["payload"]["correlationId"] == "corr-1"
    assert isinstance(get["payload"]["responseTimeMs"], float) and get["payload"]["responseTimeMs"] >= 0
    post = events["/users"]
    assert (post["userId"], post["payload"]["statusCode"], post["payload"]["metadata"]["method"]) == ("bob", 201, "POST")
    assert post["payload"]["correlationId"].startswith("req-")  # generated when the request had none
    assert events["/forbidden"]["payload"]["statusCode"] == 403 and events["/forbidden"].get("userId") is None
    assert events["/nowhere/7"]["payload"]["statusCode"] == 404
    assert events["/nowhere/7"]["payload"]["metadata"]["route"] == "/nowhere/7"  # no route matched: the raw path


async def test_an_app_exception_is_tracked_as_500_and_still_raised(
    pulse: ServerProcess, service: str, tracked: Client
) -> None:
    async with _http(make_app(tracked)) as http:
        with pytest.raises(RuntimeError, match="the app broke"):
            await http.get("/boom")
    [event] = await _stored(pulse, tracked, service)
    assert event["payload"]["statusCode"] == 500
    assert event["payload"]["metadata"]["route"] == "/boom"
    assert event["payload"]["metadata"]["outcome"] == "exception"


async def test_a_request_cancelled_midway_is_tracked_as_cancelled(
    pulse: ServerProcess, service: str, tracked: Client
) -> None:
    async with _http(make_app(tracked)) as http:
        with trio.move_on_after(0.2) as cancelled:  # the client goes away while the route still works
            await http.get("/slow")
    assert cancelled.cancelled_caught
    [event] = await _stored(pulse, tracked, service)
    assert event["payload"]["metadata"]["outcome"] == "cancelled"
    assert "statusCode" not in event["payload"]  # no answer was sent


async def test_a_failing_user_id_callable_is_counted_and_the_request_still_tracked(
    pulse: ServerProcess, service: str, tracked: Client
) -> None:
    async with _http(make_app(tracked, user_id=_broken_user_id)) as http:
        assert (await http.get("/users/1")).status_code == 200
    [event] = await _stored(pulse, tracked, service)
    assert event.get("userId") is None and event["payload"]["statusCode"] == 200
    assert tracked.stats().user_id_errors == 1


async def test_starlette_mounts_give_the_full_route_template(
    pulse: ServerProcess, service: str, tracked: Client
) -> None:
    async def item(request: Request) -> JSONResponse:
        return JSONResponse({"item": request.path_params["item_id"]})

    app = Starlette(routes=[Mount("/api", routes=[Route("/items/{item_id}", item)])])
    app.add_middleware(PulseMiddleware, client=tracked, event_name="api_call")
    async with _http(app) as http:
        assert (await http.get("/api/items/9")).json() == {"item": "9"}
    [event] = await _stored(pulse, tracked, service)
    assert event["name"] == "api_call"
    assert event["payload"]["metadata"]["route"] == "/api/items/{item_id}"


async def test_with_pulse_down_the_app_answers_exactly_as_without_the_middleware() -> None:
    down = Client(f"http://127.0.0.1:{closed_port()}", flush_at_exit=False, backoff_base=0.05, backoff_max=0.2)
    requests = [("GET", "/users/1", None), ("POST", "/users", {"email": "x@y.z"}), ("GET", "/forbidden", None),
                ("GET", "/nowhere", None)] * 25  # fmt: skip
    answers: dict[str, list[tuple[int, bytes]]] = {}
    for label, app in (("plain", make_app(None)), ("tracked", make_app(down, user_id=_user_from_header))):
        async with _http(app) as http:
            answers[label] = [
                ((r := await http.request(method, path, json=body)).status_code, r.content)
                for method, path, body in requests
            ]
    assert answers["tracked"] == answers["plain"]
    assert {status for status, _ in answers["plain"]} == {200, 201, 403, 404}
    assert down.stats().tracked == len(requests)
    assert await trio.to_thread.run_sync(down.close, 1.0) is False
    assert down.stats().delivered == 0


async def test_websocket_and_lifespan_scopes_pass_through_untouched() -> None:
    seen: list[MutableMapping[str, Any]] = []

    async def inner(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope)

    client = Client(f"http://127.0.0.1:{closed_port()}", flush_at_exit=False)
    middleware = PulseMiddleware(inner, client=client)

    async def receive() -> dict[str, Any]:
        return {}

    async def send(message: Any) -> None:
        pass

    scopes: list[Scope] = [{"type": "websocket", "path": "/ws", "headers": []}, {"type": "lifespan"}]
    for scope in scopes:
        before = dict(scope)
        await middleware(scope, receive, send)
        assert seen[-1] is scope and scope == before
    assert client.stats().tracked == 0
    client.close()
