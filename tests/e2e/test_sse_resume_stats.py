"""The periodic ``stats`` message of a project's SSE stream (the message a stream resumes into) shows
that project's figures only: its rate is not the whole process's rate across tenants."""

from __future__ import annotations

import pathlib
from typing import Any

import httpx
import trio

from tests.e2e.server_process import ServerProcess
from tests.e2e.test_sse_resume_ids import STEP_S, ResumeClient

STREAM = "/api/events/stream"


async def next_stats(sse: ResumeClient) -> dict[str, Any]:
    with trio.fail_after(STEP_S):
        while True:
            _, _, data = await sse.message()
            if data.get("type") == "stats":
                return dict(data["data"])


async def send_batch(http: httpx.AsyncClient, key: str, count: int) -> None:
    events = [{"eventName": "view", "payload": {"serviceName": "web", "n": n}} for n in range(count)]
    answer = await http.post("/api/events/track/batch", json={"events": events}, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200, answer.text


async def test_stats_show_the_rate_of_their_own_project_only(tmp_path: pathlib.Path) -> None:
    proc = ServerProcess(tmp_path / "data", env={"PULSE_SSE_STATS_INTERVAL": "0.2"}).start()
    try:
        async with httpx.AsyncClient(base_url=proc.url, timeout=10) as http:
            created = await http.post("/api/admin/projects", json={"name": "quiet"},
                                      headers={"Authorization": f"Bearer {proc.secret_key}"})
            assert created.status_code == 201, created.text
            quiet_key = created.json()["secretKey"]
            for _ in range(3):
                await send_batch(http, proc.public_key, 100)  # the default project is busy

            async with ResumeClient(f"{proc.url}{STREAM}?key={quiet_key}") as quiet, \
                       ResumeClient(f"{proc.url}{STREAM}?key={proc.secret_key}") as busy:  # fmt: skip
                stats = await next_stats(quiet)
                assert stats["totalEventCount"] == 0
                assert stats["eventsPerSecond"] == 0  # not the busy project's traffic
                busy_stats = await next_stats(busy)
                assert busy_stats["totalEventCount"] == 300
                assert busy_stats["eventsPerSecond"] > 0

                await send_batch(http, quiet_key, 30)
                with trio.fail_after(STEP_S):  # the aggregates may lag the answer by a flush
                    while (stats := await next_stats(quiet))["totalEventCount"] < 30:
                        pass
                assert stats["totalEventCount"] == 30
                assert 0 < stats["eventsPerSecond"]
                busy_stats = await next_stats(busy)
                assert busy_stats["eventsPerSecond"] > stats["eventsPerSecond"]  # 300 events against 30
    finally:
        assert proc.stop() == 0
