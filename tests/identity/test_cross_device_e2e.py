"""Cross-device identity against a real server (issue 14 part 1): link two sessions and read the
continuity figures computed from them, unlink, sync a user's devices with their live state, the
merge guards' refusals, 400s and 404s, another project's sessions and users, and the live stream of
a user hearing its linked anonymous device until the link is undone."""

from __future__ import annotations

import time
from typing import Any

import httpx
from trio_websocket import open_websocket_url

from tests.e2e.server_process import ServerProcess
from tests.e2e.sse_client import SSEClient
from tests.e2e.test_streams import ws_until

BASE = "/api/v1/behavioral/cross-device"
EVENTS = "/api/v1/behavioral/batch"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def event(session: str, kind: str, ts: int, *, user: str | None = None, device: str = "mobile",
          device_id: str | None = None, **data: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"sessionId": session, "eventType": kind, "deviceType": device, "timestamp": ts,
                            "eventData": data}
    if user is not None:
        body["userId"] = user
    if device_id is not None:
        body["deviceId"] = device_id
    return body


def browse(session: str, start: int, pages: list[str], **who: Any) -> list[dict[str, Any]]:
    """A page view of each page 20 s apart, each followed by a scroll."""
    out = []
    for i, url in enumerate(pages):
        out.append(event(session, "page_view", start + i * 20_000, url=url, **who))
        out.append(event(session, "scroll", start + i * 20_000 + 5_000, scrollDepth=0.5 + i * 0.1, **who))
    return out


async def send(client: httpx.AsyncClient, events: list[dict[str, Any]], key: str | None = None) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else None
    answer = await client.post(EVENTS, json={"events": events}, headers=headers)
    assert answer.status_code == 200 and answer.json()["stored"] == len(events), answer.text


async def link(client: httpx.AsyncClient, primary: str, secondary: str, **extra: Any) -> httpx.Response:
    body = {"primarySessionId": primary, "secondarySessionId": secondary, "linkingMethod": "user_login",
            "confidence": 0.95, "evidence": ["same_user_id", "temporal_proximity"], **extra}
    return await client.post(f"{BASE}/link", json=body)


async def test_a_link_answers_figures_computed_from_both_sessions(client: httpx.AsyncClient) -> None:
    at = now_ms() - 120_000
    await send(client, browse("phone-1", at, ["/", "/product/1", "/pricing"], user="ann", device_id="dev-phone"))
    await send(client, browse("laptop-1", at + 30_000, ["/product/2", "/pricing"], device="desktop"))
    answer = await link(client, "phone-1", "laptop-1")
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["linked"] is True and body["linkingId"].startswith("link_") and body["created"] is True
    assert body["userId"] == "ann"  # the anonymous laptop joins the identified phone's user
    continuity = body["continuity"]
    # both sent only page views and scrolls, half and half: the same mix of behaviour
    assert continuity["behaviorContinuity"] == 1.0
    based = body["basedOn"]
    assert based["primary"]["eventsCompared"] == 6 and based["secondary"]["eventsCompared"] == 4
    # kinds of pages {home, product, pricing} and {product, pricing}: Jaccard 2/3; overlapping in time
    assert based["pageOverlap"] == round(2 / 3, 4) and based["temporalProximity"] == 1.0
    assert continuity["contextualContinuity"] == round((2 / 3 + 1) / 2, 4)
    intents = (based["primary"]["intent"], based["secondary"]["intent"])
    assert continuity["intentContinuity"] == round(1 - abs(intents[0] - intents[1]), 4)
    profile = body["unifiedProfile"]
    assert profile["primaryDevice"] == "mobile" and profile["secondaryDevice"] == "desktop"
    assert profile["behaviorPattern"] == "cross_device_deal_seeker"  # both looked at prices
    assert profile["conversionStage"] == "consideration"

    again = await link(client, "laptop-1", "phone-1")  # the same pair, either way round
    assert again.status_code == 200 and again.json()["linkingId"] == body["linkingId"]
    assert again.json()["created"] is False


async def test_figures_differ_for_sessions_that_differ(client: httpx.AsyncClient) -> None:
    at = now_ms() - 4 * 3_600_000
    await send(client, browse("a-1", at, ["/blog/x", "/blog/y"], user="bob"))
    clicks = [event("b-1", "click", at + 3 * 3_600_000 + i * 1000, device="desktop") for i in range(6)]
    await send(client, [event("b-1", "page_view", at + 3 * 3_600_000, device="desktop", url="/cart"), *clicks])
    body = (await link(client, "a-1", "b-1")).json()
    continuity = body["continuity"]
    # a-1: 2 page views + 2 scrolls; b-1: 1 page view + 6 clicks: they share 1/7 of page views
    assert continuity["behaviorContinuity"] == round(1 / 7, 4)
    assert body["basedOn"]["pageOverlap"] == 0.0
    assert 0 < body["basedOn"]["temporalProximity"] < 0.1  # hours apart
    assert body["unifiedProfile"]["conversionStage"] == "decision"  # the laptop visited the cart


async def test_unlink_undoes_the_link(client: httpx.AsyncClient) -> None:
    at = now_ms() - 60_000
    await send(client, browse("u-phone", at, ["/"], user="cara"))
    await send(client, browse("u-tablet", at, ["/"], device="tablet"))
    linking_id = (await link(client, "u-phone", "u-tablet")).json()["linkingId"]
    sync = (await client.get(f"{BASE}/sync/cara")).json()
    assert {d["deviceId"] for d in sync["devices"]} == {"u-phone", "u-tablet"}

    answer = await client.delete(f"{BASE}/link/{linking_id}")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["unlinked"] is True and body["linkingId"] == linking_id and body["userId"] == "cara"
    assert body["primarySessionId"] == "u-phone" and body["secondarySessionId"] == "u-tablet"
    assert body["detachedSessions"] == ["u-tablet"]
    sync = (await client.get(f"{BASE}/sync/cara")).json()
    assert [d["deviceId"] for d in sync["devices"]] == ["u-phone"]
    again = await client.delete(f"{BASE}/link/{linking_id}")
    assert again.status_code == 404 and linking_id in again.json()["error"]["reason"]
    relinked = await link(client, "u-phone", "u-tablet")  # reversible: it can be made again
    assert relinked.status_code == 201 and relinked.json()["linkingId"] != linking_id


async def test_sync_lists_every_device_with_its_live_state(client: httpx.AsyncClient) -> None:
    at = now_ms() - 300_000
    await send(client, browse("s-phone", at, ["/", "/product/123"], user="dan", device_id="device_123"))
    await send(client, browse("s-desk", at + 60_000, ["/comparison"], user="dan", device="desktop",
                              device_id="device_456"))
    await send(client, browse("s-tablet", at + 120_000, ["/pricing"], device="tablet"))  # anonymous
    assert (await link(client, "s-phone", "s-tablet")).status_code == 201
    answer = await client.get(f"{BASE}/sync/dan")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["userId"] == "dan"
    devices = {d["deviceId"]: d for d in body["devices"]}
    assert set(devices) == {"device_123", "device_456", "s-tablet"}  # no device id sent: the session's
    assert [d["deviceId"] for d in body["devices"]] == ["s-tablet", "device_456", "device_123"]  # newest first
    phone = devices["device_123"]
    assert phone["deviceType"] == "mobile" and phone["currentState"]["page"] == "/product/123"
    live = (await client.get("/api/v1/behavioral/sessions/s-phone")).json()
    assert phone["currentState"]["engagement"] == live["insights"]["engagement"]["score"]
    assert phone["currentState"]["intent"] == live["insights"]["intent"]["purchaseIntent"]
    assert phone["lastActivity"] == iso(live["lastActivity"])
    tablet = devices["s-tablet"]
    assert tablet["linked"] is True and tablet["deviceType"] == "tablet" and tablet["currentState"]["page"] == "/pricing"
    sync = body["synchronization"]
    assert sync["syncStatus"] == "current" and sync["conflicts"] == []
    assert sync["lastSync"] == tablet["lastActivity"]

    # the anonymous tablet logs in as someone else later: a real conflict, reported
    await send(client, [event("s-tablet", "click", at + 200_000, device="tablet", user="eve")])
    sync = (await client.get(f"{BASE}/sync/dan")).json()["synchronization"]
    assert sync["conflicts"] == [{"type": "session_carries_other_user", "sessionId": "s-tablet", "userId": "eve",
                                  "linked": True, "reason": "the session's events now carry user 'eve'"}]


def iso(ms: int) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def test_merge_guards_refuse_and_say_why(client: httpx.AsyncClient) -> None:
    at = now_ms() - 60_000
    await send(client, browse("g-ann", at, ["/"], user="ann"))
    await send(client, browse("g-bob", at, ["/"], user="bob"))
    await send(client, browse("g-anon", at, ["/"], device="tablet"))
    two_users = await link(client, "g-ann", "g-bob")
    assert two_users.status_code == 409
    error = two_users.json()["error"]
    assert error["code"] == "identified_users" and error["field"] == "$.secondarySessionId"
    assert "'ann'" in error["reason"] and "'bob'" in error["reason"]

    assert (await link(client, "g-anon", "g-ann")).status_code == 201
    through_anon = await link(client, "g-anon", "g-bob")  # the anonymous tablet is ann's now
    assert through_anon.status_code == 409
    error = through_anon.json()["error"]
    assert error["code"] == "identity_conflict" and "'ann'" in error["reason"] and "'bob'" in error["reason"]
    assert error["field"] == "$.secondarySessionId"
    assert through_anon.json()["linked"] is False
    bob = (await client.get(f"{BASE}/sync/bob")).json()
    assert [d["deviceId"] for d in bob["devices"]] == ["g-bob"]  # nothing of ann's reached bob


async def test_a_user_may_link_at_most_ten_devices(client: httpx.AsyncClient) -> None:
    at = now_ms() - 60_000
    await send(client, browse("cap-main", at, ["/"], user="cap"))
    sessions = [f"cap-{i}" for i in range(10)]
    await send(client, [e for s in sessions for e in browse(s, at, ["/"], device="tablet")])
    for session in sessions[:9]:
        assert (await link(client, "cap-main", session)).status_code == 201
    refused = await link(client, "cap-main", sessions[9])
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["code"] == "too_many_devices" and "11 devices" in error["reason"] and "at most 10" in error["reason"]


async def test_bad_input_and_unknown_sessions_are_400_and_unknown_users_404(client: httpx.AsyncClient) -> None:
    at = now_ms() - 60_000
    await send(client, browse("v-1", at, ["/"], user="val"))
    cases: list[tuple[Any, str]] = [
        ({"primarySessionId": "v-1", "secondarySessionId": "v-1"}, "$.secondarySessionId"),
        ({"secondarySessionId": "v-1"}, "$.primarySessionId"),
        ({"primarySessionId": "v-1", "secondarySessionId": 7}, "$.secondarySessionId"),
        ({"primarySessionId": "v-1", "secondarySessionId": "x", "confidence": 1.5}, "$.confidence"),
        ({"primarySessionId": "v-1", "secondarySessionId": "x", "confidence": True}, "$.confidence"),
        ({"primarySessionId": "v-1", "secondarySessionId": "x", "evidence": ["a", 3]}, "$.evidence[1]"),
        ({"primarySessionId": "v-1", "secondarySessionId": "x", "linkingMethod": ""}, "$.linkingMethod"),
        ({"primarySessionId": "v-1", "secondarySessionId": "x", "other": 1}, "$.other"),
        ([1, 2], "$"),
    ]
    for body, field in cases:
        answer = await client.post(f"{BASE}/link", json=body)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["error"]["field"] == field, (body, answer.text)
    malformed = await client.post(f"{BASE}/link", content=b"{nope")
    assert malformed.status_code == 400 and malformed.json()["error"]["field"] == "$"

    unknown = await link(client, "v-1", "never-seen")
    assert unknown.status_code == 400
    assert unknown.json()["error"]["field"] == "$.secondarySessionId" and "never-seen" in unknown.json()["error"]["reason"]
    unknown = await link(client, "never-seen", "v-1")
    assert unknown.status_code == 400 and unknown.json()["error"]["field"] == "$.primarySessionId"
    assert (await client.get(f"{BASE}/sync/nobody")).status_code == 404
    assert (await client.delete(f"{BASE}/link/link_0000")).status_code == 404


async def test_another_projects_sessions_and_users_are_unknown(keyed_server: ServerProcess) -> None:
    secret = {"Authorization": f"Bearer {keyed_server.secret_key}"}
    async with httpx.AsyncClient(base_url=keyed_server.url, timeout=10, headers=secret) as owner:
        created = await owner.post("/api/admin/projects", json={"name": "other"})
        assert created.status_code == 201, created.text
        other_key = created.json()["secretKey"]
        at = now_ms() - 60_000
        await send(owner, browse("p-phone", at, ["/"], user="pat"))
        await send(owner, browse("p-anon", at, ["/"], device="tablet"))
        linking_id = (await link(owner, "p-phone", "p-anon")).json()["linkingId"]
        public = await owner.get(f"{BASE}/sync/pat", headers={"Authorization": f"Bearer {keyed_server.public_key}"})
        assert public.status_code == 403  # a browser's write key may not read or link identities
    async with httpx.AsyncClient(base_url=keyed_server.url, timeout=10,
                                 headers={"Authorization": f"Bearer {other_key}"}) as other:
        await send(other, browse("o-1", now_ms() - 60_000, ["/"], user="olga"))
        assert (await other.get(f"{BASE}/sync/pat")).status_code == 404
        crossing = await link(other, "o-1", "p-phone")
        assert crossing.status_code == 400 and crossing.json()["error"]["field"] == "$.secondarySessionId"
        assert (await other.delete(f"{BASE}/link/{linking_id}")).status_code == 404
    async with httpx.AsyncClient(base_url=keyed_server.url, timeout=10, headers=secret) as owner:
        sync = (await owner.get(f"{BASE}/sync/pat")).json()
        assert {d["deviceId"] for d in sync["devices"]} == {"p-phone", "p-anon"}  # untouched by the other key


async def test_a_user_stream_hears_its_linked_device_until_unlinked(server: ServerProcess,
                                                                     client: httpx.AsyncClient) -> None:
    at = now_ms() - 60_000
    await send(client, browse("l-phone", at, ["/"], user="lia"))
    await send(client, browse("l-laptop", at, ["/"], device="desktop"))  # anonymous
    query = "userId=lia&subscriptions=behavioral_events"
    async with SSEClient(f"{server.url}/api/v1/behavioral/stream?{query}") as sse:
        assert sse.status == 200
        await send(client, [event("l-laptop", "click", at + 40_000, device="desktop", marker="before")])
        await send(client, [event("l-phone", "click", at + 41_000, user="lia", marker="own-1")])
        _, first = await sse.next_of_type("behavioral_event")
        assert first["sessionId"] == "l-phone"  # the anonymous laptop was not the user's yet

        linking_id = (await link(client, "l-phone", "l-laptop")).json()["linkingId"]
        await send(client, [event("l-laptop", "click", at + 42_000, device="desktop", marker="linked")])
        _, heard = await sse.next_of_type("behavioral_event")
        assert heard["sessionId"] == "l-laptop" and heard["userId"] is None  # the event is stored as sent
        assert heard["event"]["marker"] == "linked"

        assert (await client.delete(f"{BASE}/link/{linking_id}")).status_code == 200
        await send(client, [event("l-laptop", "click", at + 43_000, device="desktop", marker="unlinked")])
        await send(client, [event("l-phone", "click", at + 44_000, user="lia", marker="own-2")])
        _, after = await sse.next_of_type("behavioral_event")
        assert after["sessionId"] == "l-phone" and after["event"]["marker"] == "own-2"



async def test_a_user_websocket_hears_its_linked_device_until_unlinked(server: ServerProcess,
                                                                        client: httpx.AsyncClient) -> None:
    at = now_ms() - 60_000
    await send(client, browse("w-phone", at, ["/"], user="wes"))
    await send(client, browse("w-tablet", at, ["/"], device="tablet"))  # anonymous
    async with open_websocket_url(f"{server.ws_url}/api/v1/behavioral/stream?userId=wes") as ws:
        assert (await ws_until(ws, "connection_ack"))["userId"] == "wes"
        linking_id = (await link(client, "w-phone", "w-tablet")).json()["linkingId"]
        await send(client, [event("w-tablet", "click", at + 42_000, device="tablet", marker="linked")])
        heard = await ws_until(ws, "behavioral_event")
        assert heard["sessionId"] == "w-tablet" and heard["event"]["marker"] == "linked"
        metrics = await ws_until(ws, "session_metrics")  # the device's live state changes too
        assert metrics["sessionId"] == "w-tablet"

        assert (await client.delete(f"{BASE}/link/{linking_id}")).status_code == 200
        await send(client, [event("w-tablet", "click", at + 43_000, device="tablet", marker="unlinked")])
        await send(client, [event("w-phone", "click", at + 44_000, user="wes", marker="own")])
        after = await ws_until(ws, "behavioral_event")
        assert after["sessionId"] == "w-phone" and after["event"]["marker"] == "own"


async def test_a_user_stream_resumed_with_last_event_id_replays_its_linked_device(
    server: ServerProcess, client: httpx.AsyncClient
) -> None:
    at = now_ms() - 60_000
    await send(client, browse("r-phone", at, ["/"], user="rio"))
    await send(client, browse("r-laptop", at, ["/"], device="desktop"))  # anonymous
    assert (await link(client, "r-phone", "r-laptop")).status_code == 201
    query = "userId=rio&subscriptions=behavioral_events"
    async with SSEClient(f"{server.url}/api/v1/behavioral/stream?{query}") as sse:
        await send(client, [event("r-phone", "click", at + 40_000, user="rio", marker="seen")])
        seen_id, _ = await sse.next_of_type("behavioral_event")
    # Disconnected: the linked laptop and the phone send meanwhile; the resume replays both.
    await send(client, [event("r-laptop", "click", at + 41_000, device="desktop", marker="missed-laptop")])
    await send(client, [event("r-phone", "click", at + 42_000, user="rio", marker="missed-phone")])
    url = f"{server.url}/api/v1/behavioral/stream?{query}"
    async with SSEClient(url, headers={"Last-Event-ID": str(seen_id)}) as resumed:
        _, first = await resumed.next_of_type("behavioral_event")
        _, second = await resumed.next_of_type("behavioral_event")
    assert [first["event"]["marker"], second["event"]["marker"]] == ["missed-laptop", "missed-phone"]
