"""Segment's official Python SDK (segment-analytics-python), unchanged, against a real Pulse process.

Each call type arrives as the documented Pulse event (docs/compat.md), the SDK reports success,
resends are stored once, and the raw protocol details the SDK does not exercise (sentAt skew
correction, keys in the body, malformed bodies) are checked over plain HTTP.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from segment.analytics import Client
from segment.analytics.request import APIError

from tests.compat.conftest import stored_events
from tests.e2e.server_process import ServerProcess


def _basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def _by_name(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {event["name"]: event for event in events}


def test_every_call_type_becomes_a_pulse_event(server: ServerProcess) -> None:
    client = Client("any-write-key", host=server.url, sync_mode=True)  # open loopback: any key is the default project
    at = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    client.identify("user-1", {"email": "ada@example.com", "plan": "pro"}, timestamp=at)
    client.track("user-1", "Order Completed", {"revenue": 42.5}, context={"userAgent": "Mozilla/5.0 (X11)",
                                                                          "sessionId": "sess-9"})
    client.page("user-1", "Docs", "Quickstart", {"url": "https://example.com/docs", "referrer": "https://google.com"})
    client.screen("user-1", "App", "Home", {"tab": 2})
    client.group("user-1", "org-7", {"name": "Acme"})
    client.alias("anon-123", "user-1")
    client.track(anonymous_id="anon-5", event="Anonymous Visit")

    events = stored_events(server, serviceName="segment")
    assert [e["name"] for e in events] == [
        "identify", "Order Completed", "page", "screen", "group", "alias", "Anonymous Visit"]
    named = _by_name(events)
    for event in events[:-1]:
        assert event["userId"] == "user-1"
        assert event["payload"]["serviceName"] == "segment"
        assert event["payload"]["metadata"]["context"]["library"]["name"] == "analytics-python"
        uuid.UUID(event["payload"]["messageId"])  # the SDK's messageId, kept for dedup
    assert named["Anonymous Visit"]["userId"] == "anon-5"
    assert named["Anonymous Visit"]["payload"]["metadata"]["anonymousId"] == "anon-5"

    identify = named["identify"]
    assert identify["payload"]["metadata"]["traits"] == {"email": "ada@example.com", "plan": "pro"}
    # the client's time, corrected with its sentAt (same clock here: the correction is the request's transit)
    assert abs(identify["timestamp"] - at.timestamp() * 1000) < 60_000

    track = named["Order Completed"]
    assert track["payload"]["metadata"]["properties"] == {"revenue": 42.5}
    assert track["payload"]["userAgent"] == "Mozilla/5.0 (X11)"
    assert track["sessionId"] == "sess-9"

    page = named["page"]
    assert page["payload"]["metadata"]["name"] == "Quickstart"
    assert page["payload"]["metadata"]["category"] == "Docs"
    assert page["payload"]["metadata"]["url"] == "https://example.com/docs"
    assert page["payload"]["referrer"] == "https://google.com"

    assert named["screen"]["payload"]["metadata"]["properties"] == {"tab": 2}
    assert named["group"]["payload"]["metadata"]["groupId"] == "org-7"
    assert named["group"]["payload"]["metadata"]["traits"] == {"name": "Acme"}
    assert named["alias"]["payload"]["metadata"]["previousId"] == "anon-123"


def test_batched_gzip_client_reports_no_error_and_everything_is_stored(server: ServerProcess) -> None:
    errors: list[Exception] = []
    client = Client("key", host=server.url, gzip=True, upload_size=10, on_error=lambda err, _batch: errors.append(err))
    for index in range(25):
        client.track(f"user-{index % 3}", "Clicked", {"index": index})
    client.shutdown()  # flushes the queue (each upload answered) and stops the consumer thread

    assert errors == []
    events = stored_events(server, eventName="Clicked")
    assert sorted(e["payload"]["metadata"]["properties"]["index"] for e in events) == list(range(25))


def test_a_resent_message_id_is_stored_once(server: ServerProcess, http: httpx.Client) -> None:
    client = Client("key", host=server.url, sync_mode=True)
    client.track("user-1", "Paid", {"amount": 10}, message_id="msg-resent-1")
    client.track("user-1", "Paid", {"amount": 10}, message_id="msg-resent-1")  # a retry after a lost answer

    events = stored_events(server, eventName="Paid")
    assert len(events) == 1
    assert events[0]["payload"]["messageId"] == "msg-resent-1"
    answer = http.post("/v1/track", json={"userId": "user-1", "event": "Paid", "messageId": "msg-resent-1"})
    assert answer.status_code == 200
    assert answer.json() == {"success": True, "storedCount": 0, "duplicateCount": 1, "rejectedCount": 0,
                             "rejected": [], "processed": True}


def test_sent_at_corrects_the_client_clock(server: ServerProcess, http: httpx.Client) -> None:
    client_now = datetime.now(UTC) + timedelta(hours=1)  # the client's clock runs an hour ahead
    happened = client_now - timedelta(minutes=10)
    before = time.time() * 1000
    answer = http.post("/v1/batch", json={
        "batch": [{"type": "track", "event": "Skewed", "userId": "u", "timestamp": happened.isoformat()}],
        "sentAt": client_now.isoformat(),
    })
    after = time.time() * 1000
    assert answer.status_code == 200, answer.text

    [event] = stored_events(server, eventName="Skewed")
    assert event["timestamp"] == event["receivedAt"] - 600_000  # ten minutes before it reached the server
    assert before - 600_000 - 1000 <= event["timestamp"] <= after - 600_000 + 1000


def test_gzip_single_call_with_the_key_in_the_body(either_edge: ServerProcess) -> None:
    server = either_edge
    body = gzip.compress(b'{"writeKey": "k", "userId": "u", "event": "Zipped", "properties": {"n": 1}}')
    answer = httpx.post(f"{server.url}/v1/track", content=body, timeout=10,
                        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["success"] is True
    [event] = stored_events(server, eventName="Zipped")
    assert event["payload"]["metadata"]["properties"] == {"n": 1}


def test_keys_name_the_project(keyed_server: ServerProcess) -> None:
    unknown = Client("wk_not_a_pulse_key", host=keyed_server.url, sync_mode=True)
    with pytest.raises(APIError) as refused:
        unknown.track("user-1", "Refused")
    assert refused.value.status == 401

    client = Client(keyed_server.public_key, host=keyed_server.url, sync_mode=True)  # Basic auth user
    client.track("user-1", "Keyed")
    body_key = httpx.post(f"{keyed_server.url}/v1/batch", timeout=10, json={
        "writeKey": keyed_server.public_key, "batch": [{"type": "track", "userId": "u2", "event": "Keyed"}]})
    assert body_key.status_code == 200, body_key.text
    in_messages = httpx.post(f"{keyed_server.url}/v1/b", timeout=10, headers={"Content-Type": "text/plain"},
                             content=json.dumps({"batch": [  # analytics.js: the key in each message
                                 {"type": "page", "userId": "u3", "writeKey": keyed_server.public_key}]}))
    assert in_messages.status_code == 200, in_messages.text

    keyless = httpx.post(f"{keyed_server.url}/v1/track", json={"userId": "u", "event": "Keyless"}, timeout=10)
    assert keyless.status_code == 401
    assert "writeKey" in keyless.json()["error"]["reason"]
    assert [e["userId"] for e in stored_events(keyed_server)] == ["user-1", "u2", "u3"]


def test_bad_input_is_refused_with_the_field_and_the_reason(server: ServerProcess, http: httpx.Client) -> None:
    malformed = http.post("/v1/batch", content=b'{"batch": [', headers={"Content-Type": "application/json"})
    assert malformed.status_code == 400
    assert malformed.json()["error"]["field"] == "$"
    assert "malformed json" in malformed.json()["error"]["reason"]

    nameless = http.post("/v1/track", json={"userId": "u"})
    assert nameless.status_code == 400
    assert nameless.json()["error"] == {"code": "invalid_request", "field": "$.event", "reason": "required field is missing"}

    nobody = http.post("/v1/identify", json={"traits": {"a": 1}})
    assert nobody.status_code == 400
    assert nobody.json()["error"]["field"] == "$.userId"

    bad_gzip = http.post("/v1/batch", content=b"not gzip", headers={"Content-Encoding": "gzip"})
    assert bad_gzip.status_code == 400
    assert bad_gzip.json()["error"]["field"] == "body"

    partial = http.post("/v1/batch", json={"batch": [
        {"type": "track", "userId": "u", "event": "Kept"},
        {"type": "track", "userId": "u"},
        {"type": "launch", "userId": "u"},
        {"type": "page", "userId": "u", "timestamp": {"not": "a time"}},
    ]})
    assert partial.status_code == 200
    assert partial.json()["storedCount"] == 1
    assert [(r["index"], r["field"]) for r in partial.json()["rejected"]] == [
        (1, "$.batch[1].event"), (2, "$.batch[2].type"), (3, "$.batch[3].timestamp")]
    assert [e["name"] for e in stored_events(server)] == ["Kept"]
    # every rejection is counted: the 3 messages of the partial batch and the 4 refused requests
    assert re.search(r'pulse_ingested_events_total\{[^}]*outcome="rejected"\} 7\.0', http.get("/metrics").text)

    assert http.get("/v1/batch").status_code == 405
