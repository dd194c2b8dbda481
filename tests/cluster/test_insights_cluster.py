"""Insights in a cluster: journeys completed on any node reach every node's model, so every node
answers the same predictions and live insights for a session, whichever node is asked."""

from __future__ import annotations

from typing import Any

import httpx
import trio

from tests.cluster.harness import Cluster
from tests.e2e.test_insights import BASE, HOUR, journey

STEP_S = 20


async def test_every_node_answers_from_the_same_model(cluster: Cluster) -> None:
    clients = [httpx.AsyncClient(base_url=node.url, timeout=10) for node in cluster.nodes]
    try:
        # the training journeys arrive spread over the nodes: each node completes its own share
        for i in range(60):
            answer = await clients[i % 3].post("/api/v1/behavioral/batch",
                                               json={"events": journey(f"c{i}", BASE + i * HOUR, buyer=i % 2 == 0)})
            assert answer.status_code == 200, answer.text
        with trio.fail_after(STEP_S):
            while True:
                status = [(await c.get("/api/v1/behavioral/models")).json() for c in clients]
                if all(s["journeys"] == 60 and not s["pending"] for s in status):
                    break
                await trio.sleep(0.2)
        assert len({(s["types"], tuple(s["actions"])) for s in status}) == 1
        for e in journey("probe", BASE + 100 * HOUR, buyer=True)[:3]:
            assert (await clients[0].post("/api/v1/behavioral/events", json=e)).status_code == 200
        params = {"sessionId": "probe", "includePredictions": "true"}
        answers: list[dict[str, Any]] = [(await c.get("/api/v1/behavioral/patterns", params=params)).json() for c in clients]
        assert answers[0]["predictions"]["nextAction"]["action"] == "view_cart"
        assert answers[1] == answers[0] and answers[2] == answers[0]
        realtime = [(await c.get("/api/v1/behavioral/analytics/realtime", params={"sessionId": "probe"})).json()
                    for c in clients]
        assert realtime[1]["metrics"] == realtime[0]["metrics"] == realtime[2]["metrics"]
    finally:
        for c in clients:
            await c.aclose()
