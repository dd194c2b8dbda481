from __future__ import annotations

import httpx


async def test_track_then_query(client: httpx.AsyncClient) -> None:
    answer = await client.post("/api/events/track/user-login", json={"serviceName": "user-service"})
    assert answer.status_code == 200
    event_id = answer.json()["eventId"]
    listing = (await client.get("/api/events")).json()
    assert [e["id"] for e in listing["events"]] == [event_id]


async def test_openapi_document_describes_both_apis_and_docs_page_serves_it(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    assert doc["openapi"] == "3.1.0"
    for path in ("/api/events/track/{eventName}", "/api/events/track/batch", "/api/events",
                 "/api/v1/behavioral/events", "/api/v1/behavioral/batch", "/api/v1/behavioral/health"):
        assert path in doc["paths"], path
    payload = doc["components"]["schemas"]["AIEventPayload"]["properties"]
    assert {"userAgent", "sessionId", "correlationId", "statusCode", "responseTimeMs", "serviceName", "metadata"} <= set(payload)
    behavioral = doc["components"]["schemas"]["BehavioralEvent"]
    assert "eventType" in behavioral["required"]
    docs = await client.get("/docs")
    assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in docs.text
