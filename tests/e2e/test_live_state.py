"""Live state read routes: a session's and a user's state as their actors hold it."""

from __future__ import annotations

import httpx

from tests.e2e.server_process import ServerProcess


def behavioral(event_type: str, ts: int, **data: object) -> dict[str, object]:
    return {
        "eventType": event_type,
        "timestamp": ts,
        "sessionId": "live-s1",
        "userId": "live-u1",
        "deviceType": "mobile",
        "eventData": data,
    }


async def test_session_and_user_state_follow_ingested_events(server: ServerProcess, client: httpx.AsyncClient) -> None:
    batch = [
        behavioral("page_view", 1_700_000_000_000, url="/a"),
        behavioral("scroll", 1_700_000_001_000, scrollDepth=0.5),
        behavioral("page_view", 1_700_000_005_000, url="/b"),
    ]
    assert (await client.post("/api/v1/behavioral/batch", json={"events": batch})).status_code == 200
    session = (await client.get("/api/v1/behavioral/sessions/live-s1")).json()
    assert session["sessionId"] == "live-s1"
    assert session["eventCount"] == 3
    assert session["pageViews"] == 2
    assert [page["url"] for page in session["pages"]] == ["/a", "/b"]
    user = (await client.get("/api/v1/behavioral/users/live-u1")).json()
    assert user["eventCount"] == 3
    assert [s["sessionId"] for s in user["sessions"]] == ["live-s1"]


async def test_unknown_session_is_404_and_keys_are_checked(keyed_server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=keyed_server.url, timeout=10) as http:
        unknown = await http.get("/api/v1/behavioral/sessions/nope", headers={"X-API-Key": keyed_server.secret_key})
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "not_found"
        anonymous = await http.get("/api/v1/behavioral/sessions/nope")
        assert anonymous.status_code == 401
        public = await http.get("/api/v1/behavioral/sessions/nope", headers={"X-API-Key": keyed_server.public_key})
        assert public.status_code == 403
