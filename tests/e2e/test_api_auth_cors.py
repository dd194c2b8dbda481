"""Keys, projects and CORS on a server bound to 0.0.0.0, where every request needs a key.

A project's public key ("pk_") may only ingest (it is shipped to browsers); its secret key ("sk_")
reads and administers. Keys travel as ``Authorization: Bearer``, ``X-API-Key`` or ``?key=``.
"""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.server_process import ServerProcess

READ_ROUTES = ("/api/events", "/api/events/services", "/api/events/statistics", "/api/events/suggestions",
               "/api/v1/behavioral/monitoring/performance")
SEED_ALLOW_HEADERS = ("Content-Type", "Authorization", "X-Requested-With", "X-Monitor-Request", "X-User-Id",
                      "X-Session-Id", "X-Correlation-Id", "Accept", "Origin", "User-Agent", "Referer")
SEED_ALLOW_METHODS = ("GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")


@pytest.fixture
async def http(keyed_server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=keyed_server.url, timeout=10) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_denied(answer: httpx.Response, status: int) -> None:
    assert answer.status_code == status, f"{answer.request.method} {answer.request.url}: {answer.status_code}"
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert body["success"] is False
    assert body["error"]["code"] == ("unauthorized" if status == 401 else "forbidden")
    assert isinstance(body["error"]["reason"], str) and body["error"]["reason"]


async def track(http: httpx.AsyncClient, name: str, key: str, **payload: Any) -> str:
    answer = await http.post(f"/api/events/track/{name}", json=payload, headers=bearer(key))
    assert answer.status_code == 200, answer.text
    return answer.json()["eventId"]


async def event_ids(http: httpx.AsyncClient, secret: str) -> set[str]:
    answer = await http.get("/api/events", headers=bearer(secret))
    assert answer.status_code == 200, answer.text
    return {e["id"] for e in answer.json()["events"]}


def header_set(value: str) -> set[str]:
    return {part.strip().lower() for part in value.split(",") if part.strip()}


# -- keys ------------------------------------------------------------------------------------------


async def test_requests_without_a_key_are_401(http: httpx.AsyncClient) -> None:
    assert_denied(await http.post("/api/events/track/page-view", json={"serviceName": "web"}), 401)
    assert_denied(await http.post("/api/events/track/batch", json={"events": [{"eventName": "x"}]}), 401)
    assert_denied(await http.post("/api/v1/behavioral/events", json={"eventType": "click"}), 401)
    assert_denied(await http.post("/api/v1/behavioral/batch", json=[{"eventType": "click"}]), 401)
    for route in READ_ROUTES:
        assert_denied(await http.get(route), 401)
    # an unknown key is not a key
    assert_denied(await http.post("/api/events/track/page-view", json={}, headers=bearer("pk_made-up")), 401)
    assert_denied(await http.get("/api/events", headers=bearer("{token}")), 401)


async def test_public_key_ingests_but_cannot_read(http: httpx.AsyncClient, keyed_server: ServerProcess) -> None:
    public, secret = keyed_server.public_key, keyed_server.secret_key
    assert public.startswith("pk_") and secret.startswith("sk_")
    event_id = await track(http, "page-view", public, serviceName="web-analytics")
    answer = await http.post("/api/v1/behavioral/events", json={"eventType": "click"}, headers=bearer(public))
    assert answer.status_code == 200, answer.text
    for route in READ_ROUTES:
        assert_denied(await http.get(route, headers=bearer(public)), 403)
    async with httpx.AsyncClient(base_url=keyed_server.url, timeout=10) as once:  # see the test below
        assert_denied(await once.post("/api/admin/projects", json={"name": "nope"}, headers=bearer(public)), 403)

    assert event_id in await event_ids(http, secret)
    for route in READ_ROUTES:
        answer = await http.get(route, headers=bearer(secret))
        assert answer.status_code == 200, f"{route}: {answer.text}"


async def test_connection_keeps_working_after_a_refused_admin_request(keyed_server: ServerProcess) -> None:
    """A refused POST (its body unread) must not wedge the keep-alive connection it came on: the
    client's next request on that connection is answered. A wedged connection shows only when the
    server loses a race, so this tries many fresh connections; the first unanswered request fails."""
    public, secret = keyed_server.public_key, keyed_server.secret_key
    for attempt in range(100):
        key, status = (public, 403) if attempt % 2 == 0 else (None, 401)
        async with httpx.AsyncClient(base_url=keyed_server.url, timeout=3) as http:
            headers = bearer(key) if key else {}
            assert_denied(await http.post("/api/admin/projects", json={"name": "x"}, headers=headers), status)
            try:
                answer = await http.get("/api/events", headers=bearer(secret))
            except httpx.TimeoutException:
                pytest.fail(f"attempt {attempt}: no answer on the connection after a refused POST ({status})")
            assert answer.status_code == 200


async def test_keys_in_x_api_key_header_and_key_query_param(http: httpx.AsyncClient,
                                                            keyed_server: ServerProcess) -> None:
    public, secret = keyed_server.public_key, keyed_server.secret_key
    by_header = await http.post("/api/events/track/h", json={}, headers={"X-API-Key": public})
    assert by_header.status_code == 200, by_header.text
    by_query = await http.post("/api/events/track/q", json={}, params={"key": public})
    assert by_query.status_code == 200, by_query.text

    listing = await http.get("/api/events", headers={"X-API-Key": secret})
    assert listing.status_code == 200, listing.text
    assert {e["name"] for e in listing.json()["events"]} == {"h", "q"}
    listing = await http.get("/api/events", params={"key": secret, "limit": 10})
    assert listing.status_code == 200, listing.text
    assert {e["id"] for e in listing.json()["events"]} == {by_header.json()["eventId"], by_query.json()["eventId"]}
    assert_denied(await http.get("/api/events", params={"key": public}), 403)


async def test_projects_are_isolated(http: httpx.AsyncClient, keyed_server: ServerProcess) -> None:
    default_public, default_secret = keyed_server.public_key, keyed_server.secret_key
    created = await http.post("/api/admin/projects", json={"name": "shop-b"}, headers=bearer(default_secret))
    assert created.status_code == 201, created.text
    project = created.json()
    assert project["name"] == "shop-b"
    assert isinstance(project["id"], str) and project["id"]
    b_public, b_secret = project["publicKey"], project["secretKey"]
    assert b_public.startswith("pk_") and b_secret.startswith("sk_")
    assert {b_public, b_secret}.isdisjoint({default_public, default_secret})

    a_event = await track(http, "checkout", default_public, serviceName="payment-service")
    b_event = await track(http, "checkout", b_public, serviceName="payment-service", eventId="shared-client-id")
    # the same client event id in the other project is a different event, not a duplicate
    a_same = await http.post("/api/events/track/checkout", json={"eventId": "shared-client-id"},
                             headers=bearer(default_public))
    assert a_same.json()["duplicate"] is False
    assert a_same.json()["eventId"] != b_event

    assert await event_ids(http, default_secret) == {a_event, a_same.json()["eventId"]}
    assert await event_ids(http, b_secret) == {b_event}

    b_stats = (await http.get("/api/events/statistics", headers=bearer(b_secret))).json()
    assert b_stats["totalEventCount"] == 1
    a_services = (await http.get("/api/events/services", headers=bearer(default_secret))).json()
    assert a_services["summary"]["totalEvents"] == 2
    b_listing = (await http.get("/api/events", headers=bearer(b_secret))).json()
    assert b_listing["total"] == 1

    listed = await http.get("/api/admin/projects", headers=bearer(default_secret))
    assert listed.status_code == 200
    assert {"default", "shop-b"} <= {p["name"] for p in listed.json()["projects"]}


async def test_duplicate_project_name_is_409(http: httpx.AsyncClient, keyed_server: ServerProcess) -> None:
    secret = bearer(keyed_server.secret_key)
    assert (await http.post("/api/admin/projects", json={"name": "twice"}, headers=secret)).status_code == 201
    again = await http.post("/api/admin/projects", json={"name": "twice"}, headers=secret)
    assert again.status_code == 409, again.text
    assert again.json()["success"] is False
    assert again.json()["error"]["field"] == "$.name"
    assert (await http.post("/api/admin/projects", json={"name": "default"}, headers=secret)).status_code == 409
    assert (await http.post("/api/admin/projects", json={}, headers=secret)).status_code == 400
    assert (await http.post("/api/admin/projects", json={"name": "x" * 101}, headers=secret)).status_code == 400
    assert_denied(await http.post("/api/admin/projects", json={"name": "anon"}), 401)


# -- CORS ------------------------------------------------------------------------------------------


async def test_cors_preflight_needs_no_key(http: httpx.AsyncClient) -> None:
    """Browsers send preflights without credentials, so even a keyed server answers them."""
    for route in ("/api/events/track/test-event", "/api/events/track/batch", "/api/v1/behavioral/events",
                  "/api/events"):
        answer = await http.options(route, headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,authorization,x-user-id",
        })
        assert answer.status_code == 200, route
        assert answer.headers["access-control-allow-origin"] == "*"
        assert {m.lower() for m in SEED_ALLOW_METHODS} <= header_set(answer.headers["access-control-allow-methods"])
        assert {h.lower() for h in SEED_ALLOW_HEADERS} <= header_set(answer.headers["access-control-allow-headers"])
        assert answer.headers["access-control-max-age"] == "86400"


async def test_cors_headers_on_answers_and_errors(http: httpx.AsyncClient, keyed_server: ServerProcess) -> None:
    origin = {"Origin": "https://shop.example"}
    ok = await http.post("/api/events/track/x", json={}, headers={**origin, **bearer(keyed_server.public_key)})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "*"
    # a browser can read why it was refused
    refused = await http.post("/api/events/track/x", json={}, headers=origin)
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == "*"
    forbidden = await http.get("/api/events", headers={**origin, **bearer(keyed_server.public_key)})
    assert forbidden.status_code == 403
    assert forbidden.headers["access-control-allow-origin"] == "*"
    bad = await http.post("/api/events/track/x", content=b"{", headers={**origin, **bearer(keyed_server.public_key)})
    assert bad.status_code == 400
    assert bad.headers["access-control-allow-origin"] == "*"


@pytest.fixture
def restricted_server(tmp_path: pathlib.Path) -> Iterator[ServerProcess]:
    """A loopback server with ALLOWED_ORIGINS set to two origins (the seed's comma-separated form)."""
    proc = ServerProcess(tmp_path / "restricted", env={"ALLOWED_ORIGINS": "https://a.example,https://b.example"})
    proc.start()
    try:
        yield proc
    finally:
        code = proc.stop()
    assert code == 0, "".join(proc.output)


async def test_allowed_origins_echoes_listed_origins_only(restricted_server: ServerProcess) -> None:
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "Content-Type"}
    async with httpx.AsyncClient(base_url=restricted_server.url, timeout=10) as http:
        for allowed in ("https://a.example", "https://b.example"):
            answer = await http.options("/api/events/track/x", headers={"Origin": allowed, **preflight})
            assert answer.status_code == 200
            assert answer.headers["access-control-allow-origin"] == allowed
            assert "origin" in header_set(answer.headers.get("vary", ""))
            assert answer.headers["access-control-max-age"] == "86400"
            posted = await http.post("/api/events/track/x", json={}, headers={"Origin": allowed})
            assert posted.status_code == 200
            assert posted.headers["access-control-allow-origin"] == allowed

        answer = await http.options("/api/events/track/x", headers={"Origin": "https://evil.example", **preflight})
        assert "access-control-allow-origin" not in answer.headers
        assert "access-control-allow-methods" not in answer.headers
        assert "origin" in header_set(answer.headers.get("vary", ""))
        posted = await http.post("/api/events/track/x", json={}, headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in posted.headers
        listing = await http.get("/api/events", headers={"Origin": "https://a.example.evil.test"})
        assert listing.status_code == 200
        assert "access-control-allow-origin" not in listing.headers
