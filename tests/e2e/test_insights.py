"""Insights end to end against a real server: the seed-000 analytics and pattern routes (shapes,
400s, 404s), the flat ``behavioral_event`` stream message with its insights, the learned model
(from journeys sent over HTTP), and the insight state and model across a restart."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import httpx
import trio
from trio_websocket import open_websocket_url

from tests.e2e.server_process import ServerProcess

STEP_S = 10
BASE = 1_703_123_456_789  # seed 000's own example timestamp (December 2023): backfilled history
HOUR = 3_600_000


def event(session: str, kind: str, ts: int, **data: Any) -> dict[str, Any]:
    return {"sessionId": session, "userId": f"u-{session}", "deviceType": "mobile",
            "userProfile": {"persona": "TechEarlyAdopter"}, "eventType": kind, "eventData": {"timestamp": ts, **data}}


def journey(session: str, start: int, buyer: bool) -> list[dict[str, Any]]:
    """A buyer reads the product slowly and checks out; a browser skims the blog and leaves."""
    if buyer:
        return [event(session, "page_view", start, url="/"), event(session, "page_view", start + 20_000, url="/product/7"),
                event(session, "scroll", start + 50_000, scrollDepth=0.9), event(session, "click", start + 60_000),
                event(session, "page_view", start + 90_000, url="/cart"), event(session, "page_view", start + 100_000, url="/checkout"),
                event(session, "purchase", start + 130_000, value=49), event(session, "session_end", start + 140_000)]
    return [event(session, "page_view", start, url="/"), event(session, "page_view", start + 4_000, url="/blog/a"),
            event(session, "scroll", start + 6_000, scrollDepth=0.2), event(session, "page_view", start + 9_000, url="/product/7"),
            event(session, "session_end", start + 12_000)]


async def learn(client: httpx.AsyncClient, count: int) -> dict[str, Any]:
    events = [e for i in range(count) for e in journey(f"train-{i}", BASE + i * HOUR, buyer=i % 2 == 0)]
    answer = await client.post("/api/v1/behavioral/batch", json={"events": events})
    assert answer.status_code == 200, answer.text
    with trio.fail_after(STEP_S):  # the model lags the live events by a few seconds at most
        while True:
            status = (await client.get("/api/v1/behavioral/models")).json()
            if status["journeys"] >= count and not status["pending"]:
                return status
            await trio.sleep(0.2)


async def test_routes_answer_the_seed_shapes_from_data(client: httpx.AsyncClient) -> None:
    status = await learn(client, 40)
    assert status["journeys"] == 40 and "purchase" in status["actions"]
    for e in journey("live", BASE + 100 * HOUR, buyer=True)[:3]:
        assert (await client.post("/api/v1/behavioral/events", json=e)).status_code == 200

    realtime = (await client.get("/api/v1/behavioral/analytics/realtime", params={
        "sessionId": "live", "timeWindow": 300, "metrics": "engagement,intent,conversion_probability", "aggregation": "average"})).json()
    assert realtime["sessionId"] == "live" and realtime["timeWindow"] == 300
    engagement = realtime["metrics"]["engagement"]
    assert 0 <= engagement["score"] <= 1 and engagement["trend"] in ("increasing", "stable", "decreasing")
    assert 0 < engagement["confidence"] < 1
    intent = realtime["metrics"]["intent"]
    assert {"purchaseIntent", "interactionIntent", "exitIntent"} <= intent.keys() and intent["source"] == "model"
    assert 0 <= realtime["metrics"]["conversionProbability"]["probability"] <= 1
    assert realtime["recommendations"] and realtime["basedOn"]["journeys"] == 40

    patterns = (await client.get("/api/v1/behavioral/patterns", params={
        "userId": "u-live", "sessionId": "live", "timeWindow": 1800, "includePredictons": "true"})).json()
    nxt = patterns["predictions"]["nextAction"]
    # after home -> product with a slow read and a deep scroll, the buyers (half the journeys) went to the cart
    assert nxt["action"] == "view_cart" and nxt["probability"] > 0.8
    assert [d["action"] for d in nxt["distribution"]][0] == "view_cart" and len(nxt["distribution"]) <= 5
    assert nxt["timing"].startswith("within_")
    conversion = patterns["predictions"]["conversionProbability"]
    assert conversion["probability"] > 0.8 and conversion["timeframe"] == "within_session"

    # a skimming session on the same page: the model tells it apart from the buyer
    for e in journey("skim", BASE + 101 * HOUR, buyer=False)[:4]:
        await client.post("/api/v1/behavioral/events", json=e)
    skim = (await client.get("/api/v1/behavioral/patterns", params={"sessionId": "skim", "includePredictions": "true"})).json()
    assert skim["predictions"]["conversionProbability"]["probability"] < 0.2
    assert skim["predictions"]["nextAction"]["action"] == "exit"

    historical = (await client.get("/api/v1/behavioral/analytics/historical", params={
        "userId": "u-train-0", "dateRange": "2023-12-01,2023-12-31", "granularity": "daily",
        "filters": "device_type:mobile,persona:TechEarlyAdopter"})).json()
    assert historical["data"][0]["date"] == "2023-12-21" and historical["data"][0]["sessions"] == 1
    assert historical["data"][0]["conversionEvents"] == 1 and 0 < historical["data"][0]["averageEngagement"] <= 1
    assert "converted" in historical["data"][0]["behaviorPatterns"]

    predictive = (await client.get("/api/v1/behavioral/analytics/predictive", params={
        "userId": "u-live", "predictionType": "conversion", "timeHorizon": "7d", "confidence": "0.9"})).json()
    low, high = predictive["prediction"]["confidenceInterval"]
    assert low <= predictive["prediction"]["probability"] <= high and predictive["basedOn"]["journeys"] == 40


async def test_bad_parameters_are_400_and_unknown_keys_404(client: httpx.AsyncClient) -> None:
    await client.post("/api/v1/behavioral/events", json=event("s", "page_view", BASE, url="/"))
    bad = {
        "/api/v1/behavioral/analytics/realtime": [({}, "sessionId"), ({"sessionId": "s", "timeWindow": "x"}, "timeWindow"),
                                                  ({"sessionId": "s", "metrics": "mood"}, "metrics"),
                                                  ({"sessionId": "s", "aggregation": "median"}, "aggregation")],
        "/api/v1/behavioral/analytics/historical": [({}, "userId"), ({"userId": "u-s", "dateRange": "2024-13-01"}, "dateRange"),
                                                    ({"userId": "u-s", "granularity": "yearly"}, "granularity"),
                                                    ({"userId": "u-s", "filters": "colour:red"}, "filters")],
        "/api/v1/behavioral/analytics/predictive": [({}, "userId"), ({"userId": "u-s", "predictionType": "weather"}, "predictionType"),
                                                    ({"userId": "u-s", "timeHorizon": "soon"}, "timeHorizon"),
                                                    ({"userId": "u-s", "confidence": "2"}, "confidence")],
        "/api/v1/behavioral/patterns": [({}, "sessionId"), ({"sessionId": "s", "includePredictions": "maybe"}, "includePredictions")],
    }
    for path, cases in bad.items():
        for params, field in cases:
            answer = await client.get(path, params=params)
            assert answer.status_code == 400, (path, params, answer.text)
            assert answer.json()["error"]["field"] == field, (path, params)
    for path, params in [("/api/v1/behavioral/analytics/realtime", {"sessionId": "nobody"}),
                         ("/api/v1/behavioral/patterns", {"sessionId": "nobody"}),
                         ("/api/v1/behavioral/patterns", {"userId": "nobody"}),
                         ("/api/v1/behavioral/analytics/historical", {"userId": "nobody"}),
                         ("/api/v1/behavioral/analytics/predictive", {"userId": "nobody"})]:
        answer = await client.get(path, params=params)
        assert answer.status_code == 404, (path, answer.text)
        assert "nobody" in answer.json()["error"]["reason"]


async def test_the_stream_carries_the_flat_event_and_its_insights(server: ServerProcess, client: httpx.AsyncClient) -> None:
    async with open_websocket_url(f"{server.ws_url}/api/v1/behavioral/stream") as ws:
        await ws.send_message(json.dumps({"type": "connection", "sessionId": "w1",
                                          "subscriptions": ["behavioral_events", "engagement_metrics"]}))
        with trio.fail_after(STEP_S):
            while json.loads(await ws.get_message())["type"] != "connection_ack":
                pass
        seen: dict[str, list[dict[str, Any]]] = {}
        posted = [event("w1", "page_view", BASE, url="/product/1"),
                  event("w1", "scroll", BASE + 45_000, scrollDepth=0.75, timeOnPage=45_000)]
        answer = await client.post("/api/v1/behavioral/batch", json={"events": posted})
        assert answer.status_code == 200
        with trio.fail_after(STEP_S):
            while len(seen.get("behavioral_event", [])) < 2 or "session_metrics" not in seen:
                message = json.loads(await ws.get_message())
                seen.setdefault(message["type"], []).append(message)
    first, second = seen["behavioral_event"]
    assert second["event"]["eventType"] == "scroll"
    assert second["event"]["scrollDepth"] == 0.75 and second["event"]["timeOnPage"] == 45_000  # flat, as the seed shows
    assert "eventData" not in second["event"]
    # each message carries the state after its own event: the scroll raised the engagement
    assert 0 <= first["event"]["engagementScore"] < second["event"]["engagementScore"] <= 1
    assert 0 <= second["event"]["intentProbability"] <= 1
    assert {"behaviorPattern", "nextActionPrediction", "recommendedAction"} <= second["insights"].keys()
    metrics = seen["session_metrics"][-1]["metrics"]
    assert metrics["insights"]["engagement"]["score"] == second["event"]["engagementScore"]


async def test_insight_state_and_the_model_survive_a_restart(tmp_path: pathlib.Path) -> None:
    data = tmp_path / "data"
    proc = ServerProcess(data).start()
    try:
        async with httpx.AsyncClient(base_url=proc.url, timeout=10) as client:
            before_model = await learn(client, 30)
            for e in journey("kept", BASE + 50 * HOUR, buyer=True)[:4]:
                await client.post("/api/v1/behavioral/events", json=e)
            before = (await client.get("/api/v1/behavioral/patterns", params={"sessionId": "kept", "includePredictions": "1"})).json()
    finally:
        assert proc.stop() == 0
    proc = ServerProcess(data).start()
    try:
        async with httpx.AsyncClient(base_url=proc.url, timeout=10) as client:
            with trio.fail_after(STEP_S):  # the journeys are rebuilt from the stored events
                while True:
                    after_model = (await client.get("/api/v1/behavioral/models")).json()
                    if after_model["journeys"] >= before_model["journeys"] and not after_model["rebuilding"]:
                        break
                    await trio.sleep(0.2)
            after = (await client.get("/api/v1/behavioral/patterns", params={"sessionId": "kept", "includePredictions": "1"})).json()
    finally:
        assert proc.stop() == 0
    assert after_model["journeys"] == before_model["journeys"] and after_model["types"] == before_model["types"]
    assert after["patterns"] == before["patterns"]
    assert after["basedOn"]["events"] == before["basedOn"]["events"] == 4
    assert after["predictions"]["nextAction"] == before["predictions"]["nextAction"]
    assert after["predictions"]["conversionProbability"] == before["predictions"]["conversionProbability"]


async def test_conversion_events_are_a_project_setting(client: httpx.AsyncClient) -> None:
    status = await learn(client, 10)
    assert "purchase" in status["actions"]
    bad = await client.put("/api/v1/behavioral/models", json={"conversionEvents": []})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "$.conversionEvents"
    bad = await client.put("/api/v1/behavioral/models", json={"conversionEvents": ["ok", 3]})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "$.conversionEvents[1]"
    answer = await client.put("/api/v1/behavioral/models", json={"conversionEvents": ["Signup"]})
    assert answer.status_code == 200 and answer.json()["conversionEvents"] == ["signup"]
    with trio.fail_after(STEP_S):  # relearned from the stored events: a purchase is no action now
        while True:
            status = (await client.get("/api/v1/behavioral/models")).json()
            if status["journeys"] == 10 and "purchase" not in status["actions"] and not status["pending"]:
                break
            await trio.sleep(0.2)


async def test_a_user_aggregates_its_sessions_across_devices(client: httpx.AsyncClient) -> None:
    phone = [dict(e, userId="ada", deviceType="mobile") for e in journey("ada-phone", BASE, buyer=False)[:3]]
    laptop = [dict(e, userId="ada", deviceType="desktop") for e in journey("ada-laptop", BASE + 60_000, buyer=True)[:4]]
    assert (await client.post("/api/v1/behavioral/batch", json={"events": phone + laptop})).status_code == 200
    user = (await client.get("/api/v1/behavioral/users/ada")).json()
    insights = user["insights"]
    assert {s["sessionId"] for s in insights["sessions"]} == {"ada-phone", "ada-laptop"}
    assert set(insights["devices"]) == {"mobile", "desktop"}
    scores = [s["engagementScore"] for s in insights["sessions"]]
    assert insights["engagement"] == round(sum(scores) / 2, 4)
    assert insights["basedOn"] == {"liveSessions": 2, "sessionsAsked": 2, "journeys": 0}
