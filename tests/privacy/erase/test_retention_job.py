"""The retention job on a real server: a project's retentionDays removes its older events within
an interval, the statistics follow, and the run is counted on /monitoring/performance."""

from __future__ import annotations

import pathlib
import time

import httpx
import trio

from server.privacy.retention import RetentionJob
from storage.sqlite import SqliteStore
from tests.e2e.server_process import serving

DAY_MS = 86_400_000


async def test_a_project_retention_removes_older_events_on_the_next_run(tmp_path: pathlib.Path) -> None:
    now = time.time_ns() // 1_000_000
    with serving(tmp_path / "data", host="0.0.0.0", extra=["--retention-interval", "0.2"]) as proc:
        head = {"X-API-Key": proc.secret_key}
        async with httpx.AsyncClient(base_url=proc.url, timeout=10) as http:
            project = (await http.get("/api/admin/projects", headers=head)).json()["projects"][0]["id"]
            old = [{"eventName": "old", "payload": {"serviceName": "web", "timestamp": now - 40 * DAY_MS - i}}
                   for i in range(3)]  # fmt: skip
            recent = [{"eventName": "new", "payload": {"serviceName": "web", "timestamp": now - DAY_MS - i}}
                      for i in range(2)]  # fmt: skip
            answer = await http.post("/api/events/track/batch", json={"events": old + recent}, headers=head)
            assert answer.status_code == 200, answer.text
            patched = await http.patch(f"/api/admin/projects/{project}/policy", json={"retentionDays": 30}, headers=head)
            assert patched.status_code == 200, patched.text

            with trio.fail_after(20):
                while True:
                    listing = (await http.get("/api/events", params={"limit": "10"}, headers=head)).json()
                    if listing["filtered"] == 2:
                        break
                    await trio.sleep(0.1)
            assert {e["name"] for e in listing["events"]} == {"new"}
            services = (await http.get("/api/events/services", headers=head)).json()["services"]
            assert [(s["serviceName"], s["eventCount"]) for s in services] == [("web", 2)]
            retention = (await http.get("/api/v1/behavioral/monitoring/performance", headers=head)).json()["retention"]
            assert retention["removed"] == 3 and retention["removedByProject"] == {project: 3}
            assert retention["runs"] >= 1 and retention["lastRunAt"].endswith("Z")
            assert retention["intervalSeconds"] == 0.2


async def test_a_run_counts_what_it_removed(tmp_path: pathlib.Path) -> None:
    """The job itself against a store: expired events go, and its counters say so."""
    import msgspec

    from protocol.record import SOURCE_EVENTS, Event

    store = SqliteStore(tmp_path / "data")
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        now = time.time_ns() // 1_000_000
        events = [Event(id=f"e{i}", project="prj_x", name="n", source=SOURCE_EVENTS, timestamp=now, received_at=now,
                        payload=msgspec.Raw(b"{}"), expires_at=now - 1 if i < 2 else None) for i in range(3)]  # fmt: skip
        await store.append(events)
        job = RetentionJob(store, interval=3600)
        assert await job.run_once() == {"prj_x": 2}
        assert job.runs == 1 and job.removed == 2 and job.last_removed == {"prj_x": 2}
        assert await store.count_events("prj_x") == 1
        nursery.cancel_scope.cancel()
