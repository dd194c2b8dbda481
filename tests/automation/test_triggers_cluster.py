"""Triggers in a cluster (3 nodes over PostgreSQL and Redis): a trigger created on one node fires
for events sent to any node within the index's reload period, its notification reaches a
subscriber on another node, and a deletion reaches every node too."""

from __future__ import annotations

import json
import time

import httpx
import trio
from trio_websocket import open_websocket_url

from actors.automation.index import RELOAD_S
from tests.cluster.conftest import cluster  # noqa: F401 (fixture)
from tests.cluster.harness import Cluster
from tests.e2e.test_triggers import BASE, exit_event, seed_trigger
from tests.services.postgres import postgres_dsn, postgres_server  # noqa: F401 (fixtures)
from tests.services.redis import redis_server  # noqa: F401 (fixture)

DEADLINE_S = 20  # generous: the reload period is RELOAD_S


async def test_a_trigger_created_on_one_node_fires_on_the_others(cluster: Cluster) -> None:  # noqa: F811
    clients = [httpx.AsyncClient(base_url=node.url, timeout=10) for node in cluster.nodes]
    try:
        created = await clients[0].post(BASE, json=seed_trigger())
        assert created.status_code == 201
        trigger_id = created.json()["triggerId"]
        at = time.time_ns() // 1_000_000 - 60_000
        started = trio.current_time()
        async with open_websocket_url(f"{cluster.nodes[2].ws_url}/api/v1/behavioral/stream") as ws:
            await ws.send_message(json.dumps({"type": "connection", "sessionId": "x-fired",
                                              "subscriptions": ["conversion_triggers"]}))
            with trio.fail_after(DEADLINE_S):
                while json.loads(await ws.get_message())["type"] != "connection_ack":
                    pass
            # The session's owner node evaluates it; until that node has reloaded, the event does
            # not fire (and the session is only marked as having the event type: it may still fire).
            with trio.fail_after(DEADLINE_S):
                while True:
                    answer = (await clients[1].post("/api/v1/behavioral/events",
                                                    json=exit_event("x-fired", 40000, at))).json()
                    if answer["triggers"]:
                        break
                    await trio.sleep(0.2)
            assert trio.current_time() - started < RELOAD_S + 5
            assert answer["triggers"] == [{"triggerId": trigger_id, "executed": True, "result": "automation_triggered"}]
            with trio.fail_after(DEADLINE_S):
                while True:
                    message = json.loads(await ws.get_message())
                    if message["type"] == "trigger_notification":
                        break
            assert message["triggerId"] == trigger_id and message["sessionId"] == "x-fired"
        # once per session, whichever node the session's next event goes to
        for client in clients:
            again = (await client.post("/api/v1/behavioral/events", json=exit_event("x-fired", 40000, at + 1))).json()
            assert again["triggers"] == []
        assert (await clients[2].delete(f"{BASE}/{trigger_id}")).status_code == 200
        await trio.sleep(RELOAD_S + 1)
        for i, client in enumerate(clients):
            gone = (await client.post("/api/v1/behavioral/events", json=exit_event(f"y-{i}", 40000, at))).json()
            assert gone["triggers"] == []
    finally:
        for c in clients:
            await c.aclose()
