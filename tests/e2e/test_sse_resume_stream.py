"""SSE resume from the project's Redis stream, end to end (one node over a real Redis): what the
stream no longer holds, or cannot be read, is reported with a ``gap`` message, what it holds is
replayed, then the stream goes live. And the stream's retention is bounded in bytes
(``--stream-retention-bytes``), whatever the size of the requests."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator, Iterator

import coredis
import httpx
import pytest
import trio

from actors.fanout import parse_position, position_key
from tests.e2e.server_process import ServerProcess, serving
from tests.e2e.test_sse_resume_ids import ResumeClient, track
from tests.services import service_unavailable
from tests.services.redis import RedisServer, redis_server  # noqa: F401

STREAM = "/api/events/stream"
RETENTION_BYTES = 16 * 1024
PAD = "x" * 1000  # ~1 KB per event: one request's stream entry is a little more


@pytest.fixture
def node(tmp_path: pathlib.Path, redis_server: RedisServer) -> Iterator[ServerProcess]:  # noqa: F811
    """One Pulse node on SQLite, over a private Redis, keeping at most 16 KiB per project stream."""
    extra = ["--redis-url", redis_server.url, "--stream-retention-bytes", str(RETENTION_BYTES)]
    with serving(tmp_path / "data", extra=extra) as proc:
        yield proc


@pytest.fixture
async def client(node: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as http:
        yield http


async def stream_payloads(url: str) -> list[bytes]:
    """Every entry retained in the (only) project stream, read straight from Redis."""
    redis: coredis.Redis[bytes] = coredis.Redis.from_url(url, decode_responses=False)
    async with redis:
        keys = [key async for key in redis.scan_iter(match="pulse:stream:*")]
        assert len(keys) == 1, keys
        payloads = [entry.field_values[b"p"] for entry in await redis.xrange(keys[0])]
    assert all(isinstance(p, bytes) for p in payloads)
    return [p for p in payloads if isinstance(p, bytes)]


async def health(client: httpx.AsyncClient) -> dict:
    return (await client.get("/api/v1/behavioral/health")).json()


async def test_a_position_the_stream_no_longer_keeps_is_reported_then_the_rest_replayed(
    node: ServerProcess, client: httpx.AsyncClient, redis_server: RedisServer  # noqa: F811
) -> None:
    async with ResumeClient(node.url + STREAM) as sse:
        await track(client, "first", pad=PAD)
        last_seen, _ = await sse.next_event()
    assert parse_position(last_seen) is not None  # a cluster id: the message's stream position
    sent = [await track(client, "tick", n=n, pad=PAD) for n in range(60)]  # ~60 KB: most is trimmed

    retained = await stream_payloads(redis_server.url)
    assert sum(len(p) for p in retained) <= RETENTION_BYTES  # the byte bound holds
    assert 5 < len(retained) < 60

    async with ResumeClient(node.url + STREAM, {"Last-Event-ID": last_seen}) as sse:
        gap = await sse.next_named("gap")
        assert gap["type"] == "gap" and gap["reason"] == "retention"
        assert gap["from"] == last_seen
        assert "retention" in gap["message"]
        replayed = [await sse.next_event() for _ in retained]
        # exactly what the stream still holds: the newest events, in order, up to the last one sent
        assert [event["id"] for _, event in replayed] == sent[-len(retained):]
        assert replayed[0][0] == gap["to"]  # the gap ends where the replay starts
        keys = [position_key(event_id) for event_id, _ in replayed]
        assert keys == sorted(keys) and position_key(last_seen) < keys[0]
        live = await track(client, "live")
        live_id, event = await sse.next_event()
        assert event["id"] == live and position_key(live_id) > keys[-1]
    # a position the stream still holds resumes without a gap
    async with ResumeClient(node.url + STREAM, {"Last-Event-ID": replayed[-2][0]}) as sse:
        assert [await sse.next_event() for _ in range(2)] == [replayed[-1], (live_id, event)]


async def test_a_stream_that_cannot_be_read_is_reported_then_the_stream_goes_live(
    node: ServerProcess, client: httpx.AsyncClient, redis_server: RedisServer  # noqa: F811
) -> None:
    if not redis_server.restartable:
        service_unavailable("needs a private redis server (PULSE_TEST_REDIS_URL cannot be stopped)")
    async with ResumeClient(node.url + STREAM) as sse:
        await track(client, "first")
        last_seen, _ = await sse.next_event()
    redis_server.stop()
    with trio.fail_after(10):  # the node notices at once (its connections close); poll its health
        while (await health(client))["components"]["messageQueue"] != "degraded":  # noqa: ASYNC110
            await trio.sleep(0.05)
    async with ResumeClient(node.url + STREAM, {"Last-Event-ID": last_seen}) as sse:
        gap = await sse.next_named("gap")
        assert (gap["from"], gap["to"], gap["reason"]) == (last_seen, None, "unavailable")
        assert "could not be read" in gap["message"]
        live = await track(client, "while-redis-is-down")  # ingestion and local streaming go on
        assert (await sse.next_event())[1]["id"] == live
