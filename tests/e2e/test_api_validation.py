"""Hostile and malformed input on every ingest route: always a 4xx naming the field, never a 500.

One server serves the whole module (each start costs about a second); tests that look at stored
events give their events a service name of their own and query by it.
"""

from __future__ import annotations

import gzip
import pathlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
import pytest

from tests.e2e.server_process import ServerProcess, serving

TRACK = "/api/events/track/page-view"
TRACK_BATCH = "/api/events/track/batch"
BEHAVIORAL = "/api/v1/behavioral/events"
BEHAVIORAL_BATCH = "/api/v1/behavioral/batch"
INGEST_ROUTES = (TRACK, TRACK_BATCH, BEHAVIORAL, BEHAVIORAL_BATCH)
MiB = 1024 * 1024
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serving(pathlib.Path(tmp_path_factory.mktemp("validation")) / "data") as proc:
        yield proc


@pytest.fixture
async def client(shared_server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=shared_server.url, timeout=30) as http:
        yield http


# -- helpers --------------------------------------------------------------------------------------


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def unique(prefix: str = "svc") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def assert_error(answer: httpx.Response, status: int, *, field: str | None = None,
                 code: str | None = None) -> dict[str, Any]:
    """A 4xx answer in Pulse's error shape: {"success": false, "error": {code, field, reason}, "message"}."""
    assert answer.status_code == status, f"{answer.status_code}: {answer.text[:500]}"
    assert answer.headers["content-type"].startswith("application/json"), answer.headers
    body = answer.json()
    assert body["success"] is False
    error = body["error"]
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["reason"], str) and error["reason"]
    assert isinstance(error["field"], str)
    assert isinstance(body["message"], str) and body["message"]
    if field is not None:
        assert error["field"] == field, error
    if code is not None:
        assert error["code"] == code, error
    return error


async def post_json(client: httpx.AsyncClient, route: str, body: Any, **headers: str) -> httpx.Response:
    return await client.post(route, content=msgspec.json.encode(body), headers={**JSON, **headers})


async def stored(client: httpx.AsyncClient, service: str) -> list[dict[str, Any]]:
    answer = await client.get("/api/events", params={"serviceName": service, "limit": 1000})
    assert answer.status_code == 200, answer.text
    return answer.json()["events"]


def track_item(service: str, name: str = "page-view", **payload: Any) -> dict[str, Any]:
    return {"eventName": name, "payload": {"serviceName": service, **payload}}


def behavioral(service: str, event_type: str = "click", **fields: Any) -> dict[str, Any]:
    return {"eventType": event_type, "sessionId": "session_1", "serviceName": service, **fields}


def batch_body(route: str, service: str, count: int) -> dict[str, Any]:
    if route == TRACK_BATCH:
        return {"events": [track_item(service) for _ in range(count)]}
    return {"events": [behavioral(service) for _ in range(count)]}


def valid_body(route: str, service: str) -> dict[str, Any]:
    if route == TRACK:
        return {"serviceName": service}
    if route == BEHAVIORAL:
        return behavioral(service)
    return batch_body(route, service, 1)


# -- malformed and mistyped JSON ------------------------------------------------------------------


async def test_malformed_json_is_400_naming_the_root(client: httpx.AsyncClient) -> None:
    for route in INGEST_ROUTES:
        answer = await client.post(route, content=b'{"serviceName": "x", ', headers=JSON)
        assert_error(answer, 400, field="$", code="malformed_json")


async def test_wrong_type_names_the_field(client: httpx.AsyncClient) -> None:
    service = unique()
    assert_error(await post_json(client, TRACK, {"serviceName": service, "statusCode": "abc"}), 400,
                 field="$.statusCode")
    assert_error(await post_json(client, BEHAVIORAL, behavioral(service, eventData="not an object")), 400,
                 field="$.eventData")
    # a batch whose only event is bad names the event's field under its index
    answer = await post_json(client, TRACK_BATCH, {"events": [track_item(service, statusCode="abc")]})
    assert_error(answer, 400, field="$.events[0].payload.statusCode")
    assert await stored(client, service) == []


async def test_missing_required_fields(client: httpx.AsyncClient) -> None:
    service = unique()
    assert_error(await post_json(client, BEHAVIORAL, {"sessionId": "session_1", "serviceName": service}), 400,
                 field="$.eventType")
    answer = await post_json(client, TRACK_BATCH, {"events": [{"payload": {"serviceName": service}}]})
    assert_error(answer, 400, field="$.events[0].eventName")
    answer = await post_json(client, BEHAVIORAL_BATCH, [{"serviceName": service}])
    assert_error(answer, 400, field="$.events[0].eventType")
    assert await stored(client, service) == []


async def test_invalid_utf8_is_400(client: httpx.AsyncClient) -> None:
    for route, body in [(TRACK, b'{"serviceName": "\xff\xfe"}'),
                        (BEHAVIORAL, b'{"eventType": "click", "sessionId": "\xc3\x28"}'),
                        (TRACK_BATCH, b'{"events": [{"eventName": "\xff"}]}')]:
        assert_error(await client.post(route, content=body, headers=JSON), 400)


async def test_hostile_bodies_are_4xx_never_5xx(client: httpx.AsyncClient) -> None:
    cases: list[tuple[str, bytes, str]] = [
        (TRACK, b"[]", "$"),
        (TRACK, b"null", "$"),
        (TRACK, b'"just a string"', "$"),
        (TRACK, b'{"metadata": "not an object"}', "$.metadata"),
        (TRACK, b'{"statusCode": 1e400}', "$.statusCode"),
        (TRACK, b'{"statusCode": true}', "$.statusCode"),
        (TRACK, b'{"responseTimeMs": -1}', "$.responseTimeMs"),
        (TRACK, b'{"responseTimeMs": NaN}', "$"),
        (TRACK, b'{"serviceName": "' + b"s" * 300 + b'"}', "$.serviceName"),
        (BEHAVIORAL, b"", "$"),
        (BEHAVIORAL, b'{"eventType": ""}', "$.eventType"),
        (BEHAVIORAL, b'{"eventType": 42}', "$.eventType"),
        (TRACK_BATCH, b'{"events": "many"}', "$.events"),
        (BEHAVIORAL_BATCH, b'{"events": {}}', "$.events"),
        (BEHAVIORAL_BATCH, b"[1, 2", "$"),
    ]
    for route, body, field in cases:
        answer = await client.post(route, content=body, headers=JSON)
        assert_error(answer, 400, field=field)


async def test_deeply_nested_json_is_400_not_500(client: httpx.AsyncClient) -> None:
    """A few kilobytes of nesting must not take the decoder down: a 400 like any other bad input."""
    depth = 1000
    nested = b'{"a":' * depth + b"1" + b"}" * depth
    service = unique()
    bodies = {
        TRACK: b'{"serviceName": "' + service.encode() + b'", "metadata": ' + nested + b"}",
        BEHAVIORAL: b'{"eventType": "click", "eventData": ' + nested + b"}",
        TRACK_BATCH: b'{"events": [{"eventName": "x", "payload": {"metadata": ' + nested + b"}}]}",
        BEHAVIORAL_BATCH: b'[{"eventType": "click", "eventData": ' + nested + b"}]",
    }
    for route, body in bodies.items():
        answer = await client.post(route, content=body, headers=JSON)
        assert answer.status_code == 400, f"{route}: {answer.status_code} {answer.text[:200]}"
        assert_error(answer, 400)


# -- size limits ----------------------------------------------------------------------------------


# httpx's request-body iterator is left unfinished when the server answers 413 before reading it all
EARLY_ANSWER = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


async def post_once(url: str, route: str, content: Any, headers: dict[str, str]) -> httpx.Response:
    """POST on a connection of its own (the server may close it after answering early)."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as once:
        return await once.post(route, content=content, headers=headers)


@EARLY_ANSWER
async def test_body_over_5_mib_is_413(client: httpx.AsyncClient, shared_server: ServerProcess) -> None:
    service = unique()
    padding = "a" * (5 * MiB)
    for route, body in [(TRACK, {"serviceName": service, "metadata": {"pad": padding}}),
                        (BEHAVIORAL, behavioral(service, eventData={"pad": padding})),
                        (TRACK_BATCH, {"events": [track_item(service, metadata={"pad": padding})]})]:
        answer = await post_once(shared_server.url, route, msgspec.json.encode(body), JSON)
        assert_error(answer, 413, code="payload_too_large")

    # the same without a Content-Length (chunked upload): counted as it arrives
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"serviceName": "' + service.encode() + b'", "metadata": {"pad": "'
        for _ in range(6):
            yield b"a" * MiB
        yield b'"}}'

    assert_error(await post_once(shared_server.url, TRACK, chunks(), JSON), 413)
    assert await stored(client, service) == []


@EARLY_ANSWER
async def test_client_can_keep_using_its_connection_after_413(shared_server: ServerProcess) -> None:
    """An SDK that keeps one connection open sends its next event after a 413 without a failure:
    the server either reads the rest of the body or says "Connection: close" before closing.
    A connection closed without notice breaks the next request only when the close wins a race, so
    this tries many fresh connections; the first broken request fails the test."""
    service = unique()
    too_big = msgspec.json.encode({"serviceName": service, "metadata": {"pad": "a" * (6 * MiB)}})

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the limit is hit while reading
        for start in range(0, len(too_big), MiB):
            yield too_big[start:start + MiB]

    async with httpx.AsyncClient(base_url=shared_server.url, timeout=30) as http:
        assert_error(await http.post(TRACK, content=too_big, headers=JSON), 413)  # with a Content-Length
        answer = await post_json(http, TRACK, {"serviceName": service})
        assert answer.status_code == 200, answer.text

    for attempt in range(60):
        async with httpx.AsyncClient(base_url=shared_server.url, timeout=30) as http:
            assert_error(await http.post(TRACK, content=chunked(), headers=JSON), 413)
            try:
                answer = await post_json(http, TRACK, {"serviceName": service})
            except httpx.TransportError as exc:
                pytest.fail(f"attempt {attempt}: the request after a 413 on the same connection failed: {exc!r}")
            assert answer.status_code == 200, answer.text


async def test_body_just_under_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    service = unique()
    padding = "a" * (5 * MiB - 1000)
    answer = await post_json(client, TRACK, {"serviceName": service, "metadata": {"pad": padding}})
    assert answer.status_code == 200, answer.text[:300]
    [event] = await stored(client, service)
    assert len(event["payload"]["metadata"]["pad"]) == len(padding)


async def test_batch_of_1001_events_is_413_on_both_batch_routes(client: httpx.AsyncClient) -> None:
    service = unique()
    for route in (TRACK_BATCH, BEHAVIORAL_BATCH):
        assert_error(await post_json(client, route, batch_body(route, service, 1001)), 413)
    assert_error(await post_json(client, BEHAVIORAL_BATCH, [behavioral(service)] * 1001), 413)
    assert await stored(client, service) == []

    # 1000 is the seed's maxBatchSize: accepted in full
    answer = await post_json(client, TRACK_BATCH, batch_body(TRACK_BATCH, service, 1000))
    assert answer.status_code == 200, answer.text[:300]
    assert answer.json()["processedCount"] == 1000
    listing = (await client.get("/api/events", params={"serviceName": service, "limit": 1})).json()
    assert listing["filtered"] == 1000


# -- encodings and content types -----------------------------------------------------------------


async def test_gzip_bodies_are_accepted(client: httpx.AsyncClient) -> None:
    service = unique()
    for route in INGEST_ROUTES:
        body = gzip.compress(msgspec.json.encode(valid_body(route, service)))
        answer = await client.post(route, content=body, headers={**JSON, "Content-Encoding": "gzip"})
        assert answer.status_code == 200, f"{route}: {answer.text}"
    events = await stored(client, service)
    assert len(events) == 4
    assert all(e["serviceName"] == service for e in events)


async def test_gzip_bomb_is_413(client: httpx.AsyncClient) -> None:
    bomb = gzip.compress(b"0" * (30 * MiB), compresslevel=9)
    assert len(bomb) < MiB  # small on the wire
    for route in (TRACK, TRACK_BATCH):
        answer = await client.post(route, content=bomb, headers={**JSON, "Content-Encoding": "gzip"})
        assert_error(answer, 413)


async def test_corrupt_gzip_is_400(client: httpx.AsyncClient) -> None:
    answer = await client.post(TRACK, content=b"this is not gzip", headers={**JSON, "Content-Encoding": "gzip"})
    assert_error(answer, 400)


async def test_unsupported_content_type_is_415(client: httpx.AsyncClient) -> None:
    service = unique()
    xml = b"<event><serviceName>" + service.encode() + b"</serviceName></event>"
    for route in INGEST_ROUTES:
        assert_error(await client.post(route, content=xml, headers={"Content-Type": "application/xml"}), 415)
    assert await stored(client, service) == []


async def test_text_plain_json_from_send_beacon_is_accepted(client: httpx.AsyncClient) -> None:
    """navigator.sendBeacon(url, JSON.stringify(...)) sends text/plain;charset=UTF-8."""
    service = unique()
    beacon = {"Content-Type": "text/plain;charset=UTF-8"}
    answer = await client.post("/api/events/track/page-hidden",
                               content=msgspec.json.encode({"serviceName": service, "metadata": {"x": 1}}),
                               headers=beacon)
    assert answer.status_code == 200, answer.text
    answer = await client.post(BEHAVIORAL, content=msgspec.json.encode(behavioral(service, "exit_intent")),
                               headers=beacon)
    assert answer.status_code == 200, answer.text
    events = await stored(client, service)
    assert sorted(e["name"] for e in events) == ["exit_intent", "page-hidden"]
    hidden = next(e for e in events if e["name"] == "page-hidden")
    assert hidden["payload"] == {"serviceName": service, "metadata": {"x": 1}}


async def test_msgpack_bodies_are_accepted(client: httpx.AsyncClient) -> None:
    service = unique()
    msgpack = {"Content-Type": "application/msgpack"}
    single = {"serviceName": service, "statusCode": 200, "responseTimeMs": 12.5, "metadata": {"k": [1, 2]}}
    answer = await client.post("/api/events/track/mp-single", content=msgspec.msgpack.encode(single), headers=msgpack)
    assert answer.status_code == 200, answer.text
    batch = {"events": [track_item(service, "mp-batch", metadata={"i": 1})]}
    answer = await client.post(TRACK_BATCH, content=msgspec.msgpack.encode(batch), headers=msgpack)
    assert answer.status_code == 200, answer.text
    assert answer.json()["processedCount"] == 1
    answer = await client.post(BEHAVIORAL, content=msgspec.msgpack.encode(behavioral(service, "mp-behavioral")),
                               headers=msgpack)
    assert answer.status_code == 200, answer.text

    events = {e["name"]: e for e in await stored(client, service)}
    assert set(events) == {"mp-single", "mp-batch", "mp-behavioral"}
    assert events["mp-single"]["payload"] == single  # stored and answered as JSON
    assert events["mp-batch"]["payload"] == batch["events"][0]["payload"]
    # a msgpack type error names the field just like JSON
    bad = msgspec.msgpack.encode({"serviceName": service, "statusCode": "abc"})
    assert_error(await client.post(TRACK, content=bad, headers=msgpack), 400, field="$.statusCode")


# -- batches with bad events ----------------------------------------------------------------------


async def test_track_batch_stores_the_good_events_and_lists_the_rejected(client: httpx.AsyncClient) -> None:
    service = unique()
    body = {"batchId": "mixed", "events": [
        track_item(service, "good-0"),
        track_item(service, "bad-status", statusCode="abc"),
        {"payload": {"serviceName": service}},
        track_item(service, "x" * 201),
        track_item(service, "good-4", timestamp="not a time"),
        track_item(service, "good-5", metadata={"ok": True}),
    ]}
    answer = await post_json(client, TRACK_BATCH, body)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["processedCount"] == 2
    assert result["batchId"] == "mixed"
    rejected = {r["index"]: r for r in result["rejected"]}
    assert set(rejected) == {1, 2, 3, 4}
    assert rejected[1]["field"] == "$.events[1].payload.statusCode"
    assert rejected[2]["field"] == "$.events[2].eventName"
    assert rejected[3]["field"] == "$.events[3].eventName"
    assert rejected[4]["field"] == "$.events[4].payload.timestamp"
    assert all(isinstance(r["reason"], str) and r["reason"] for r in rejected.values())

    events = await stored(client, service)
    assert sorted(e["name"] for e in events) == ["good-0", "good-5"]


async def test_behavioral_batch_stores_the_good_events_and_lists_the_rejected(client: httpx.AsyncClient) -> None:
    service = unique()
    events = [behavioral(service, "scroll"), {"serviceName": service}, behavioral(service, "click", userId=7),
              behavioral(service, "exit_intent")]
    answer = await post_json(client, BEHAVIORAL_BATCH, {"events": events})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["processed"] == 2
    assert [(r["index"], r["field"]) for r in result["rejected"]] == [(1, "$.events[1].eventType"),
                                                                      (2, "$.events[2].userId")]
    assert [r["index"] for r in result["results"]] == [0, 3]
    assert sorted(e["name"] for e in await stored(client, service)) == ["exit_intent", "scroll"]


async def test_empty_batch_is_400(client: httpx.AsyncClient) -> None:
    assert_error(await post_json(client, TRACK_BATCH, {"events": []}), 400)
    assert_error(await post_json(client, BEHAVIORAL_BATCH, {"events": []}), 400)
    assert_error(await post_json(client, BEHAVIORAL_BATCH, []), 400)
    assert_error(await post_json(client, TRACK_BATCH, {"batchId": "no-events"}), 400, field="$.events")


async def test_event_name_length_limit(client: httpx.AsyncClient) -> None:
    service = unique()
    assert_error(await post_json(client, "/api/events/track/" + "n" * 201, {"serviceName": service}), 400)
    assert_error(await post_json(client, BEHAVIORAL, behavioral(service, "t" * 201)), 400, field="$.eventType")
    longest = "n" * 200
    answer = await post_json(client, f"/api/events/track/{longest}", {"serviceName": service})
    assert answer.status_code == 200, answer.text
    assert [e["name"] for e in await stored(client, service)] == [longest]


# -- idempotency ----------------------------------------------------------------------------------


async def test_same_event_id_twice_is_stored_once(client: httpx.AsyncClient) -> None:
    service = unique()
    body = {"serviceName": service, "eventId": unique("client-evt")}
    first = (await post_json(client, TRACK, body)).json()
    second_answer = await post_json(client, TRACK, body)
    assert second_answer.status_code == 200
    second = second_answer.json()
    assert first.get("duplicate", False) is False
    assert second["duplicate"] is True
    assert second["eventId"] == first["eventId"]
    assert second["success"] is True
    assert [e["id"] for e in await stored(client, service)] == [first["eventId"]]
    services = (await client.get("/api/events/services", params={"serviceName": service})).json()
    assert services["services"][0]["eventCount"] == 1  # analytics count it once too


async def test_same_message_id_twice_on_behavioral_is_stored_once(client: httpx.AsyncClient) -> None:
    service = unique()
    body = behavioral(service, messageId=unique("msg"))
    first = (await post_json(client, BEHAVIORAL, body)).json()
    second = (await post_json(client, BEHAVIORAL, body)).json()
    assert second["eventId"] == first["eventId"]
    assert second["duplicate"] is True
    assert first.get("duplicate", False) is False
    # and again inside a batch
    batch = (await post_json(client, BEHAVIORAL_BATCH, [body, behavioral(service, "scroll")])).json()
    assert batch["results"][0] == {"index": 0, "eventId": first["eventId"], "status": "duplicate", "processed": True}
    assert batch["results"][1]["status"] == "stored"
    assert sorted(e["name"] for e in await stored(client, service)) == ["click", "scroll"]


async def test_insert_id_sent_single_then_in_batch_is_stored_once(client: httpx.AsyncClient) -> None:
    service = unique()
    insert_id = unique("ins")
    first = (await post_json(client, "/api/events/track/signup", {"serviceName": service,
                                                                  "insertId": insert_id})).json()
    answer = await post_json(client, TRACK_BATCH, {"events": [
        track_item(service, "signup", insertId=insert_id),
        track_item(service, "login", insertId=unique("ins")),
    ]})
    result = answer.json()
    assert result["processedCount"] == 2
    assert result["results"][0] == {"index": 0, "eventId": first["eventId"], "status": "duplicate", "processed": True}
    assert result["results"][1]["status"] == "stored"
    assert sorted(e["name"] for e in await stored(client, service)) == ["login", "signup"]


async def test_same_id_twice_within_one_batch_is_stored_once(client: httpx.AsyncClient) -> None:
    service = unique()
    event_id = unique("dup")
    answer = await post_json(client, TRACK_BATCH, {"events": [
        track_item(service, "retry", eventId=event_id, metadata={"attempt": 1}),
        track_item(service, "retry", eventId=event_id, metadata={"attempt": 2}),
    ]})
    result = answer.json()
    assert result["processedCount"] == 2
    first, second = result["results"]
    assert first["status"] == "stored"
    assert second == {"index": 1, "eventId": first["eventId"], "status": "duplicate", "processed": True}
    [event] = await stored(client, service)
    assert event["id"] == first["eventId"]
    assert event["payload"]["metadata"] == {"attempt": 1}  # the first one wins

    same = unique("dup")
    answer = await post_json(client, BEHAVIORAL_BATCH, [behavioral(service, "b", messageId=same),
                                                        behavioral(service, "b", messageId=same)])
    statuses = [r["status"] for r in answer.json()["results"]]
    assert statuses == ["stored", "duplicate"]
    assert len(await stored(client, service)) == 2


# -- timestamps -----------------------------------------------------------------------------------


async def test_clock_skew_is_corrected_with_sent_at(client: httpx.AsyncClient) -> None:
    """The client's clock is a day behind. It stamped the event 5 s before sending it: the stored time
    is receivedAt - 5 s, where receivedAt lies within this request's round trip."""
    service = unique()
    client_clock = now_ms() - 86_400_000
    body = {"serviceName": service, "timestamp": client_clock - 5000, "sentAt": client_clock}
    before = now_ms()
    answer = await post_json(client, TRACK, body)
    after = now_ms()
    assert answer.status_code == 200, answer.text
    [event] = await stored(client, service)
    assert before - 5000 - 1 <= event["timestamp"] <= after - 5000 + 1

    # the client's clock an hour ahead, event 2 s before sending: not clamped, corrected
    service = unique()
    client_clock = now_ms() + 3_600_000
    before = now_ms()
    answer = await post_json(client, BEHAVIORAL, behavioral(service, timestamp=client_clock - 2000,
                                                            sentAt=client_clock))
    after = now_ms()
    assert answer.status_code == 200, answer.text
    [event] = await stored(client, service)
    assert before - 2000 - 1 <= event["timestamp"] <= after - 2000 + 1


async def test_batch_sent_at_corrects_every_event(client: httpx.AsyncClient) -> None:
    service = unique()
    client_clock = now_ms() - 7 * 86_400_000
    body = {"sentAt": client_clock, "events": [track_item(service, f"e{k}", timestamp=client_clock - k * 1000)
                                               for k in range(1, 4)]}
    before = now_ms()
    answer = await post_json(client, TRACK_BATCH, body)
    after = now_ms()
    assert answer.status_code == 200, answer.text
    for event in await stored(client, service):
        k = int(event["name"][1:])
        assert before - k * 1000 - 1 <= event["timestamp"] <= after - k * 1000 + 1, event


async def test_far_future_timestamp_is_clamped_to_receive_time(client: httpx.AsyncClient) -> None:
    service = unique()
    before = now_ms()
    answer = await post_json(client, TRACK, {"serviceName": service, "timestamp": now_ms() + 86_400_000})
    after = now_ms()
    assert answer.status_code == 200, answer.text
    [event] = await stored(client, service)
    assert before - 1 <= event["timestamp"] <= after + 1


async def test_iso_8601_timestamps_are_accepted(client: httpx.AsyncClient) -> None:
    service = unique()
    cases = {
        "iso-z": ("2025-08-27T10:30:45.123Z", datetime(2025, 8, 27, 10, 30, 45, 123000, UTC)),
        "iso-offset": ("2025-08-27T12:30:45.123+02:00", datetime(2025, 8, 27, 10, 30, 45, 123000, UTC)),
        "iso-seconds": ("2025-08-27T10:30:45Z", datetime(2025, 8, 27, 10, 30, 45, tzinfo=UTC)),
    }
    for name, (text, _) in cases.items():
        answer = await post_json(client, f"/api/events/track/{name}", {"serviceName": service, "timestamp": text})
        assert answer.status_code == 200, answer.text
    answer = await post_json(client, BEHAVIORAL, behavioral(service, "iso-behavioral",
                                                            timestamp="2025-08-27T10:30:45.123Z"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["timestamp"] == 1756290645123
    events = {e["name"]: e["timestamp"] for e in await stored(client, service)}
    for name, (_, expected) in cases.items():
        assert events[name] == round(expected.timestamp() * 1000), name
    assert events["iso-behavioral"] == 1756290645123


async def test_non_time_timestamp_is_400(client: httpx.AsyncClient) -> None:
    service = unique()
    assert_error(await post_json(client, TRACK, {"serviceName": service, "timestamp": "yesterday"}), 400,
                 field="$.timestamp")
    assert_error(await post_json(client, BEHAVIORAL, behavioral(service, timestamp="soon")), 400,
                 field="$.timestamp")
    assert_error(await post_json(client, TRACK, {"serviceName": service, "timestamp": {"ms": 1}}), 400,
                 field="$.timestamp")
    assert_error(await post_json(client, TRACK, {"serviceName": service, "timestamp": 1, "sentAt": "later"}), 400,
                 field="$.sentAt")
    assert await stored(client, service) == []


# -- routing --------------------------------------------------------------------------------------


async def test_unknown_route_is_404_json(client: httpx.AsyncClient) -> None:
    for method, path in [("GET", "/api/nope"), ("POST", "/api/v1/behavioral/nope"), ("GET", "/api/events/nope")]:
        answer = await client.request(method, path)
        assert answer.status_code == 404, f"{method} {path}"
        assert answer.headers["content-type"].startswith("application/json")
        assert answer.json()["success"] is False


async def test_wrong_method_is_405_json(client: httpx.AsyncClient) -> None:
    for method, path in [("DELETE", "/api/events"), ("POST", "/api/events/statistics"),
                         ("GET", BEHAVIORAL), ("GET", TRACK_BATCH), ("PUT", TRACK)]:
        answer = await client.request(method, path)
        assert answer.status_code == 405, f"{method} {path}: {answer.status_code} {answer.text}"
        assert answer.headers["content-type"].startswith("application/json")
        assert answer.json()["success"] is False
