"""``pulse serve --workers N``: N nodes on one port under a supervisor."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys

import httpx
import trio

from tests.cluster.harness import health
from tests.e2e.server_process import ROOT, ServerProcess
from tests.services.postgres import PostgresServer
from tests.services.redis import RedisServer

STEP_S = 20


async def live_nodes(server: ServerProcess, count: int) -> list[str]:
    """Poll the shared port until the cluster has ``count`` live nodes; returns them."""
    with trio.fail_after(STEP_S):
        while True:
            try:
                nodes = (await health(server))["details"]["redis"]["liveNodes"]
            except httpx.TransportError:
                nodes = []
            if len(nodes) == count:
                return sorted(nodes)
            await trio.sleep(0.1)


async def test_workers_share_one_port_restart_after_a_crash_and_stop_cleanly(
    tmp_path: pathlib.Path, postgres_server: PostgresServer, postgres_dsn: str, redis_server: RedisServer
) -> None:
    extra = ["--workers", "2", "--database-url", postgres_dsn, "--redis-url", redis_server.url]
    server = ServerProcess(tmp_path / "data", extra=extra).start()
    try:
        first = await live_nodes(server, 2)
        async with httpx.AsyncClient(base_url=server.url, timeout=STEP_S) as http:
            # connections are spread over both workers; each answers for the whole cluster
            answered_by = set()
            for _ in range(40):
                async with httpx.AsyncClient(base_url=server.url, timeout=STEP_S) as fresh:  # a new connection
                    answered_by.add((await fresh.get("/api/v1/behavioral/health")).json()["details"]["node"])
            assert answered_by == set(first)
            sent = await http.post("/api/events/track/before-crash", json={"sessionId": "w-1"})
            assert sent.status_code == 200
            # a worker dies: the supervisor starts a new one, which joins the cluster
            victim = first[0]
            os.kill(int(victim.rsplit("-", 1)[1]), signal.SIGKILL)
            with trio.fail_after(STEP_S):
                while True:
                    nodes = await live_nodes(server, 2)
                    if victim not in nodes:
                        break
                    await trio.sleep(0.2)
            assert (await http.get("/api/events", params={"eventName": "before-crash"})).json()["events"]
    finally:
        code = server.stop()
    assert code == 0, "".join(server.output)
    assert any("restarting" in line for line in server.output)


def test_several_workers_without_redis_refuse_to_start_and_say_what_is_missing(tmp_path: pathlib.Path) -> None:
    cmd = [sys.executable, "-m", "server.cli", "serve", "--port", "0", "--workers", "2", "--data-dir", str(tmp_path)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "--redis-url" in done.stderr and "--database-url" in done.stderr
