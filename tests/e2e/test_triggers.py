"""Triggers and A/B tests against a real server (docs/automation.md): what a client sees in the
ingest answers, on the conversion_triggers streams, and from the trigger routes."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from tests.e2e.server_process import ServerProcess
from tests.e2e.sse_client import SSEClient

BASE = "/api/v1/behavioral/triggers"
STEP_S = 10


def seed_trigger(**changes: Any) -> dict[str, Any]:
    """Seed 000's create body (engagementScore > 0.7 replaced by a filter our test sessions meet)."""
    body: dict[str, Any] = {
        "name": "High Intent Exit Prevention",
        "description": "Trigger exit offer for high-intent users",
        "conditions": {
            "eventType": "exit_intent",
            "filters": [
                {"field": "timeOnPage", "operator": "greater_than", "value": 30000},
                {"field": "url", "operator": "contains", "value": "/pricing"},
            ],
        },
        "actions": [
            {"type": "show_exit_offer", "parameters": {"offerType": "discount", "discount": 0.15, "urgency": "high"}},
            {"type": "capture_email", "parameters": {"incentive": "free_guide", "followUp": "nurture_sequence"}},
        ],
        "personalization": {"persona": "all", "deviceType": "all", "trafficSource": "all"},
        "schedule": {"active": True, "startDate": "2024-01-01", "endDate": None, "timeZone": "UTC"},
    }
    body.update(changes)
    return body


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def create(client: httpx.AsyncClient, body: dict[str, Any]) -> str:
    answer = await client.post(BASE, json=body)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["triggerId"])


def exit_event(session: str, time_on_page: int, at: int, url: str = "/pricing") -> dict[str, Any]:
    return {"eventType": "exit_intent", "sessionId": session, "userId": f"user-{session}", "timestamp": at,
            "eventData": {"timeOnPage": time_on_page, "url": url}}


async def test_create_answers_the_seed_shape_and_lists_gets_updates_deletes(client: httpx.AsyncClient) -> None:
    answer = await client.post(BASE, json=seed_trigger())
    assert answer.status_code == 201
    body = answer.json()
    assert body["triggerId"].startswith("trigger_") and body["status"] == "active"
    assert body["created"].endswith("Z")
    # no session yet: nothing invented
    assert body["performance"]["triggerRate"] is None and body["performance"]["sessions"]["withEventType"] == 0
    trigger_id = body["triggerId"]
    listed = (await client.get(BASE)).json()
    assert [t["triggerId"] for t in listed["triggers"]] == [trigger_id]
    one = (await client.get(f"{BASE}/{trigger_id}")).json()
    assert one["name"] == "High Intent Exit Prevention" and one["type"] == "exit_intent"
    assert one["urgency"] == "high"  # from the first action's parameters
    assert one["conditions"]["filters"][0]["field"] == "timeOnPage"
    updated = await client.put(f"{BASE}/{trigger_id}", json={"schedule": {"active": False}})
    assert updated.status_code == 200 and updated.json()["status"] == "paused"
    assert updated.json()["name"] == "High Intent Exit Prevention"  # the keys not given are kept
    expired = await client.put(f"{BASE}/{trigger_id}", json={"schedule": {"active": True, "endDate": "2025-01-31"}})
    assert expired.json()["status"] == "expired"
    deleted = await client.delete(f"{BASE}/{trigger_id}")
    assert deleted.json() == {"triggerId": trigger_id, "deleted": True}
    assert (await client.get(f"{BASE}/{trigger_id}")).status_code == 404
    assert (await client.delete(f"{BASE}/{trigger_id}")).status_code == 404


async def test_bad_definitions_get_400s_naming_the_field(client: httpx.AsyncClient) -> None:
    cases = [
        ({"conditions": {"eventType": "x", "filters": [{"field": "url", "operator": "equals", "value": "/"},
                                                       {"field": "url", "operator": "bigger", "value": 1}]}},
         "$.conditions.filters[1].operator"),
        ({"conditions": {"eventType": "x", "filters": [{"field": "engagment", "operator": "equals", "value": 1}]}},
         "$.conditions.filters[0].field"),
        ({"conditions": {"eventType": "x", "filters": [{"field": "engagementScore", "operator": "greater_than",
                                                        "value": "high"}]}},
         "$.conditions.filters[0].value"),
        ({"conditions": {"eventType": "x", "filters": [{"field": "url", "operator": "greater_than", "value": 3}]}},
         "$.conditions.filters[0].operator"),
        ({"conditions": {"filters": []}}, "$.conditions.eventType"),
        ({"schedule": {"timeZone": "Mars/Olympus"}}, "$.schedule.timeZone"),
        ({"schedule": {"startDate": "soon"}}, "$.schedule.startDate"),
        ({"personalization": {"mood": "happy"}}, "$.personalization.mood"),
        ({"actions": []}, "$.actions"),
        ({"cooldownSeconds": -5}, "$.cooldownSeconds"),
        ({"colour": "red"}, "$.colour"),
    ]
    for change, field in cases:
        answer = await client.post(BASE, json=seed_trigger(**change))
        assert answer.status_code == 400, (change, answer.text)
        assert answer.json()["error"]["field"] == field, answer.text
    assert (await client.post(BASE, content=b"{nope", headers={"content-type": "application/json"})).status_code == 400
    assert (await client.get(BASE)).json()["total"] == 0  # nothing was created


async def test_a_firing_is_in_the_ingest_answer_and_on_the_sse_and_ws_streams_once_per_session(
    server: ServerProcess, client: httpx.AsyncClient
) -> None:
    trigger_id = await create(client, seed_trigger())
    at = now_ms() - 60_000
    query = "sessionId=s-1&subscriptions=conversion_triggers"
    async with SSEClient(f"{server.url}/api/v1/behavioral/stream?{query}") as sse, \
            open_websocket_url(f"{server.ws_url}/api/v1/behavioral/stream") as ws:
        await ws.send_message(json.dumps({"type": "connection", "sessionId": "s-1",
                                          "subscriptions": ["conversion_triggers"]}))
        with trio.fail_after(STEP_S):
            while json.loads(await ws.get_message())["type"] != "connection_ack":
                pass
        assert sse.status == 200
        # conditions not met (short time on page): nothing
        miss = (await client.post("/api/v1/behavioral/events", json=exit_event("s-1", 1000, at))).json()
        assert miss["triggers"] == []
        hit = (await client.post("/api/v1/behavioral/events", json=exit_event("s-1", 45000, at + 1000))).json()
        assert hit["triggers"] == [{"triggerId": trigger_id, "executed": True, "result": "automation_triggered"}]
        _, note = await sse.next_of_type("trigger_notification")
        with trio.fail_after(STEP_S):
            ws_note = json.loads(await ws.get_message())
        for message in (note, ws_note):
            assert message["type"] == "trigger_notification"
            assert message["triggerId"] == trigger_id and message["triggerType"] == "exit_intent"
            assert message["action"] == "show_exit_offer" and message["urgency"] == "high"
            assert message["personalization"]["offer"] == "discount"
            assert message["sessionId"] == "s-1"
        # once per session: the same session meeting the conditions again is not hit again
        again = (await client.post("/api/v1/behavioral/events", json=exit_event("s-1", 50000, at + 2000))).json()
        assert again["triggers"] == []
    # the batch answer lists what its events fired
    batch = await client.post("/api/v1/behavioral/batch", json={"events": [
        exit_event("s-2", 40000, at), exit_event("s-3", 100, at), exit_event("s-4", 40000, at, url="/blog"),
    ]})
    assert batch.json()["triggers"] == [{"triggerId": trigger_id, "executed": True, "result": "automation_triggered"}]
    monitor = (await client.get(f"{BASE}/{trigger_id}/monitor")).json()
    assert sorted(e["sessionId"] for e in monitor["executions"]) == ["s-1", "s-2"]
    reasons = monitor["executions"][0]["reasons"]
    assert {r["field"] for r in reasons} == {"timeOnPage", "url"} and all(r["passed"] for r in reasons)
    perf = (await client.get(f"{BASE}/{trigger_id}/performance")).json()
    assert perf["sessions"] == {"withEventType": 4, "fired": 2, "firedThenConverted": 0}
    assert perf["triggerRate"] == 0.5 and perf["conversionRate"] == 0.0
    assert perf["engagement"] is not None
    # s-2 converts after its firing: conversionRate counts it
    await client.post("/api/v1/behavioral/events", json={"eventType": "purchase", "sessionId": "s-2", "timestamp": at + 5000})
    perf = (await client.get(f"{BASE}/{trigger_id}/performance")).json()
    assert perf["sessions"]["firedThenConverted"] == 1 and perf["conversionRate"] == 0.5


async def test_cooldown_lets_a_trigger_fire_again_after_it(client: httpx.AsyncClient) -> None:
    trigger_id = await create(client, seed_trigger(cooldownSeconds=60))
    at = now_ms() - 600_000
    fired = []
    for offset in (0, 30_000, 61_000, 62_000):  # event times: fires at 0 and at 61 s
        answer = (await client.post("/api/v1/behavioral/events", json=exit_event("c-1", 40000, at + offset))).json()
        fired.append(bool(answer["triggers"]))
    assert fired == [True, False, True, False]
    assert (await client.get(f"{BASE}/{trigger_id}/monitor")).json()["count"] == 2


async def test_the_schedule_decides_by_event_time_and_time_zone(client: httpx.AsyncClient) -> None:
    schedule = {"active": True, "startDate": "2025-03-01", "endDate": "2025-03-01", "timeZone": "Asia/Tokyo"}
    await create(client, seed_trigger(schedule=schedule))
    tokyo_day_start = 1740754800000  # 2025-03-01T00:00 +09:00
    before = exit_event("t-1", 40000, tokyo_day_start - 1)
    inside = exit_event("t-2", 40000, tokyo_day_start + 3600_000)
    after = exit_event("t-3", 40000, tokyo_day_start + 86_400_000)
    results = []
    for event in (before, inside, after):
        results.append(bool((await client.post("/api/v1/behavioral/events", json=event)).json()["triggers"]))
    assert results == [False, True, False]


async def test_test_route_explains_and_records_nothing(client: httpx.AsyncClient) -> None:
    trigger_id = await create(client, seed_trigger())
    context = {"eventType": "exit_intent", "eventData": {"timeOnPage": 45000, "url": "/pricing/pro"}}
    answer = (await client.post(f"{BASE}/{trigger_id}/test", json={"context": context})).json()
    assert answer["wouldFire"] is True
    assert [f["passed"] for f in answer["reasons"]["filters"]] == [True, True]
    context["eventData"]["timeOnPage"] = 10
    answer = (await client.post(f"{BASE}/{trigger_id}/test", json={"context": context})).json()
    assert answer["wouldFire"] is False
    assert answer["reasons"]["filters"][0] == {"field": "timeOnPage", "operator": "greater_than", "expected": 30000,
                                              "actual": 10, "passed": False}
    assert (await client.get(f"{BASE}/{trigger_id}/monitor")).json()["count"] == 0


async def test_execute_runs_the_actions_now_and_is_monitored(server: ServerProcess, client: httpx.AsyncClient) -> None:
    trigger_id = await create(client, seed_trigger())
    body = {"sessionId": "session_123", "userId": "user_456",
            "context": {"eventType": "exit_intent", "eventData": {"mousePosition": {"x": 100, "y": 50},
                                                                   "scrollDepth": 0.8, "timeOnPage": 45000}},
            "override": {"personalization": {"persona": "TechEarlyAdopter", "deviceType": "mobile"}}}
    async with SSEClient(f"{server.url}/api/v1/behavioral/stream?sessionId=session_123"
                         "&subscriptions=conversion_triggers") as sse:
        answer = (await client.post(f"{BASE}/{trigger_id}/execute", json=body)).json()
        _, note = await sse.next_of_type("trigger_notification")
    assert answer["triggered"] is True and answer["executionId"].startswith("exe_")
    assert [a["type"] for a in answer["actions"]] == ["show_exit_offer", "capture_email"]
    assert all(a["executed"] for a in answer["actions"])
    assert answer["tracking"] == {"trackingId": answer["executionId"], "attribution": "exit_intent_trigger"}
    assert note["executionId"] == answer["executionId"]
    assert note["personalization"]["persona"] == "TechEarlyAdopter" and note["personalization"]["deviceType"] == "mobile"
    monitor = (await client.get(f"{BASE}/{trigger_id}/monitor")).json()
    assert monitor["executions"][0]["executionId"] == answer["executionId"]
    assert monitor["executions"][0]["source"] == "execute"
    bad = await client.post(f"{BASE}/{trigger_id}/execute", json={"context": {}})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "$.sessionId"


async def test_ab_test_assigns_deterministically_and_reports_per_variant(client: httpx.AsyncClient) -> None:
    trigger_id = await create(client, seed_trigger())
    bad = await client.post(f"{BASE}/{trigger_id}/ab-test", json={"variants": ["control", "offer"], "trafficSplit": [50, 40]})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "$.trafficSplit"
    started = await client.post(f"{BASE}/{trigger_id}/ab-test", json={
        "variants": ["control", {"name": "big_offer", "actions": [{"type": "show_exit_offer",
                                                                     "parameters": {"discount": 0.3}}]}],
        "trafficSplit": [50, 50]})
    assert started.status_code == 201
    # the test route names the variant, and it does not change for a session
    context = {"eventType": "exit_intent", "eventData": {"timeOnPage": 45000, "url": "/pricing"}}
    variants = {}
    for i in range(20):
        first = (await client.post(f"{BASE}/{trigger_id}/test", json={"context": context, "sessionId": f"ab-{i}"})).json()
        second = (await client.post(f"{BASE}/{trigger_id}/test", json={"context": context, "sessionId": f"ab-{i}"})).json()
        assert first["variant"] == second["variant"]
        variants[f"ab-{i}"] = first["variant"]
    assert set(variants.values()) == {"control", "big_offer"}
    at = now_ms() - 60_000
    for session, variant in variants.items():
        answer = (await client.post("/api/v1/behavioral/events", json=exit_event(session, 40000, at))).json()
        # control fires nothing (and is not listed); the other variant fires
        assert bool(answer["triggers"]) == (variant == "big_offer")
        if variant == "big_offer" and session.endswith(("1", "3", "5", "7", "9")):
            await client.post("/api/v1/behavioral/events", json={"eventType": "purchase", "sessionId": session,
                                                                 "timestamp": at + 1000})
    perf = (await client.get(f"{BASE}/{trigger_id}/performance")).json()
    by_name = {v["variant"]: v for v in perf["abTest"]["variants"]}
    controls = [s for s, v in variants.items() if v == "control"]
    offers = [s for s, v in variants.items() if v == "big_offer"]
    assert by_name["control"]["exposures"] == len(controls) and by_name["control"]["conversions"] == 0
    converted = [s for s in offers if s.endswith(("1", "3", "5", "7", "9"))]
    assert by_name["big_offer"]["exposures"] == len(offers) and by_name["big_offer"]["conversions"] == len(converted)
    # 20 sessions are not enough for the normal approximation: said, not computed
    assert by_name["big_offer"]["versusBaseline"]["pValue"] is None
    assert "insufficient samples" in by_name["big_offer"]["versusBaseline"]["reason"]
    monitor = (await client.get(f"{BASE}/{trigger_id}/monitor?limit=100")).json()
    recorded = {e["sessionId"]: (e["variant"], e["executed"]) for e in monitor["executions"]}
    assert recorded == {s: (v, v == "big_offer") for s, v in variants.items()}
    optimized = (await client.post(f"{BASE}/{trigger_id}/optimize")).json()
    assert optimized["previousSplit"] == [50.0, 50.0] and sum(optimized["newSplit"]) == 100
    if converted:  # the only variant with conversions takes the larger share, the control keeps its floor
        assert optimized["newSplit"][1] > optimized["newSplit"][0] >= 10.0
    assert (await client.get(f"{BASE}/{trigger_id}")).json()["abTest"]["trafficSplit"] == optimized["newSplit"]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL])
async def test_once_per_session_survives_a_restart(tmp_path: Any, stop: int) -> None:
    """SIGTERM: the session's snapshot holds the mark; SIGKILL: no snapshot, the Store's record does."""
    proc = ServerProcess(tmp_path / "data").start()
    try:
        async with httpx.AsyncClient(base_url=proc.url, timeout=10) as client:
            await create(client, seed_trigger())
            at = now_ms() - 60_000
            first = (await client.post("/api/v1/behavioral/events", json=exit_event("r-1", 40000, at))).json()
            assert first["triggers"]
    finally:
        proc.stop(stop)
    proc = ServerProcess(tmp_path / "data").start()
    try:
        async with httpx.AsyncClient(base_url=proc.url, timeout=10) as client:
            again = (await client.post("/api/v1/behavioral/events", json=exit_event("r-1", 40000, at + 1000))).json()
            assert again["triggers"] == []
            other = (await client.post("/api/v1/behavioral/events", json=exit_event("r-2", 40000, at + 1000))).json()
            assert other["triggers"]
    finally:
        assert proc.stop() == 0


async def test_triggers_need_the_secret_key_and_belong_to_a_project(keyed_server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=keyed_server.url, timeout=10) as client:
        public = {"authorization": f"Bearer {keyed_server.public_key}"}
        secret = {"authorization": f"Bearer {keyed_server.secret_key}"}
        assert (await client.post(BASE, json=seed_trigger())).status_code == 401
        assert (await client.post(BASE, json=seed_trigger(), headers=public)).status_code == 403
        created = await client.post(BASE, json=seed_trigger(), headers=secret)
        assert created.status_code == 201
        assert (await client.get(BASE, headers=public)).status_code == 403
        assert (await client.get(BASE, headers=secret)).json()["total"] == 1


async def test_events_sent_over_the_websocket_are_acknowledged_with_what_they_fired(
    server: ServerProcess, client: httpx.AsyncClient
) -> None:
    trigger_id = await create(client, seed_trigger())
    at = now_ms() - 60_000
    fired = [{"triggerId": trigger_id, "executed": True, "result": "automation_triggered"}]

    async def answer_to(ws: Any, message: dict[str, Any], kind: str) -> dict[str, Any]:
        await ws.send_message(json.dumps(message))
        with trio.fail_after(STEP_S):
            while True:
                received = json.loads(await ws.get_message())
                if received["type"] == kind and received.get("requestId") == message["requestId"]:
                    return received

    async with open_websocket_url(f"{server.ws_url}/api/v1/behavioral/stream") as ws:
        one = await answer_to(ws, {"type": "event", "requestId": "r-1", "event": exit_event("ws-1", 45000, at)}, "ack")
        assert one["triggers"] == fired
        batch = {"type": "batch", "requestId": "r-2",
                 "events": [exit_event("ws-2", 40000, at), exit_event("ws-3", 100, at)]}
        assert (await answer_to(ws, batch, "batch_ack"))["triggers"] == fired
        # once per session: the same session again fires nothing
        again = await answer_to(ws, {"type": "event", "requestId": "r-3", "event": exit_event("ws-1", 50000, at + 1)}, "ack")
        assert again["triggers"] == []
