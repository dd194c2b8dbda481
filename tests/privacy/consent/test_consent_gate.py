"""Consent gates the pipeline (issue 14, actors/privacy/consent.py), seen from a client of a real server:
what the ingest answers say, what is stored and processed, and the drop counters."""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio

from tests.e2e.server_process import ServerProcess
from tests.privacy.consent.helpers import (
    BATCH,
    CONSENT,
    EVENTS,
    STEP_S,
    consent,
    event,
    everything_but,
    now_ms,
)


async def record(client: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    answer = await client.post(CONSENT, json=body, headers=headers)
    assert answer.status_code == 201, answer.text


async def drops(client: httpx.AsyncClient) -> dict[str, int]:
    return dict((await client.get("/api/v1/behavioral/monitoring/performance")).json()["drops"])


async def stored_count(client: httpx.AsyncClient, **filters: str) -> int:
    return len((await client.get("/api/events", params={"limit": 1000, **filters})).json()["events"])


async def test_no_analytics_consent_drops_the_event_says_so_and_counts_it(client: httpx.AsyncClient) -> None:
    await record(client, consent("u-no", **everything_but("analytics")))
    one = await client.post(EVENTS, json=event("u-no", "s-no"))
    assert one.status_code == 200
    assert one.json()["eventId"] is None and one.json()["stored"] is False
    assert one.json()["dropped"]["reason"] == "consent" and one.json()["dropped"]["category"] == "analytics"
    batch = await client.post(BATCH, json={"events": [event("u-yes", "s-yes"), event("u-no", "s-no")]})
    assert batch.status_code == 200
    answer = batch.json()
    assert (answer["processed"], answer["stored"], answer["dropped"]) == (1, 1, 1)
    assert [r["status"] for r in answer["results"]] == ["stored", "dropped"]
    assert answer["results"][1]["eventId"] is None and answer["results"][1]["dropped"]["category"] == "analytics"
    # seed 004's doors: the same rule, its own field names
    track = (await client.post("/api/events/track/clicked", json={"userId": "u-no"})).json()
    assert track["eventId"] is None and track["stored"] is False and track["dropped"]["category"] == "analytics"
    tracked = (await client.post("/api/events/track/batch", json={"events": [
        {"eventName": "a", "payload": {"userId": "u-no"}}, {"eventName": "b", "payload": {"userId": "u-yes"}}]})).json()
    assert (tracked["storedCount"], tracked["droppedCount"], tracked["processedCount"]) == (1, 1, 1)
    assert [r["status"] for r in tracked["results"]] == ["dropped", "stored"]
    # a request whose events are all dropped is still a 200: valid, not to be retried
    all_dropped = await client.post(BATCH, json={"events": [event("u-no", "s-no"), event("u-no", "s-no2")]})
    assert all_dropped.status_code == 200 and all_dropped.json()["dropped"] == 2 and all_dropped.json()["stored"] == 0
    assert await stored_count(client, userId="u-no") == 0  # not stored
    assert await stored_count(client, userId="u-yes") == 2
    assert (await client.get("/api/v1/behavioral/sessions/s-no")).status_code == 404  # not processed
    assert (await drops(client))["consent_analytics"] == 6


async def test_answers_without_a_drop_have_no_new_fields(client: httpx.AsyncClient) -> None:
    one = (await client.post(EVENTS, json=event("u-1", "s-1"))).json()
    assert set(one) == {"eventId", "processed", "processingTime", "triggers", "duplicate", "timestamp"}
    batch = (await client.post(BATCH, json={"events": [event("u-1", "s-1")]})).json()
    assert "dropped" not in batch and set(batch["results"][0]) == {"index", "eventId", "status", "processed"}
    tracked = (await client.post("/api/events/track/batch", json={"events": [{"eventName": "a"}]})).json()
    assert "droppedCount" not in tracked and "dropped" not in tracked["results"][0]
    assert not any(name.startswith("consent_") for name in await drops(client))


async def test_no_marketing_consent_fires_no_trigger(client: httpx.AsyncClient) -> None:
    trigger = {"name": "exit offer", "conditions": {"eventType": "exit_intent", "filters": [
        {"field": "url", "operator": "contains", "value": "/pricing"}]},
        "actions": [{"type": "show_exit_offer", "parameters": {"discount": 0.15}}]}
    created = await client.post("/api/v1/behavioral/triggers", json=trigger)
    assert created.status_code == 201, created.text
    await record(client, consent("u-nomkt", **everything_but("marketing")))
    quiet = (await client.post(EVENTS, json=event("u-nomkt", "s-nomkt", "exit_intent"))).json()
    assert quiet["eventId"] is not None and quiet["triggers"] == []  # stored, but no trigger acts on it
    fired = (await client.post(EVENTS, json=event("u-open", "s-open", "exit_intent"))).json()
    assert [t["triggerId"] for t in fired["triggers"]] == [created.json()["triggerId"]]
    assert (await drops(client))["consent_marketing"] == 1
    # the same for a request carrying the Global Privacy Control
    gpc = (await client.post(EVENTS, json=event("u-gpc", "s-gpc", "exit_intent"), headers={"Sec-GPC": "1"})).json()
    assert gpc["eventId"] is not None and gpc["triggers"] == []
    counted = await drops(client)
    assert counted["consent_marketing"] == 2 and counted["consent_advertising"] == 1  # u-nomkt granted advertising


async def test_no_personalization_consent_leaves_the_insights_unchanged(client: httpx.AsyncClient) -> None:
    at = now_ms() - 60_000
    first = event("u-pers", "s-pers", timestamp=at)
    assert (await client.post(EVENTS, json=first)).status_code == 200
    before = (await client.get("/api/v1/behavioral/sessions/s-pers")).json()
    assert before["insights"] is not None and before["eventCount"] == 1
    await record(client, consent("u-pers", **everything_but("personalization")))
    for offset, depth in ((20_000, 0.5), (40_000, 0.95)):
        scroll = event("u-pers", "s-pers", "scroll", scrollDepth=depth, timestamp=at + offset)
        answer = (await client.post(EVENTS, json=scroll)).json()
        assert answer["eventId"] is not None  # stored and counted
    after = (await client.get("/api/v1/behavioral/sessions/s-pers")).json()
    assert after["eventCount"] == 3
    assert after["insights"] == before["insights"]  # no insight step saw the events
    assert (await drops(client))["consent_personalization"] == 2
    # a user who consents: the same events move the insights
    assert (await client.post(EVENTS, json=event("u-ok", "s-ok", timestamp=at))).status_code == 200
    alike = (await client.get("/api/v1/behavioral/sessions/s-ok")).json()["insights"]
    assert alike == before["insights"]
    scroll = event("u-ok", "s-ok", "scroll", scrollDepth=0.95, timestamp=at + 40_000)
    assert (await client.post(EVENTS, json=scroll)).status_code == 200
    assert (await client.get("/api/v1/behavioral/sessions/s-ok")).json()["insights"] != alike


async def test_gpc_stamps_every_door_and_stores_the_flags(client: httpx.AsyncClient) -> None:
    gpc = {"Sec-GPC": "1"}
    assert (await client.post(EVENTS, json=event("u-g", "s-g"), headers=gpc)).status_code == 200
    assert (await client.post(BATCH, json={"events": [event("u-g", "s-g")]}, headers=gpc)).status_code == 200
    assert (await client.post("/api/events/track/a", json={"userId": "u-g"}, headers=gpc)).status_code == 200
    assert (await client.post("/api/events/track/batch", json={"events": [{"eventName": "b", "payload": {"userId": "u-g"}}]},
                              headers=gpc)).status_code == 200
    segment = {"batch": [{"type": "track", "event": "c", "userId": "u-g", "messageId": "m-1"}]}
    assert (await client.post("/v1/batch", json=segment, headers=gpc)).status_code == 200
    posthog = {"api_key": "x", "batch": [{"event": "d", "distinct_id": "u-g", "properties": {}}]}
    assert (await client.post("/batch/", json=posthog, headers=gpc)).status_code == 200
    counted = await drops(client)
    assert counted["consent_marketing"] == 6 and counted["consent_advertising"] == 6
    assert "consent_analytics" not in counted  # GPC is no analytics denial: all six are stored
    assert await stored_count(client, userId="u-g") == 6


async def test_gpc_on_a_websocket_handshake_stamps_its_events(server: ServerProcess, client: httpx.AsyncClient) -> None:
    from trio_websocket import open_websocket_url

    async with open_websocket_url(f"{server.ws_url}/api/v1/behavioral/stream", extra_headers=[("Sec-GPC", "1")]) as ws:
        await ws.send_message('{"type": "event", "requestId": "r1", "event": {"eventType": "page_view", "userId": "u-ws", "sessionId": "s-ws"}}')
        with trio.fail_after(STEP_S):
            while '"ack"' not in (message := str(await ws.get_message())):
                pass
    assert '"eventId":"evt_' in message
    counted = await drops(client)
    assert counted["consent_marketing"] == 1 and counted["consent_advertising"] == 1
    # an event dropped over a socket: its ack says so, like the HTTP answer
    await record(client, consent("u-ws-no", "denied"))
    async with open_websocket_url(f"{server.ws_url}/api/v1/behavioral/stream") as ws:
        await ws.send_message('{"type": "event", "requestId": "r2", "event": {"eventType": "page_view", "userId": "u-ws-no"}}')
        with trio.fail_after(STEP_S):
            while '"ack"' not in (message := str(await ws.get_message())):
                pass
        ack = json.loads(message)
        assert ack["eventId"] is None and ack["stored"] is False and ack["dropped"]["category"] == "analytics"
        await ws.send_message('{"type": "batch", "requestId": "r3", "events": [{"eventType": "a", "userId": "u-ws-no"}, {"eventType": "b", "userId": "u-ws"}]}')
        with trio.fail_after(STEP_S):
            while '"batch_ack"' not in (message := str(await ws.get_message())):
                pass
        batch = json.loads(message)
        assert (batch["stored"], [r["status"] for r in batch["results"]]) == (1, ["dropped", "stored"])


async def test_a_later_grant_lets_the_events_in_again_and_the_trail_says_it_all(client: httpx.AsyncClient) -> None:
    await record(client, consent("u-back", "denied"))
    assert (await client.post(EVENTS, json=event("u-back", "s-back"))).json()["stored"] is False
    await record(client, consent("u-back", "withdrawn", analytics=True))  # withdrawn grants nothing, whatever it says
    assert (await client.post(EVENTS, json=event("u-back", "s-back"))).json()["stored"] is False
    await record(client, consent("u-back", "granted"))
    again = (await client.post(EVENTS, json=event("u-back", "s-back"))).json()
    assert again["eventId"] is not None and "dropped" not in again
    view = (await client.get(f"{CONSENT}/u-back")).json()
    assert view["source"] == "record" and view["consentStatus"] == "granted"
    assert [c["consentStatus"] for c in view["auditTrail"]] == ["granted", "withdrawn", "denied"]  # newest first
    assert view["auditTrail"][1]["granularConsent"]["analytics"] is False
    limited = (await client.get(f"{CONSENT}/u-back", params={"limit": 2})).json()
    assert [c["consentStatus"] for c in limited["auditTrail"]] == ["granted", "withdrawn"]
    assert await stored_count(client, userId="u-back") == 1
