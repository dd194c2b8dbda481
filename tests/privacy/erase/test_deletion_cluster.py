"""Deletion across a two-node cluster (PostgreSQL + Redis): data ingested through node 1 and
deleted through node 0 is unreadable on both nodes afterwards, live actor state included, and the
project's Redis resume stream no longer carries the user."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator
from typing import Any

import coredis
import httpx
import msgspec
import pytest

from actors.fanout import StreamMessage
from tests.cluster.harness import Cluster, formed_cluster
from tests.services.postgres import PostgresServer, postgres_dsn, postgres_server  # noqa: F401
from tests.services.redis import RedisServer, redis_server  # noqa: F401


@pytest.fixture
async def two_nodes(
    tmp_path: pathlib.Path,
    postgres_server: PostgresServer,  # noqa: F811
    postgres_dsn: str,  # noqa: F811
    redis_server: RedisServer,  # noqa: F811
) -> AsyncIterator[Cluster]:
    async with formed_cluster(tmp_path, postgres_dsn, redis_server.url, size=2) as nodes:
        yield nodes


def behavioral(user: str | None, session: str, i: int) -> dict[str, Any]:
    event: dict[str, Any] = {"eventType": "page_view", "timestamp": 1_700_000_000_000 + i * 1000,
                             "sessionId": session, "eventData": {"url": f"/p{i}"}}
    if user is not None:
        event["userId"] = user
    return event


async def stream_messages(redis_url: str) -> list[StreamMessage]:
    client: coredis.Redis[bytes] = coredis.Redis.from_url(redis_url, decode_responses=False)
    decode = msgspec.msgpack.Decoder(list[StreamMessage]).decode
    messages: list[StreamMessage] = []
    async with client:
        async for key in client.scan_iter(match=b"*stream:*"):
            for entry in await client.xrange(key):
                messages += decode(entry.field_values[b"p"])
    return messages


async def test_data_ingested_on_one_node_and_deleted_on_the_other_is_gone_everywhere(
    two_nodes: Cluster, redis_server: RedisServer  # noqa: F811
) -> None:
    clients = [httpx.AsyncClient(base_url=node.url, timeout=30) for node in two_nodes.nodes]
    try:
        events = [behavioral("cu1", f"cs{i % 3}", i) for i in range(9)] + [behavioral(None, "cs0", 20)]
        events += [behavioral("cu2", "cs9", 30 + i) for i in range(4)]
        assert (await clients[1].post("/api/v1/behavioral/batch", json={"events": events})).status_code == 200
        for c in clients:  # the live state is there, whichever node owns it
            assert (await c.get("/api/v1/behavioral/users/cu1")).json()["eventCount"] == 9
            assert (await c.get("/api/v1/behavioral/sessions/cs0")).json()["eventCount"] == 4
        assert any(m.user_id == "cu1" for m in await stream_messages(redis_server.url))

        answer = await clients[0].delete("/api/v1/behavioral/data/cu1")
        assert answer.status_code == 200, answer.text
        assert answer.json()["dataRemoved"] == {"events": 10, "sessions": 3, "profiles": 1}

        for c in clients:
            assert (await c.get("/api/v1/behavioral/users/cu1")).status_code == 404
            for session in ("cs0", "cs1", "cs2"):
                assert (await c.get(f"/api/v1/behavioral/sessions/{session}")).status_code == 404
            listing = (await c.get("/api/events", params={"userId": "cu1"})).json()
            assert listing["filtered"] == 0
            assert (await c.get("/api/v1/behavioral/users/cu2")).json()["eventCount"] == 4
        left = await stream_messages(redis_server.url)
        assert not any(m.user_id == "cu1" or m.session_id in ("cs0", "cs1", "cs2") for m in left)
        assert any(m.user_id == "cu2" for m in left) or not left  # cu2's entries stay unless shared with cu1
        performance = (await clients[0].get("/api/v1/behavioral/monitoring/performance")).json()
        assert performance["deletions"]["requests"] == 1 and performance["deletions"]["eventsRemoved"] == 10
    finally:
        for c in clients:
            await c.aclose()
