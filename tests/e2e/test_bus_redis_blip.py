"""A Redis blip shorter than the grace (``--redis-grace``) rebuilds no actor; a longer outage
rebuilds every actor from the log when Redis returns, as before. Two real nodes over a real
PostgreSQL and a real Redis that is stopped and restarted."""

from __future__ import annotations

import contextlib
import pathlib
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import trio

from actors.cluster import key_name
from storage.membership import owner_of
from tests.bus.conftest import redis_client
from tests.cluster.harness import Cluster, health, wait_for_component
from tests.e2e.server_process import ServerProcess
from tests.services import service_unavailable
from tests.services.postgres import postgres_dsn, postgres_server  # noqa: F401
from tests.services.redis import RedisServer, redis_server  # noqa: F401

STEP_S = 15


class GraceCluster(Cluster):
    """The cluster harness's nodes, with extra ``pulse serve`` options."""

    def __init__(self, tmp_path: pathlib.Path, dsn: str, redis_url: str, options: list[str], size: int) -> None:
        self.options = options
        super().__init__(tmp_path, dsn, redis_url, size=size)

    def _node(self, index: int) -> ServerProcess:
        node = super()._node(index)
        node.extra += self.options
        return node


@contextlib.asynccontextmanager
async def cluster_of(tmp_path: pathlib.Path, dsn: str, redis_url: str, *options: str) -> AsyncIterator[GraceCluster]:
    nodes = GraceCluster(tmp_path, dsn, redis_url, list(options), size=2)
    nodes.start()
    try:
        await nodes.wait_formed()
        yield nodes
    finally:
        codes = nodes.stop()
        print(nodes.output())  # shown by pytest when the test fails
        assert all(code == 0 for code in codes), nodes.output()


def event(session: str, n: int) -> dict[str, Any]:
    return {"eventType": "page_view", "timestamp": 1_700_000_000_000 + n * 1000, "sessionId": session,
            "userId": f"user-{session}", "deviceType": "desktop", "eventData": {"url": f"/p{n}"}}


async def track_sessions(http: httpx.AsyncClient, cluster: GraceCluster, n: int) -> list[str]:
    """Event ``n`` of eight sessions, half owned by each node, each sent to the node not owning it."""
    node = cluster.nodes[0]
    project = next(m.group(1) for line in node.output if (m := re.search(r"project:\s+\S+ \((prj_\w+)\)", line)))
    ids = [cluster.node_id(i) for i in range(2)]
    owned: dict[int, list[str]] = {0: [], 1: []}
    for session in (f"blip-{i}" for i in range(1000)):
        owner = ids.index(owner_of(key_name(("session", project, session)), ids))
        if len(owned[owner]) < 4:
            owned[owner].append(session)
    for owner, sessions in owned.items():
        for session in sessions:
            answer = await http.post(f"{cluster.nodes[1 - owner].url}/api/v1/behavioral/events", json=event(session, n))
            assert answer.status_code == 200, answer.text
            assert answer.json()["processed"] is True
    return owned[0] + owned[1]


async def live_actors(node: ServerProcess) -> int:
    async with httpx.AsyncClient(timeout=5) as http:
        return int((await http.get(f"{node.url}/api/v1/behavioral/monitoring/performance")).json()["actors"]["liveTotal"])


async def event_counts(http: httpx.AsyncClient, cluster: GraceCluster, sessions: list[str]) -> set[int]:
    return {
        (await http.get(f"{node.url}/api/v1/behavioral/sessions/{session}")).json()["eventCount"]
        for node in cluster.nodes
        for session in sessions
    }


async def test_a_redis_restart_shorter_than_the_grace_rebuilds_no_actor(
    tmp_path: pathlib.Path, postgres_dsn: str, redis_server: RedisServer  # noqa: F811
) -> None:
    if not redis_server.restartable:
        service_unavailable("needs a private redis server (PULSE_TEST_REDIS_URL cannot be restarted)")
    async with cluster_of(tmp_path, postgres_dsn, redis_server.url, "--redis-grace", "5") as cluster:
        async with httpx.AsyncClient(timeout=STEP_S) as http:
            sessions = await track_sessions(http, cluster, 0)
            await track_sessions(http, cluster, 1)
            actors = [await live_actors(node) for node in cluster.nodes]
            assert all(actors)

            async with redis_client(redis_server.url) as client:
                await client.save()  # a Redis with persistence: it comes back with the membership
            await trio.to_thread.run_sync(redis_server.stop)
            for node in cluster.nodes:
                await wait_for_component(node, "messageQueue", "degraded")
            await trio.to_thread.run_sync(redis_server.start)
            for node in cluster.nodes:
                await wait_for_component(node, "messageQueue", "healthy")

            for node, before in zip(cluster.nodes, actors, strict=True):
                details = (await health(node))["details"]
                assert details["redis"]["reconnects"] == 1  # the blip happened...
                assert await live_actors(node) == before  # ... and every actor is still there
                assert details["cluster"]["rebuilds"] == 0
                assert details["redis"]["outages_within_grace"] == 1
                assert details["cluster"]["alone"] is False
            await track_sessions(http, cluster, 2)  # owners answer from the actors they kept
            assert await event_counts(http, cluster, sessions) == {3}
            for node in cluster.nodes:
                assert (await health(node))["details"]["cluster"]["rebuilds"] == 0


async def test_an_outage_longer_than_the_grace_rebuilds_every_actor_from_the_log(
    tmp_path: pathlib.Path, postgres_dsn: str, redis_server: RedisServer  # noqa: F811
) -> None:
    if not redis_server.restartable:
        service_unavailable("needs a private redis server (PULSE_TEST_REDIS_URL cannot be restarted)")
    async with cluster_of(tmp_path, postgres_dsn, redis_server.url, "--redis-grace", "0.2") as cluster:
        async with httpx.AsyncClient(timeout=STEP_S) as http:
            sessions = await track_sessions(http, cluster, 0)
            await trio.to_thread.run_sync(redis_server.stop)
            with trio.fail_after(STEP_S):  # each node is alone once its grace is over
                for node in cluster.nodes:
                    while not (await health(node))["details"]["cluster"]["alone"]:  # noqa: ASYNC110
                        await trio.sleep(0.05)
            await trio.to_thread.run_sync(redis_server.start)
            await cluster.wait_formed()
            for node in cluster.nodes:
                await wait_for_component(node, "messageQueue", "healthy")
                details = (await health(node))["details"]
                assert details["cluster"]["rebuilds"] >= 1
                assert details["cluster"]["alone"] is False
            await track_sessions(http, cluster, 1)  # rebuilt from the log: nothing lost
            assert await event_counts(http, cluster, sessions) == {2}
