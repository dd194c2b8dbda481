"""PostHog's official Python SDK (posthog), unchanged, against a real Pulse process; and posthog-js's
request encodings (gzip-js, base64 forms, lz64) over plain HTTP, as a browser would send them.
"""

from __future__ import annotations

import base64
import gzip
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from posthog import Posthog
from posthog.request import APIError

from tests.compat.conftest import stored_events
from tests.e2e.server_process import ServerProcess

# LZString.compressToBase64 of LZ_JSON, computed with the reference lz-string.js 1.4.4 (pieroxy/lz-string)
LZ_JSON = ('[{"event":"$pageview","distinct_id":"u-lz","properties":{"token":"abc",'
           '"$current_url":"https://example.com/\u00fc\u20ac\U0001f600"}}]')
LZ_BASE64 = ("NobwRApgbhB2AuYBcYAkAHAhgc2gSwgHcwAaMAEzwGd49YBjeAfT3OTAFcBaAGwC9SYdACcA9ugjDaEKsnDxRAazjtMAI3qDU9Ds"
             "OFxmunuwAW8eOipIA9NYgAPTAFt0PCADp6op9YA/gGoJAXg3AAD2wAF8wgF0gA==")


@pytest.fixture
def posthog_client(server: ServerProcess) -> Iterator[Posthog]:
    # debug=True: the SDK raises what it would otherwise only log, so a refused upload fails the test
    client = Posthog("phc_any_project_key", host=server.url, sync_mode=True, debug=True)
    yield client
    client.shutdown()


def _by_name(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {event["name"]: event for event in events}


def test_every_call_becomes_a_pulse_event(server: ServerProcess, posthog_client: Posthog) -> None:
    posthog_client.capture("Signed Up", distinct_id="user-1", properties={
        "plan": "pro", "$session_id": "sess-1", "$current_url": "https://example.com/pricing",
        "$raw_user_agent": "Mozilla/5.0 (Mac)", "$referrer": "https://news.example", "$device_type": "Desktop"})
    posthog_client.capture("$pageview", distinct_id="user-1", properties={"$current_url": "https://example.com/"})
    posthog_client.set(distinct_id="user-1", properties={"email": "ada@example.com"})
    posthog_client.alias(previous_id="anon-1", distinct_id="user-1")
    posthog_client.group_identify("company", "acme", {"employees": 12}, distinct_id="user-1")

    events = stored_events(server, serviceName="posthog")
    assert [e["name"] for e in events] == ["Signed Up", "$pageview", "$set", "$create_alias", "$groupidentify"]
    for event in events:
        assert event["payload"]["serviceName"] == "posthog"
        assert event["payload"]["metadata"]["library"] == "posthog-python"
        uuid.UUID(event["payload"]["eventId"])  # the SDK's uuid, kept for dedup
    named = _by_name(events)
    signed_up = named["Signed Up"]
    assert signed_up["userId"] == "user-1"
    assert signed_up["sessionId"] == "sess-1"
    assert signed_up["payload"]["userAgent"] == "Mozilla/5.0 (Mac)"
    assert signed_up["payload"]["referrer"] == "https://news.example"
    assert signed_up["payload"]["deviceType"] == "Desktop"
    assert signed_up["payload"]["metadata"]["url"] == "https://example.com/pricing"
    assert signed_up["payload"]["metadata"]["properties"]["plan"] == "pro"
    assert named["$set"]["payload"]["metadata"]["$set"] == {"email": "ada@example.com"}
    assert named["$create_alias"]["userId"] == "anon-1"
    assert named["$create_alias"]["payload"]["metadata"]["properties"]["alias"] == "user-1"
    assert named["$groupidentify"]["payload"]["metadata"]["properties"]["$group_key"] == "acme"


def test_batched_gzip_client_reports_no_error_and_everything_is_stored(server: ServerProcess) -> None:
    errors: list[Exception] = []
    client = Posthog("phc_key", host=server.url, gzip=True, flush_at=10, on_error=lambda err, _batch: errors.append(err))
    for index in range(25):
        client.capture("Clicked", distinct_id=f"user-{index % 3}", properties={"index": index})
    client.shutdown()  # flushes every queued batch (each one answered) and stops the consumer

    assert errors == []
    events = stored_events(server, eventName="Clicked")
    assert sorted(e["payload"]["metadata"]["properties"]["index"] for e in events) == list(range(25))


def test_a_resent_uuid_is_stored_once(server: ServerProcess, posthog_client: Posthog, http: httpx.Client) -> None:
    event_id = str(uuid.uuid4())
    posthog_client.capture("Paid", distinct_id="user-1", uuid=event_id)
    posthog_client.capture("Paid", distinct_id="user-1", uuid=event_id)  # a retry after a lost answer

    [event] = stored_events(server, eventName="Paid")
    assert event["payload"]["eventId"] == event_id
    answer = http.post("/i/v0/e/", json={"event": "Paid", "distinct_id": "user-1", "uuid": event_id, "api_key": "k"})
    assert answer.status_code == 200
    assert answer.json()["status"] == 1
    assert answer.json()["duplicateCount"] == 1


def test_sent_at_and_offset_correct_the_client_clock(server: ServerProcess, http: httpx.Client) -> None:
    client_now = datetime.now(UTC) + timedelta(hours=1)  # the client's clock runs an hour ahead
    answer = http.post("/batch/", json={"api_key": "k", "sent_at": client_now.isoformat(), "batch": [
        {"event": "Skewed", "distinct_id": "u", "timestamp": (client_now - timedelta(minutes=10)).isoformat()},
        {"event": "Offset", "distinct_id": "u", "offset": 120_000},  # posthog-js: ms between the event and sending
    ]})
    assert answer.status_code == 200, answer.text
    named = _by_name(stored_events(server))
    assert named["Skewed"]["timestamp"] == named["Skewed"]["receivedAt"] - 600_000
    assert named["Offset"]["timestamp"] == named["Offset"]["receivedAt"] - 120_000
    assert abs(named["Skewed"]["receivedAt"] - time.time() * 1000) < 60_000


def test_posthog_js_encodings(either_edge: ServerProcess) -> None:
    server = either_edge
    http = httpx.Client(base_url=server.url, timeout=10, headers={"Origin": "https://shop.example"})
    preflight = http.options("/e/", headers={"Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 200
    assert "POST" in preflight.headers["access-control-allow-methods"]
    events = b'[{"event": "%s", "distinct_id": "js-user", "properties": {"token": "phc_k", "$session_id": "s"}}]'
    gzip_js = http.post("/e/?compression=gzip-js&ver=1.200.0&_=" + str(int(time.time() * 1000)),
                        content=gzip.compress(events % b"gzip-js"), headers={"Content-Type": "text/plain"})
    form = http.post("/e/", data={"data": base64.b64encode(events % b"base64-form").decode()})
    form_hint = http.post("/i/v0/e/", data={"data": base64.b64encode(events % b"base64-hint").decode(),
                                             "compression": "base64"})
    lz64 = http.post("/e/?compression=lz64", data={"data": LZ_BASE64})
    plain_base64 = http.post("/capture/", content=base64.b64encode(events % b"raw-base64"))
    for answer in (gzip_js, form, form_hint, lz64, plain_base64):
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == 1
        assert answer.headers["access-control-allow-origin"] in ("*", "https://shop.example")  # a browser may read it
    http.close()

    stored = _by_name(stored_events(server))
    assert set(stored) == {"gzip-js", "base64-form", "base64-hint", "$pageview", "raw-base64"}
    assert stored["gzip-js"]["sessionId"] == "s"
    assert "token" not in stored["gzip-js"]["payload"]["metadata"]["properties"]  # a credential, not data
    assert stored["$pageview"]["payload"]["metadata"]["url"] == "https://example.com/\u00fc\u20ac\U0001f600"


def test_keys_name_the_project(keyed_server: ServerProcess) -> None:
    unknown = Posthog("phc_not_a_pulse_key", host=keyed_server.url, sync_mode=True, debug=True)
    with pytest.raises(APIError) as refused:
        unknown.capture("Refused", distinct_id="user-1")
    assert refused.value.status == 401
    unknown.shutdown()

    client = Posthog(keyed_server.public_key, host=keyed_server.url, sync_mode=True, debug=True)
    client.capture("Keyed", distinct_id="user-1")
    client.shutdown()
    in_event = httpx.post(f"{keyed_server.url}/e/", timeout=10, json=[
        {"event": "Keyed", "distinct_id": "u2", "properties": {"token": keyed_server.public_key}}])
    assert in_event.status_code == 200, in_event.text

    keyless = httpx.post(f"{keyed_server.url}/batch/", json={"batch": [{"event": "e", "distinct_id": "u"}]}, timeout=10)
    assert keyless.status_code == 401
    assert "api_key" in keyless.json()["error"]["reason"]
    assert [e["userId"] for e in stored_events(keyed_server)] == ["user-1", "u2"]


def test_bad_input_is_refused_with_the_field_and_the_reason(server: ServerProcess, http: httpx.Client) -> None:
    malformed = http.post("/batch/", content=b'{"api_key": "k", "batch": [', headers={"Content-Type": "application/json"})
    assert malformed.status_code == 400
    assert malformed.json()["error"]["field"] == "$"

    nameless = http.post("/capture/", json={"api_key": "k", "distinct_id": "u"})
    assert nameless.status_code == 400
    assert nameless.json()["error"] == {"code": "invalid_request", "field": "$.event", "reason": "required field is missing"}

    bad_gzip = http.post("/e/?compression=gzip-js", content=b"{not gzip}")
    assert bad_gzip.status_code == 400
    assert bad_gzip.json()["error"]["field"] == "body"

    bad_lz = http.post("/e/?compression=lz64", data={"data": "AAAA"})
    assert bad_lz.status_code == 400
    assert "lz64" in bad_lz.json()["error"]["reason"]

    not_json_in_query = http.post("/e/?data=%E2%82%AC")  # GET-style data, on a POST without a body
    assert not_json_in_query.status_code == 400
    assert not_json_in_query.json()["error"]["field"] == "$"

    unknown_compression = http.post("/e/?compression=br", content=b"[]")
    assert unknown_compression.status_code == 415
    assert unknown_compression.json()["error"]["field"] == "compression"

    two_projects = http.post("/e/", json=[{"event": "a", "distinct_id": "u", "token": "one"},
                                          {"event": "b", "distinct_id": "u", "token": "two"}])
    assert two_projects.status_code == 400
    assert two_projects.json()["error"]["field"] == "$[1].token"

    partial = http.post("/batch/", json={"api_key": "k", "batch": [
        {"event": "Kept", "distinct_id": "u"}, {"event": "NoUser"}, {"distinct_id": "u"}, "junk"]})
    assert partial.status_code == 200
    assert partial.json()["storedCount"] == 1
    assert [(r["index"], r["field"]) for r in partial.json()["rejected"]] == [
        (1, "$.batch[1].distinct_id"), (2, "$.batch[2].event"), (3, "$.batch[3]")]
    assert [e["name"] for e in stored_events(server)] == ["Kept"]

    assert http.get("/e/").status_code == 405
