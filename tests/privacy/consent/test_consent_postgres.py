"""Consent on PostgreSQL: one server (recorded, enforced, and loaded again after a restart), and a
two-node cluster where a consent recorded on node 0 gates the events sent to node 1."""

from __future__ import annotations

import pathlib
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import trio

from tests.cluster.harness import Cluster, formed_cluster
from tests.e2e.server_process import ServerProcess, serving
from tests.privacy.consent.helpers import CONSENT, EVENTS, consent, event
from tests.services.postgres import PostgresServer, postgres_dsn, postgres_server  # noqa: F401 (fixtures)
from tests.services.redis import RedisServer, redis_server  # noqa: F401 (fixtures)

STEP_S = 10.0


async def test_consent_is_enforced_and_survives_a_restart_on_postgres(tmp_path: pathlib.Path, postgres_dsn: str) -> None:  # noqa: F811
    options = {"extra": ["--database-url", postgres_dsn]}
    with serving(tmp_path / "one", **options) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=STEP_S) as http:
            assert (await http.post(CONSENT, json=consent("u-pg", "denied"))).status_code == 201
            assert (await http.post(EVENTS, json=event("u-pg", "s-pg"))).json()["stored"] is False
            assert (await http.post(CONSENT, json=consent("u-pg2", analytics=True))).status_code == 201
    with serving(tmp_path / "two", **options) as again:  # a new process: the book is loaded from the store
        async with httpx.AsyncClient(base_url=again.url, timeout=STEP_S) as http:
            dropped = (await http.post(EVENTS, json=event("u-pg", "s-pg"))).json()
            assert dropped["stored"] is False and dropped["dropped"]["category"] == "analytics"
            assert (await http.post(EVENTS, json=event("u-pg2", "s-pg2"))).json()["eventId"] is not None
            view = (await http.get(f"{CONSENT}/u-pg2")).json()
            assert view["granularConsent"] == {"analytics": True, "marketing": False, "personalization": False,
                                               "advertising": False}


@pytest.fixture
async def pair(
    tmp_path: pathlib.Path,
    postgres_server: PostgresServer,  # noqa: F811
    postgres_dsn: str,  # noqa: F811
    redis_server: RedisServer,  # noqa: F811
) -> AsyncIterator[Cluster]:
    async with formed_cluster(tmp_path, postgres_dsn, redis_server.url, size=2) as nodes:
        yield nodes


async def test_a_consent_recorded_on_one_node_gates_the_events_sent_to_another(pair: Cluster) -> None:
    zero: ServerProcess = pair.nodes[0]
    one: ServerProcess = pair.nodes[1]
    async with httpx.AsyncClient(timeout=STEP_S) as http:
        assert (await http.post(f"{one.url}{EVENTS}", json=event("u-c", "s-c0"))).json()["eventId"] is not None
        recorded = time.monotonic()
        assert (await http.post(f"{zero.url}{CONSENT}", json=consent("u-c", "denied"))).status_code == 201
        attempt = 0
        with trio.fail_after(STEP_S):  # the other node reloads every 0.5 s
            while True:
                attempt += 1
                answer = (await http.post(f"{one.url}{EVENTS}", json=event("u-c", f"s-c{attempt}"))).json()
                if answer.get("stored") is False:
                    break
                await trio.sleep(0.05)
        print(f"node 1 applied node 0's consent after {time.monotonic() - recorded:.3f} s")
        assert answer["dropped"] == {"reason": "consent", "category": "analytics",
                                     "detail": "no analytics consent recorded for 'u-c'"}
        # and the grant comes back the same way
        assert (await http.post(f"{zero.url}{CONSENT}", json=consent("u-c"))).status_code == 201
        with trio.fail_after(STEP_S):
            while True:
                back = (await http.post(f"{one.url}{EVENTS}", json=event("u-c", "s-back"))).json()
                if back["eventId"] is not None:
                    break
                await trio.sleep(0.05)
