"""``pulse serve --workers N``: N nodes on one port under a supervisor."""

from __future__ import annotations

import os
import pathlib
import re
import signal
import subprocess
import sys
from typing import Final

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


def _start_supervised(tmp_path: pathlib.Path, dsn: str, redis_url: str, node_id: str | None = None) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "server.cli", "serve", "--port", "0", "--workers", "2", "--log-level", "info",
           "--data-dir", str(tmp_path), "--database-url", dsn, "--redis-url", redis_url]
    if node_id:
        cmd += ["--node-id", node_id]
    # a session of its own, like a service started by a terminal or systemd: its group can be signalled
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _read_until(proc: subprocess.Popen[str], needles: tuple[str, ...], count: int, lines: list[str]) -> None:
    """Read the output until lines holding any of ``needles`` were seen ``count`` times."""
    assert proc.stdout is not None
    seen = 0
    for line in proc.stdout:
        lines.append(line)
        seen += any(needle in line for needle in needles)
        if seen >= count:
            return
    raise AssertionError("".join(lines))


WORKER_READY: Final = re.compile(r"^  bus: .* node (\S+)$|^Pulse worker \d+ ready \(node (\S+)\)$")


def _node_ids(lines: list[str]) -> list[str]:
    """The node of each worker: the first prints the whole banner, the others one line."""
    return [m.group(1) or m.group(2) for line in lines if (m := WORKER_READY.match(line.rstrip("\n")))]


def test_ctrl_c_to_the_process_group_drains_every_worker(
    tmp_path: pathlib.Path, postgres_server: PostgresServer, postgres_dsn: str, redis_server: RedisServer
) -> None:
    proc = _start_supervised(tmp_path, postgres_dsn, redis_server.url, node_id="fixed")
    lines: list[str] = []
    try:
        _read_until(proc, ("secret key:", " ready (node "), 2, lines)
        ids = _node_ids(lines)
        assert sum("secret key:" in line for line in lines) == 1  # one whole banner, then one line per worker
        assert len(set(ids)) == 2 and all(i.startswith("fixed-w") for i in ids)  # --node-id is a prefix
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    lines.append(out)
    assert proc.returncode == 0, "".join(lines)
    assert "".join(lines).count("pulse stopped") == 2  # both drained, none killed by a second signal


def test_workers_do_not_outlive_a_killed_supervisor(
    tmp_path: pathlib.Path, postgres_server: PostgresServer, postgres_dsn: str, redis_server: RedisServer
) -> None:
    proc = _start_supervised(tmp_path, postgres_dsn, redis_server.url)
    lines: list[str] = []
    try:
        _read_until(proc, ("secret key:", " ready (node "), 2, lines)
        proc.kill()  # SIGKILL: nothing can be forwarded
        # the workers share the pipe: it closes when the last of them has exited
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    lines.append(out)
    assert "".join(lines).count("supervisor") >= 2 and "".join(lines).count("pulse stopped") == 2
