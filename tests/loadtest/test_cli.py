"""``python -m loadtest`` in a subprocess, as a user runs it (``pulse loadtest`` is the same code)."""

from __future__ import annotations

import json
import pathlib
import sys

import trio

from loadtest.scenario import CLOSE_S, DRAIN_S
from tests.e2e.server_process import ROOT, ServerProcess

RUN_S = 2.5


async def loadtest(*argv: str) -> trio.CompletedProcess[bytes]:
    with trio.fail_after(40):
        return await trio.run_process([sys.executable, "-m", "loadtest", *argv], cwd=ROOT, capture_stdout=True,
                                      capture_stderr=True, check=False)


async def test_a_mixed_run_over_two_processes_and_two_source_addresses(server: ServerProcess, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "report.json"
    done = await loadtest("--scenario", "mixed", "--users", "26", "--spawn-rate", "52", "--duration", f"{RUN_S}s",
                          "--processes", "2", "--source-addresses", "2", "--host", server.url,
                          "--report-json", str(path))
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, out + err
    assert "Pulse load test against" in out and str(path) in out and "failures        0" in out
    assert "users " in err and "req/s" in err  # the progress line
    report = json.loads(path.read_text())
    assert report["processes"] == 2 and report["sourceAddresses"] == ["127.0.0.1", "127.0.0.2"]
    assert report["scenarios"] == {"visitor": 16, "cross_device": 4, "backend": 4, "dashboard": 2}
    assert RUN_S <= report["elapsed"] <= RUN_S + DRAIN_S + CLOSE_S + 1 + 1  # stopped by itself
    assert report["counts"]["requests"] > 0 and report["failureCount"] == 0 and report["failures"] == {}
    latency = report["latencyMs"]
    for name in ("ack.ws_event", "ack.http_batch", "e2e.own_session", "e2e.cross_device", "e2e.dashboard_ws",
                 "e2e.dashboard_sse"):
        assert latency[name]["count"] > 0, name
        assert 0 < latency[name]["p50"] <= latency[name]["p99"] <= latency[name]["max"], name
    assert report["crossDevice"]["seen"] > 0 and report["crossDevice"]["missed"] == 0
    assert report["server"]["connections"]["websockets"] >= 0  # the server's own figures are in the report


async def test_a_run_in_one_process_stops_by_itself_at_its_duration(server: ServerProcess, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "report.json"
    done = await loadtest("--scenario", "backend=1,dashboard=1", "--users", "10", "--spawn-rate", "50",
                          "--duration", "1.5", "--host", server.url, "--report-json", str(path), "--quiet")
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    assert done.stderr == b""  # --quiet: no progress line
    report = json.loads(path.read_text())
    assert report["processes"] == 1 and report["sourceAddresses"] == []
    assert 1.5 <= report["elapsed"] <= 1.5 + DRAIN_S + CLOSE_S + 1
    assert report["latencyMs"]["ack.http_batch"]["count"] > 0 and report["failureCount"] == 0


async def test_a_target_that_is_not_loopback_is_refused(tmp_path: pathlib.Path) -> None:
    done = await loadtest("--host", "http://192.0.2.10:8000", "--report-json", str(tmp_path / "r.json"))
    assert done.returncode == 2
    assert "refusing to load-test 'http://192.0.2.10:8000'" in done.stderr.decode()
    assert "--allow-remote" in done.stderr.decode()
    assert not (tmp_path / "r.json").exists()


async def test_no_server_there_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()  # a port where nothing listens
    done = await loadtest("--host", f"http://127.0.0.1:{port}", "--report-json", str(tmp_path / "r.json"))
    assert done.returncode == 2
    assert f"cannot reach a server at http://127.0.0.1:{port}" in done.stderr.decode()
