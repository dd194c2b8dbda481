"""Suggestions end to end (seed 004 section 8 and the track answers' ``suggestions``): a slow
service produces the slow-service suggestion with its real figures, first on
GET /api/events/suggestions, then in later track answers about that service; healthy data
produces none."""

from __future__ import annotations

from typing import Any

import httpx

from tests.e2e.test_api_seed004 import assert_suggestion_shape, track

SLOW_TIMES = [850 + (i * 37) % 100 for i in range(30)]  # 850..949 ms, mean ~900


def batch(name: str, service: str, times: list[int], *, status: int = 200) -> dict[str, Any]:
    return {
        "batchId": f"batch-{service}",
        "events": [
            {"eventName": name, "payload": {"serviceName": service, "statusCode": status, "responseTimeMs": t,
                                            "sessionId": f"s-{i % 5}", "userId": f"u-{i % 3}"}}
            for i, t in enumerate(times)
        ],
    }


async def suggestions(client: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    answer = await client.get("/api/events/suggestions", params=params)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    for suggestion in body["suggestions"]:
        assert_suggestion_shape(suggestion)
    return body


async def test_a_slow_service_gets_the_slow_service_suggestion(client: httpx.AsyncClient) -> None:
    posted = await client.post("/api/events/track/batch", json=batch("payment-completed", "payment-service", SLOW_TIMES))
    assert posted.status_code == 200, posted.text
    healthy = await client.post("/api/events/track/batch", json=batch("user-login", "user-service", [100] * 30))
    assert healthy.status_code == 200, healthy.text

    body = await suggestions(client)
    [slow] = [s for s in body["suggestions"] if s["id"] == "sug-slow-payment-service"]
    assert [s["id"] for s in body["suggestions"]] == ["sug-slow-payment-service"]  # nothing about user-service
    assert slow["basedOn"]["sampleSize"] == 30
    assert 0.95 <= slow["basedOn"]["confidence"] <= 1
    assert 0 < slow["score"] <= 1
    mean = sum(SLOW_TIMES) / len(SLOW_TIMES)
    assert f"{mean:.0f} ms on average over 30 timed events" in slow["description"]
    assert slow["action"]["method"] == "GET"
    assert body["context"] == {"timeRange": "last-24h", "totalEvents": 60}

    # the action's link is a real route that shows the evidence
    evidence = await client.get(slow["action"]["href"])
    assert evidence.status_code == 200, evidence.text
    [service] = evidence.json()["services"]
    assert service["serviceName"] == "payment-service" and service["avgResponseTime"] == round(mean, 1)

    # a later track answer about that service carries it (from the cache, no store read)...
    later = await track(client, "payment-completed", {"serviceName": "payment-service", "responseTimeMs": 910})
    assert [s["id"] for s in later["suggestions"]] == ["sug-slow-payment-service"]
    assert_suggestion_shape(later["suggestions"][0])
    assert later["suggestions"][0]["basedOn"]["sampleSize"] == 30
    # ... and so does a batch with such an event; one about another service does not
    mixed = await client.post("/api/events/track/batch", json=batch("payment-completed", "payment-service", [900]))
    assert [s["id"] for s in mixed.json()["suggestions"]] == ["sug-slow-payment-service"]
    assert_suggestion_shape(mixed.json()["suggestions"][0])
    other = await track(client, "user-login", {"serviceName": "user-service", "responseTimeMs": 95})
    assert other["suggestions"] == []

    # filters
    assert [s["id"] for s in (await suggestions(client, serviceName="payment-service"))["suggestions"]] == [
        "sug-slow-payment-service"]
    assert (await suggestions(client, serviceName="user-service"))["suggestions"] == []
    assert len((await suggestions(client, eventName="payment-completed"))["suggestions"]) == 1
    assert (await suggestions(client, eventName="user-login"))["suggestions"] == []
    by_user = await suggestions(client, userId="u-1")
    assert len(by_user["suggestions"]) == 1 and by_user["context"]["userEvents"] == 20  # 10 per service
    nobody = await suggestions(client, userId="nobody")
    assert nobody["suggestions"] == [] and nobody["context"]["userEvents"] == 0
    assert (await suggestions(client, limit="1"))["suggestions"][0]["id"] == "sug-slow-payment-service"
    for bad in ("0", "abc", "101"):
        answer = await client.get("/api/events/suggestions", params={"limit": bad})
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["field"] == "limit"


async def test_a_healthy_service_gets_no_suggestions(client: httpx.AsyncClient) -> None:
    times = [80 + (i * 13) % 60 for i in range(50)]
    posted = await client.post("/api/events/track/batch", json=batch("api-call", "api-gateway", times))
    assert posted.status_code == 200, posted.text
    assert posted.json()["suggestions"] == []
    body = await suggestions(client)
    assert body["suggestions"] == []
    assert body["context"]["totalEvents"] == 50
    answer = await track(client, "api-call", {"serviceName": "api-gateway", "statusCode": 200, "responseTimeMs": 90})
    assert answer["suggestions"] == []
