"""Cross-device identity across a three-node cluster (PostgreSQL + Redis): a link made on one node
reaches the user's stream on a second node for events ingested on a third (each node reloads the
links within about a second), and an unlink made on the first stops it there too."""

from __future__ import annotations

import time
from typing import Any

import httpx
import trio

from tests.cluster.harness import Cluster
from tests.e2e.sse_client import SSEClient

BASE = "/api/v1/behavioral/cross-device"
PROPAGATION_S = 15.0  # a deadline for the other nodes' reload, not a measure of it


def click(session: str, ts: int, marker: str, user: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"sessionId": session, "eventType": "click", "timestamp": ts, "eventData": {"marker": marker}}
    if user:
        body["userId"] = user
    return body


async def probe(sse: SSEClient, http: httpx.AsyncClient, url: str, round_no: int, at: int) -> set[str]:
    """Send one event of the anonymous laptop and then one of the user's phone to ``url``; the
    sessions the stream delivered up to the phone's event (the phone's is always delivered)."""
    events = [click("c-laptop", at + round_no, f"laptop-{round_no}"), click("c-phone", at + round_no, f"phone-{round_no}", "cy")]
    for event in events:
        assert (await http.post(f"{url}/api/v1/behavioral/events", json=event)).status_code == 200
    seen = set()
    with trio.fail_after(PROPAGATION_S):
        while True:
            _, message = await sse.next_of_type("behavioral_event")
            seen.add(message["sessionId"])
            if message["event"].get("marker") == f"phone-{round_no}":
                return seen


async def test_links_reach_every_node_and_so_do_unlinks(cluster: Cluster) -> None:
    at = int(time.time() * 1000) - 60_000
    linker, listener, ingester = (node.url for node in cluster.nodes)
    async with httpx.AsyncClient(timeout=10) as http:
        for event in (click("c-phone", at, "start", "cy"), click("c-laptop", at, "start")):
            assert (await http.post(f"{ingester}/api/v1/behavioral/events", json=event)).status_code == 200
        async with SSEClient(f"{listener}/api/v1/behavioral/stream?userId=cy&subscriptions=behavioral_events") as sse:
            assert sse.status == 200
            assert await probe(sse, http, ingester, 0, at) == {"c-phone"}  # not linked yet
            made = await http.post(f"{linker}{BASE}/link", json={"primarySessionId": "c-phone",
                                                                   "secondarySessionId": "c-laptop"})
            assert made.status_code == 201, made.text
            round_no = 1
            with trio.fail_after(PROPAGATION_S):
                while await probe(sse, http, ingester, round_no, at) != {"c-phone", "c-laptop"}:
                    round_no += 1
            sync = (await http.get(f"{listener}{BASE}/sync/cy")).json()  # any node answers the same
            assert {d["deviceId"] for d in sync["devices"]} == {"c-phone", "c-laptop"}

            undone = await http.delete(f"{linker}{BASE}/link/{made.json()['linkingId']}")
            assert undone.status_code == 200 and undone.json()["detachedSessions"] == ["c-laptop"]
            with trio.fail_after(PROPAGATION_S):
                while True:
                    round_no += 1
                    if await probe(sse, http, ingester, round_no, at) == {"c-phone"}:
                        break
