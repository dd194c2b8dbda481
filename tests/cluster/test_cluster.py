"""Three real nodes over PostgreSQL and Redis behave as one server."""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import time
from typing import Any

import httpx
import trio

from actors.cluster import key_name
from storage.membership import owner_of
from tests.cluster.harness import Cluster, wait_for_component
from tests.e2e.server_process import ServerProcess
from tests.e2e.sse_client import SSEClient

STEP_S = 15
PHASE_EVENTS = 20  # acknowledgements each phase of a load test waits for (instead of a fixed time)


class Tally:
    """A count that load tasks raise and a test waits on: "N more happened" instead of a sleep."""

    def __init__(self) -> None:
        self.count = 0
        self._raised = trio.Event()

    def add(self) -> None:
        self.count += 1
        self._raised.set()
        self._raised = trio.Event()

    async def more(self, n: int) -> None:
        """Wait until the count has risen by ``n`` (at most STEP_S)."""
        target = self.count + n
        with trio.fail_after(STEP_S):
            while self.count < target:
                await self._raised.wait()


def page_view(session: str, url: str, ts: int, user: str = "u-1") -> dict[str, Any]:
    return {"eventType": "page_view", "timestamp": ts, "sessionId": session, "userId": user,
            "deviceType": "desktop", "eventData": {"url": url}}


def scroll(session: str, depth: float, ts: int, user: str = "u-1") -> dict[str, Any]:
    return {"eventType": "scroll", "timestamp": ts, "sessionId": session, "userId": user,
            "deviceType": "desktop", "eventData": {"scrollDepth": depth}}


def journey(session: str, n: int, start: int = 1_700_000_000_000) -> list[dict[str, Any]]:
    events = []
    for i in range(n):
        ts = start + i * 1_000
        events.append(page_view(session, f"/p{i % 7}", ts) if i % 3 == 0 else scroll(session, (i % 10) / 10, ts))
    return events


async def test_cross_node_streaming_and_resume_on_another_node(cluster: Cluster) -> None:
    a, b, c = cluster.nodes
    async with httpx.AsyncClient(timeout=STEP_S) as http:
        with trio.fail_after(STEP_S):
            async with SSEClient(f"{b.url}/api/events/stream") as sse:
                sent = await http.post(f"{a.url}/api/events/track/page-view", json={"serviceName": "web", "sessionId": "x1"})
                assert sent.status_code == 200
                last_id, first = await sse.next_of_type("event")
                assert first["data"]["id"] == sent.json()["eventId"]
                assert last_id is not None
        # while disconnected, two events arrive at a third node
        missed = []
        for name in ("click", "scroll"):
            missed.append((await http.post(f"{c.url}/api/events/track/{name}", json={"serviceName": "web"})).json()["eventId"])
        with trio.fail_after(STEP_S):
            async with SSEClient(f"{a.url}/api/events/stream", {"Last-Event-ID": last_id}) as sse:
                replayed = [(await sse.next_of_type("event"))[1]["data"]["id"] for _ in missed]
                assert replayed == missed
                live = await http.post(f"{b.url}/api/events/track/exit", json={})
                assert (await sse.next_of_type("event"))[1]["data"]["id"] == live.json()["eventId"]


async def test_behavioral_websocket_on_one_node_sees_events_of_another(cluster: Cluster) -> None:
    from trio_websocket import open_websocket_url

    a, b, _ = cluster.nodes
    async with httpx.AsyncClient(timeout=STEP_S) as http:
        with trio.fail_after(STEP_S):
            async with open_websocket_url(f"{b.ws_url}/api/v1/behavioral/stream") as ws:
                await ws.send_message(json.dumps({"type": "subscribe", "subscriptions": ["behavioral_events", "engagement_metrics"]}))
                sent = await http.post(f"{a.url}/api/v1/behavioral/events", json=page_view("ws-s", "/landing", 1_700_000_000_000))
                assert sent.status_code == 200
                kinds = set()
                while kinds != {"behavioral_event", "session_metrics"}:
                    message = json.loads(await ws.get_message())
                    if message.get("type") in ("behavioral_event", "session_metrics"):
                        assert message.get("sessionId", message.get("data", {}).get("sessionId", "ws-s")) == "ws-s"
                        kinds.add(message["type"])


async def test_a_session_spread_over_all_nodes_has_the_state_it_has_on_one_node(cluster: Cluster, tmp_path: pathlib.Path) -> None:
    events = journey("spread-1", 30)
    async with httpx.AsyncClient(timeout=STEP_S) as http:
        for i, event in enumerate(events):  # round-robin: every node commits some of the session
            node = cluster.nodes[i % 3]
            answer = await http.post(f"{node.url}/api/v1/behavioral/events", json=event)
            assert answer.status_code == 200 and answer.json()["processed"] is True, answer.text
        # and concurrently: a second session whose events arrive at all nodes at once
        concurrent = journey("spread-2", 30)

        async def post(i: int, event: dict[str, Any]) -> None:
            answer = await http.post(f"{cluster.nodes[i % 3].url}/api/v1/behavioral/events", json=event)
            assert answer.status_code == 200, answer.text

        async with trio.open_nursery() as nursery:
            for i, event in enumerate(concurrent):
                nursery.start_soon(post, i, event)
        views = {}
        for session in ("spread-1", "spread-2"):
            seen = [(await http.get(f"{node.url}/api/v1/behavioral/sessions/{session}")).json() for node in cluster.nodes]
            assert seen[0] == seen[1] == seen[2], seen
            views[session] = seen[0]
        users = [(await http.get(f"{node.url}/api/v1/behavioral/users/u-1")).json() for node in cluster.nodes]
        assert users[0] == users[1] == users[2]
        assert users[0]["eventCount"] == 60

    # the same events on a single node give the same state
    single = ServerProcess(tmp_path / "single").start()
    try:
        async with httpx.AsyncClient(base_url=single.url, timeout=STEP_S) as http:
            for event in events + concurrent:
                assert (await http.post("/api/v1/behavioral/events", json=event)).status_code == 200
            for session in ("spread-1", "spread-2"):
                assert (await http.get(f"/api/v1/behavioral/sessions/{session}")).json() == views[session]
    finally:
        assert single.stop() == 0


async def test_sessions_of_a_killed_node_are_served_again_by_the_survivors(cluster: Cluster) -> None:
    sessions = [f"kill-{i}" for i in range(24)]  # rendezvous hashing puts some on every node
    async with httpx.AsyncClient(timeout=STEP_S) as http:
        for s in sessions:
            batch = {"events": journey(s, 5)}
            assert (await http.post(f"{cluster.nodes[0].url}/api/v1/behavioral/batch", json=batch)).status_code == 200
        cluster.nodes[2].kill()  # SIGKILL: no goodbye to the cluster, no snapshots written
        killed_at = time.monotonic()
        survivors = cluster.nodes[:2]
        with trio.fail_after(STEP_S):
            for i, s in enumerate(sessions):
                # a request for a session the dead node owned waits until membership moves it
                view = await http.get(f"{survivors[i % 2].url}/api/v1/behavioral/sessions/{s}")
                assert view.status_code == 200, view.text
                assert view.json()["eventCount"] == 5
                # new events for it are processed by its new owner, on top of the recovered state
                more = page_view(s, "/after", 1_700_000_100_000)
                answer = await http.post(f"{survivors[(i + 1) % 2].url}/api/v1/behavioral/events", json=more)
                assert answer.status_code == 200 and answer.json()["processed"] is True
                assert (await http.get(f"{survivors[i % 2].url}/api/v1/behavioral/sessions/{s}")).json()["eventCount"] == 6
        recovered_in = time.monotonic() - killed_at
        await cluster.wait_formed(live=[0, 1])
        print(f"sessions of the killed node served again after {recovered_in:.2f} s")


async def test_redis_restart_under_load_loses_nothing_and_streams_resume(cluster: Cluster, redis_server: Any) -> None:
    acked: list[str] = []
    acks = Tally()
    stop = trio.Event()

    async def load(http: httpx.AsyncClient, worker: int) -> None:
        i = 0
        while not stop.is_set():
            node = cluster.nodes[(worker + i) % 3]
            client_id = f"r-{worker}-{i}"
            answer = await http.post(f"{node.url}/api/events/track/load", json={"eventId": client_id, "sessionId": f"rs-{worker}"})
            assert answer.status_code == 200, answer.text  # Redis down: ingestion goes on
            acked.append(client_id)
            acks.add()
            i += 1
            await trio.sleep(0.01)

    async with httpx.AsyncClient(timeout=STEP_S) as http:
        async with trio.open_nursery() as nursery:
            for worker in range(4):
                nursery.start_soon(load, http, worker)
            await acks.more(PHASE_EVENTS)
            await trio.to_thread.run_sync(redis_server.stop)
            await wait_for_component(cluster.nodes[1], "messageQueue", "degraded")
            await acks.more(PHASE_EVENTS)  # acknowledged while Redis is down
            await trio.to_thread.run_sync(redis_server.start)
            for node in cluster.nodes:
                await wait_for_component(node, "messageQueue", "healthy")
            await acks.more(PHASE_EVENTS)
            stop.set()
        await cluster.wait_formed()
        # cross-node delivery works again
        with trio.fail_after(STEP_S):
            async with SSEClient(f"{cluster.nodes[2].url}/api/events/stream") as sse:
                sent = await http.post(f"{cluster.nodes[0].url}/api/events/track/after-redis", json={})
                assert (await sse.next_of_type("event"))[1]["data"]["id"] == sent.json()["eventId"]
        await assert_stored_once(http, cluster.nodes[0], acked)


async def test_postgres_restart_under_load_acknowledges_only_what_is_stored(cluster: Cluster, postgres_server: Any) -> None:
    acked: list[str] = []
    acks, refusals = Tally(), Tally()
    stop = trio.Event()

    async def load(http: httpx.AsyncClient, worker: int) -> None:
        i = 0
        while not stop.is_set():
            client_id = f"p-{worker}-{i}"
            while True:  # a client retries the same event until it is acknowledged
                node = cluster.nodes[(worker + i) % 3]
                try:
                    answer = await http.post(f"{node.url}/api/events/track/load", json={"eventId": client_id})
                except httpx.TransportError:
                    answer = None
                if answer is not None and answer.status_code == 200:
                    break
                assert answer is None or answer.status_code == 503, answer.text
                if answer is not None:
                    assert answer.headers.get("retry-after")
                refusals.add()
                await trio.sleep(0.1)
            acked.append(client_id)
            acks.add()
            i += 1
            await trio.sleep(0.01)

    async with httpx.AsyncClient(timeout=STEP_S) as http:
        async with trio.open_nursery() as nursery:
            for worker in range(4):
                nursery.start_soon(load, http, worker)
            await acks.more(PHASE_EVENTS)
            await trio.to_thread.run_sync(postgres_server.stop)
            await wait_for_component(cluster.nodes[0], "database", "unhealthy")
            # the outage is seen by clients as 503s (or refused connections), not as lost acknowledgements
            await refusals.more(4)
            await trio.to_thread.run_sync(postgres_server.start)
            for node in cluster.nodes:
                await wait_for_component(node, "database", "healthy")
            await acks.more(PHASE_EVENTS)  # acknowledged again after the restart
            stop.set()
        await assert_stored_once(http, cluster.nodes[1], acked)


async def assert_stored_once(http: httpx.AsyncClient, node: ServerProcess, client_ids: list[str]) -> None:
    """Every acknowledged event is stored, exactly once (read back through the API)."""
    stored: list[str] = []
    cursor = None
    while True:
        params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
        page = (await http.get(f"{node.url}/api/events", params=params)).json()
        stored += [event["payload"].get("eventId") for event in page["events"] if event["name"] == "load"]
        cursor = page.get("nextCursor")
        if not cursor:
            break
    assert len(client_ids) > 20
    missing = set(client_ids) - set(stored)
    assert not missing, f"{len(missing)} acknowledged events are not stored: {sorted(missing)[:5]}"
    assert len(stored) == len(set(stored)), "an event is stored twice"


async def test_a_node_that_stood_still_past_its_ttl_does_not_serve_stale_state(cluster: Cluster) -> None:
    """A node frozen (GC pause, SIGSTOP, starved VM) longer than the heartbeat TTL is dropped and
    its sessions move on; when it wakes it must rebuild them instead of answering with what it had."""
    a, _, c = cluster.nodes
    ids = [cluster.node_id(i) for i in range(3)]
    project = next(m.group(1) for line in a.output if (m := re.search(r"project:\s+\S+ \((prj_\w+)\)", line)))
    session = next(f"stall-{i}" for i in range(1000) if owner_of(key_name(("session", project, f"stall-{i}")), ids) == ids[2])
    events = journey(session, 6)
    async with httpx.AsyncClient(timeout=STEP_S) as http:
        for event in events[:3]:
            assert (await http.post(f"{a.url}/api/v1/behavioral/events", json=event)).json()["processed"] is True
        os.kill(c.proc.pid, signal.SIGSTOP)  # type: ignore[union-attr]
        try:
            await cluster.wait_formed(live=[0, 1])
            for event in events[3:5]:  # served by the session's new owner
                assert (await http.post(f"{a.url}/api/v1/behavioral/events", json=event)).json()["processed"] is True
        finally:
            os.kill(c.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
        await cluster.wait_formed()
        counts = [(await http.get(f"{node.url}/api/v1/behavioral/sessions/{session}")).json()["eventCount"] for node in cluster.nodes]
        assert counts == [5, 5, 5]
        assert (await http.post(f"{a.url}/api/v1/behavioral/events", json=events[5])).json()["processed"] is True
        assert (await http.get(f"{c.url}/api/v1/behavioral/sessions/{session}")).json()["eventCount"] == 6
