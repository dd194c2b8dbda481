"""Integration status and sync against a real server and real receivers on loopback
(docs/automation.md "Integrations"): a failing receiver shows in the status and in
dataConsistency, and two syncs send every event since the last sync exactly once."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec

from tests.e2e.server_process import ServerProcess
from tests.e2e.test_webhooks import SECRET, receiving, register, verify, wait_for

STATUS = "/api/v1/behavioral/integration/status"
SYNC = "/api/v1/behavioral/integration/sync"


async def track(client: httpx.AsyncClient, n: int, prefix: str) -> list[str]:
    ids = []
    for i in range(n):
        answer = await client.post("/api/events/track/page_view", json={"serviceName": "shop", "eventId": f"{prefix}-{i}"})
        assert answer.status_code == 200, answer.text
        ids.append(f"{prefix}-{i}")
    return ids


def exported(bodies: list[bytes]) -> list[str]:
    """The client event ids in the sync_batch deliveries received, in order."""
    out = []
    for body in bodies:
        message = msgspec.json.decode(body)
        assert message["type"] == "sync_batch"
        out += [event["payload"]["eventId"] for event in message["data"]["events"]]
    return out


async def test_status_shows_a_failing_receiver_and_consistency_from_its_deliveries(
    server: ServerProcess, client: httpx.AsyncClient
) -> None:
    empty = (await client.get(STATUS)).json()
    assert empty["integrations"]["database"]["health"] == "healthy"
    assert empty["integrations"]["bus"]["status"] == "not_configured"
    assert empty["dataConsistency"] is None  # no delivery yet: nothing to measure
    with receiving(lambda n: 200) as good, receiving(lambda n: 500) as bad:
        good_hook = await register(client, good.url, ["page_view"], secret=SECRET)
        bad_hook = await register(client, bad.url, ["page_view"], secret=SECRET)
        await track(client, 1, "s")

        async def settled() -> dict[str, Any] | None:
            body: dict[str, Any] = (await client.get(STATUS)).json()
            failing = body["integrations"][f"webhook:{bad_hook['id']}"]
            ok = body["integrations"][f"webhook:{good_hook['id']}"]
            return body if failing["deliveries"]["retrying"] and ok["deliveries"]["delivered"] else None

        body = await wait_for(settled, "one delivered and one failing delivery")
        failing = body["integrations"][f"webhook:{bad_hook['id']}"]
        ok = body["integrations"][f"webhook:{good_hook['id']}"]
        assert failing["health"] == "unhealthy" and failing["lastSync"] is None and failing["lastStatus"] == 500
        assert "no delivery succeeded" in failing["reason"]
        assert ok["health"] == "healthy" and ok["lastSync"].endswith("Z") and ok["status"] == "active"
        assert body["overallHealth"] == "unhealthy"
        assert body["dataConsistency"] == 50.0  # 1 delivered of 2 with an outcome
        assert body["dataConsistencyBasis"]["delivered"] == 1 and body["dataConsistencyBasis"]["retrying"] == 1
        assert body["integrations"]["streams"]["websockets"] == 0
        verify(SECRET, good.received[0].headers, good.received[0].body)


async def test_two_syncs_send_every_event_since_the_last_one_exactly_once(client: httpx.AsyncClient) -> None:
    with receiving(lambda n: 200) as receiver:
        hook = await register(client, receiver.url, ["trigger_fired"], secret=SECRET)  # not subscribed to page_view
        first_ids = await track(client, 3, "a")
        first = (await client.post(SYNC, json={"syncType": "incremental", "dataTypes": ["behavioral_events"]})).json()
        assert first["status"] == "completed" and first["eventsSent"] == 3 and first["deliveries"] == 1
        (entry,) = first["receivers"]
        assert entry["webhookId"] == hook["id"] and entry["afterSeqBefore"] == 0 and entry["afterSeq"] > 0
        await wait_for(lambda: len(receiver.successes()) == 1, "the first batch")
        second_ids = await track(client, 2, "b")
        second = (await client.post(SYNC, json={"systems": [hook["id"]]})).json()
        assert second["eventsSent"] == 2 and second["receivers"][0]["afterSeqBefore"] == entry["afterSeq"]
        await wait_for(lambda: len(receiver.successes()) == 2, "the second batch")
        third = (await client.post(SYNC)).json()  # nothing new
        assert third["eventsSent"] == 0 and third["deliveries"] == 0
        assert exported([r.body for r in receiver.successes()]) == first_ids + second_ids
        for received in receiver.successes():
            verify(SECRET, received.headers, received.body)
        status = (await client.get(STATUS)).json()["integrations"][f"webhook:{hook['id']}"]
        assert status["export"]["eventsSent"] == 5 and status["export"]["afterSeq"] == second["receivers"][0]["afterSeq"]
        seed = await client.post(SYNC, json={"systems": ["ux_intelligence"], "syncType": "incremental"})
        assert seed.status_code == 400 and seed.json()["error"]["field"] == "$.systems[0]"
        partial = (await client.post(SYNC, json={"dataTypes": ["behavioral_events", "user_profiles"]})).json()
        assert partial["skipped"] == [{"dataType": "user_profiles",
                                       "reason": "not exported by the sync: only behavioral_events are"}]
        for payload, field in [({"syncType": "full"}, "$.syncType"), ({"dataTypes": ["moods"]}, "$.dataTypes[0]"),
                               ({"every": 1}, "$.every")]:
            bad = await client.post(SYNC, json=payload)
            assert bad.status_code == 400 and bad.json()["error"]["field"] == field, bad.text
