"""GET /api/events/export against a real server: seed 004's MLFeatureSet as NDJSON, CSV and Parquet.

A small known journey checks every feature's value in the three formats; filters and 400s are the
ones of GET /api/events; a 20k-event export checks that the answer is streamed (many HTTP chunks,
one Parquet row group per chunk of rows) and that the per-session features stay right across the
store's pages.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import h11
import httpx
import pyarrow.parquet as pq
import pytest
import trio

from protocol.features import COLUMNS
from tests.e2e.server_process import ServerProcess

PARQUET_ROW_GROUP = 10_000  # server.export.PARQUET_ROW_GROUP_EVENTS


def ms(text: str) -> int:
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


# A Friday afternoon and the night after it (UTC), two sessions interleaved, sent out of order.
JOURNEY: list[dict[str, Any]] = [
    {"eventName": "checkout", "payload": {  # C
        "sessionId": "s-known", "userId": "u-1", "serviceName": "web", "timestamp": "2024-03-09T00:00:30.000Z",
        "metadata": {"userRole": "basic"}}},
    {"eventName": "page-view", "payload": {  # A
        "sessionId": "s-known", "userId": "u-1", "serviceName": "web", "userRole": "premium-user",
        "statusCode": 200, "responseTimeMs": 100, "correlationId": "c-1", "timestamp": "2024-03-08T16:59:00.000Z"}},
    {"eventName": "api-call", "payload": {  # B
        "sessionId": "s-known", "userId": "u-1", "serviceName": "api", "statusCode": 503, "responseTimeMs": 300,
        "correlationId": "c-1", "timestamp": ms("2024-03-08T16:59:30.250Z")}},
    {"eventName": "page-view", "payload": {  # X
        "sessionId": "s-other", "userId": "u-2", "serviceName": "web", "statusCode": 404, "responseTimeMs": 50,
        "timestamp": "2024-03-08T16:59:10.000Z"}},
]  # fmt: skip

_KEYS = [
    "timestamp", "user_id", "session_id", "correlation_id", "event_name", "service_name", "user_role",
    "hour_of_day", "day_of_week", "is_weekend", "is_business_hours", "status_code", "is_error", "response_time_ms",
    "event_sequence_position", "events_per_session", "time_since_last_event", "session_duration",
    "correlation_chain_length", "event_frequency", "request_volume", "avg_response_time", "error_count_last_hour",
    "error_rate", "success_rate",
]  # fmt: skip
_ROWS = [  # oldest first: A, X, B, C
    ["2024-03-08T16:59:00.000Z", "u-1", "s-known", "c-1", "page-view", "web", "premium-user",
     16, 4, False, True, 200, False, 100.0, 1, 1, None, 0.0, 1, 1, 1, 100.0, 0, 0.0, 100.0],
    ["2024-03-08T16:59:10.000Z", "u-2", "s-other", None, "page-view", "web", None,
     16, 4, False, True, 404, True, 50.0, 1, 1, None, 0.0, None, 2, 2, 75.0, 1, 50.0, 50.0],
    ["2024-03-08T16:59:30.250Z", "u-1", "s-known", "c-1", "api-call", "api", None,
     16, 4, False, True, 503, True, 300.0, 2, 2, 30.25, 30.25 / 60, 2, 1, 1, 300.0, 1, 100.0, 0.0],
    # 7 h later, Saturday: the trailing hour of "web" holds this event only (no status, no response time)
    ["2024-03-09T00:00:30.000Z", "u-1", "s-known", None, "checkout", "web", "basic",
     0, 5, True, False, None, False, None, 3, 3, 25_259.75, 421.5, None, 1, 1, None, 0, None, None],
]  # fmt: skip
EXPECTED = [dict(zip(_KEYS, row, strict=True)) for row in _ROWS]


async def post_batch(client: httpx.AsyncClient, events: list[dict[str, Any]]) -> list[str]:
    answer = await client.post("/api/events/track/batch", json={"events": events})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["storedCount"] == len(events), body
    return [r["eventId"] for r in body["results"]]


def from_csv(text: str) -> list[dict[str, Any]]:
    kinds = {c.name: c.kind for c in COLUMNS}
    convert = {
        "int": int,
        "float": float,
        "bool": {"true": True, "false": False}.__getitem__,
        "str": str,
        "timestamp": str,
    }
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    return [{k: None if v == "" else convert[kinds[k]](v) for k, v in row.items()} for row in rows]


def from_parquet(data: bytes) -> list[dict[str, Any]]:
    rows = pq.read_table(io.BytesIO(data)).to_pylist()
    for row in rows:
        stamp = row["timestamp"]
        assert stamp.utcoffset().total_seconds() == 0
        row["timestamp"] = stamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return rows


def from_ndjson(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


PARSERS = {
    "ndjson": ("application/x-ndjson", lambda r: from_ndjson(r.text)),
    "csv": ("text/csv", lambda r: from_csv(r.text)),
    "parquet": ("application/vnd.apache.parquet", lambda r: from_parquet(r.content)),
}


def assert_rows(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert list(g) == [c.name for c in COLUMNS]  # every column, in order, nulls included
        assert g["event_id"].startswith("evt_")
        projected = {k: g[k] for k in w}
        assert projected == {k: pytest.approx(v) if isinstance(v, float) else v for k, v in w.items()}
        for name in ("is_weekend", "is_business_hours", "is_error"):
            assert type(g[name]) is bool


async def test_known_journey_in_each_format(client: httpx.AsyncClient) -> None:
    ids = await post_batch(client, JOURNEY)
    for fmt, (media_type, parse) in PARSERS.items():
        answer = await client.get("/api/events/export", params={"format": fmt})
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].split(";")[0] == media_type
        disposition = answer.headers["content-disposition"]
        assert disposition.startswith("attachment; filename=") and disposition.rstrip('"').endswith(f".{fmt}")
        assert answer.headers.get("transfer-encoding") == "chunked" and "content-length" not in answer.headers
        rows = parse(answer)
        assert_rows(rows, EXPECTED)
        assert [r["event_id"] for r in rows] == [ids[1], ids[3], ids[2], ids[0]]


async def test_ndjson_is_the_default_and_an_empty_export_is_valid(client: httpx.AsyncClient) -> None:
    empty = await client.get("/api/events/export")
    assert empty.status_code == 200 and empty.text == ""
    assert empty.headers["content-type"] == "application/x-ndjson"
    header_only = from_csv((await client.get("/api/events/export?format=csv")).text)
    assert header_only == []
    table = pq.read_table(io.BytesIO((await client.get("/api/events/export?format=parquet")).content))
    assert table.num_rows == 0 and table.column_names == [c.name for c in COLUMNS]


FILTERS: list[tuple[dict[str, str], list[int]]] = [
    ({"sessionId": "s-other"}, [1]),
    ({"serviceName": "web"}, [0, 1, 3]),
    ({"from": "2024-03-08T16:59:05Z", "to": "2024-03-08T23:00:00Z"}, [1, 2]),
    ({"type": "VIEW"}, [0, 1]),
    ({"eventName": "checkout"}, [3]),
    ({"userId": "u-1", "correlationId": "c-1"}, [0, 2]),
    ({"from": "2024-03-09T00:00:00Z", "format": "csv"}, [3]),
]


async def test_filters_are_those_of_the_events_query(client: httpx.AsyncClient) -> None:
    await post_batch(client, JOURNEY)
    for query, rows in FILTERS:
        answer = await client.get("/api/events/export", params=query)
        assert answer.status_code == 200, answer.text
        got = from_csv(answer.text) if query.get("format") == "csv" else from_ndjson(answer.text)
        assert [r["timestamp"] for r in got] == [EXPECTED[i]["timestamp"] for i in rows], query
        listed = (await client.get("/api/events", params={k: v for k, v in query.items() if k != "format"})).json()
        assert sorted(e["id"] for e in listed["events"]) == sorted(r["event_id"] for r in got), query


async def test_running_features_count_only_what_the_filter_exports(client: httpx.AsyncClient) -> None:
    """Session features are computed over the exported events: B alone is its session's first."""
    await post_batch(client, JOURNEY)
    (row,) = from_ndjson((await client.get("/api/events/export?serviceName=api")).text)
    assert (row["event_sequence_position"], row["time_since_last_event"], row["correlation_chain_length"]) == (1, None, 1)


BAD_QUERIES: list[tuple[str, str | None]] = [
    ("format=xml", "format"),
    ("format=NDJSON", "format"),
    ("format=", None),  # empty: the default (ndjson)
    ("from=yesterday-ish", "from"),
    ("to=2024-13-45", "to"),
    ("serviceName=" + "x" * 201, "serviceName"),
    ("format=csv&sessionId=" + "s" * 201, "sessionId"),
]


async def test_bad_parameters_are_400_naming_them(client: httpx.AsyncClient) -> None:
    for query, field in BAD_QUERIES:
        answer = await client.get(f"/api/events/export?{query}")
        if field is None:
            assert answer.status_code == 200
            continue
        assert answer.status_code == 400, answer.text
        body = answer.json()
        assert body["success"] is False and body["error"]["field"] == field and body["error"]["reason"], query


async def test_export_needs_a_read_key(keyed_server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=keyed_server.url, timeout=10) as http:
        assert (await http.get("/api/events/export")).status_code == 401
        public = {"Authorization": f"Bearer {keyed_server.public_key}"}
        assert (await http.get("/api/events/export", headers=public)).status_code == 403
        secret = {"X-API-Key": keyed_server.secret_key}
        answer = await http.get("/api/events/export?format=parquet", headers=secret)
        assert answer.status_code == 200 and pq.read_table(io.BytesIO(answer.content)).num_rows == 0


async def raw_chunks(url: str) -> tuple[int, list[bytes]]:
    """GET ``url`` over a raw socket and return the status and the HTTP chunks as the server framed
    them (h11 marks where each chunk of a chunked body ends)."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    conn = h11.Connection(h11.CLIENT)
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    async with stream:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        request = h11.Request(method="GET", target=target, headers=[("Host", parts.netloc), ("Connection", "close")])
        await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
        status, chunks, current = 0, [], bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65_536))
            elif isinstance(event, h11.Response):
                status = event.status_code
                assert (b"transfer-encoding", b"chunked") in event.headers
            elif isinstance(event, h11.Data):
                current += event.data
                if event.chunk_end:
                    chunks.append(bytes(current))
                    current.clear()
            elif isinstance(event, h11.EndOfMessage):
                assert not current
                return status, chunks


async def post_ticks(client: httpx.AsyncClient, total: int, sessions: int, step_ms: int) -> None:
    start = ms("2024-01-01T00:00:00Z")
    for first in range(0, total, 1000):
        batch = [
            {"eventName": "tick", "payload": {"sessionId": f"s{i % sessions}", "serviceName": "svc",
                                               "statusCode": 500 if i % 10 == 0 else 200, "timestamp": start + i * step_ms}}
            for i in range(first, first + 1000)
        ]  # fmt: skip
        await post_batch(client, batch)


async def test_a_large_export_streams_in_chunks(server: ServerProcess, client: httpx.AsyncClient) -> None:
    """20k events over 400 sessions, 50 ms apart: the answer comes as one chunk per store page
    (1000 events), never as one body; per-session features stay right across page boundaries."""
    total, sessions, step_ms = 20_000, 400, 50
    await post_ticks(client, total, sessions, step_ms)

    with trio.fail_after(60):
        status, chunks = await raw_chunks(f"{server.url}/api/events/export?format=ndjson")
    assert status == 200
    assert len(chunks) >= total // 1000
    assert max(len(c) for c in chunks) < len(b"".join(chunks)) / 10  # no chunk carries a large share
    rows = [json.loads(line) for line in b"".join(chunks).splitlines()]
    assert len(rows) == total
    positions: dict[str, int] = {}
    for row in rows:
        position = positions[row["session_id"]] = positions.get(row["session_id"], 0) + 1
        assert row["event_sequence_position"] == position
        assert row["time_since_last_event"] == (None if position == 1 else sessions * step_ms / 1000)
    assert set(positions.values()) == {total // sessions}
    # the last row's trailing hour holds the whole export (1000 s of events)
    assert rows[-1]["request_volume"] == total and rows[-1]["error_rate"] == 10.0

    with trio.fail_after(60):
        status, chunks = await raw_chunks(f"{server.url}/api/events/export?format=parquet")
    assert status == 200
    parquet = pq.ParquetFile(io.BytesIO(b"".join(chunks)))
    assert parquet.metadata.num_rows == total
    assert parquet.metadata.num_row_groups == total // PARQUET_ROW_GROUP
    assert len(chunks) >= parquet.metadata.num_row_groups + 1  # magic + a chunk per row group + footer


async def open_stalled_export(server: ServerProcess) -> trio.SocketStream:
    """Start an export and stop reading after its first bytes: with a small receive window, the
    server's sends block and the export stays in flight until the socket closes."""
    parts = urlsplit(server.url)
    assert parts.hostname is not None and parts.port is not None
    sock = trio.socket.socket()
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)
    await sock.connect((parts.hostname, parts.port))
    stream = trio.SocketStream(sock)
    await stream.send_all(f"GET /api/events/export?format=ndjson HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head or head.endswith(b"\r\n\r\n"):  # the head and some of the body
        head += await stream.receive_some(4096)
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    return stream


async def test_concurrent_exports_are_capped_and_a_closed_one_frees_its_place(
    server: ServerProcess, client: httpx.AsyncClient
) -> None:
    await post_ticks(client, 20_000, 400, 50)  # ~12 MB of NDJSON: more than the socket buffers hold
    with trio.fail_after(30):
        stalled = [await open_stalled_export(server) for _ in range(4)]  # server.export.MAX_CONCURRENT_EXPORTS
        refused = await client.get("/api/events/export?format=csv")
        assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
        assert refused.json()["error"]["code"] == "too_many_exports"
        await stalled.pop().aclose()
        for _ in range(200):  # until the server notices the close and ends that export
            answer = await client.get("/api/events/export?format=csv&eventName=none")
            if answer.status_code != 503:
                break
            await trio.sleep(0.05)
        assert answer.status_code == 200 and answer.text.count("\n") == 1  # the header row
        for stream in stalled:
            await stream.aclose()
