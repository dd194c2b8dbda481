"""Adaptive sampling end to end (a node told that any latency is overload), and the
privacy-compliant route on PostgreSQL."""

from __future__ import annotations

import pathlib
import time
from typing import Any

import httpx

from actors.privacy.sampling import KEEP_ONE_IN
from tests.e2e.server_process import serving
from tests.privacy.limits.test_privacy_route import body, events, send
from tests.services.postgres import postgres_dsn, postgres_server  # noqa: F401 (fixtures)

DEADLINE_S = 20.0
POLL_S = 0.1


def test_under_overload_low_value_events_are_sampled_and_counted(tmp_path: pathlib.Path) -> None:
    # --sampling-latency-ms 0: any second with an ingest request counts as overloaded
    with serving(tmp_path / "data", extra=["--sampling-latency-ms", "0"]) as server:
        admin = httpx.get(f"{server.url}/api/admin/projects").json()["projects"]
        [default] = [p for p in admin if p["name"] == "default"]
        patched = httpx.patch(f"{server.url}/api/admin/projects/{default['id']}/policy", json={"adaptiveSampling": True})
        assert patched.status_code == 200, patched.text
        batch = {"events": [{"eventType": "purchase", "sessionId": "s1"}]
                 + [{"eventType": "mouse_move", "sessionId": "s1"}] * (2 * KEEP_ONE_IN)}  # fmt: skip
        answers: list[dict[str, Any]] = []
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:  # until the node has judged a window overloaded
            answer = httpx.post(f"{server.url}/api/v1/behavioral/batch", json=batch)
            assert answer.status_code == 200, answer.text
            answers.append(answer.json())
            if any(row["status"] == "dropped" for row in answers[-1]["results"]):
                break
            time.sleep(POLL_S)
        sampled = answers[-1]["results"]
        dropped = [row for row in sampled if row["status"] == "dropped"]
        assert len(dropped) == 2 * KEEP_ONE_IN - 2, sampled  # 1 in KEEP_ONE_IN mouse_move kept
        assert all(row["eventId"] is None and row["dropped"]["reason"] == "sampling" for row in dropped)
        assert sampled[0]["status"] == "stored"  # a purchase is never sampled
        assert [row["index"] for row in sampled] == list(range(len(batch["events"])))
        single = httpx.post(f"{server.url}/api/v1/behavioral/events", json={"eventType": "scroll", "sessionId": "s1"})
        stored_answers = sum(row["status"] == "stored" for a in answers for row in a["results"])
        stored_answers += single.json().get("stored", True) is not False
        assert len(events(server)) == stored_answers  # every event answered "stored" is, and no other
        drops = httpx.get(f"{server.url}/api/v1/behavioral/monitoring/performance").json()["drops"]
        assert drops["sampling"] == len(dropped) + (single.json().get("stored", True) is False)


def test_the_privacy_compliant_route_on_postgresql(tmp_path: pathlib.Path, postgres_dsn: str) -> None:  # noqa: F811
    extra = ["--database-url", postgres_dsn, "--trusted-proxies", "127.0.0.1"]
    with serving(tmp_path / "data", extra=extra) as server:
        assert send(server, body("low")).status_code == 200
        assert send(server, body("high", consentLevel="none")).json()["stored"] is False
        [event] = events(server)
    assert event["payload"]["context"] == {"ip": "203.0.113.0", "userAgent": "Chrome 120"}
    assert event["sessionId"].startswith("anon_") and event["payload"]["privacy"]["retention"] == "30_days"
    with serving(tmp_path / "data", extra=extra) as again:  # the salt is stored: the pseudonym survives a restart
        assert send(again, body("high")).json()["anonymizedSessionId"] == event["sessionId"]
