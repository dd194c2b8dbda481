from __future__ import annotations

import httpx


async def test_track_then_query(client: httpx.AsyncClient) -> None:
    answer = await client.post("/api/events/track/user-login", json={"serviceName": "user-service"})
    assert answer.status_code == 200
    event_id = answer.json()["eventId"]
    listing = (await client.get("/api/events")).json()
    assert [e["id"] for e in listing["events"]] == [event_id]
