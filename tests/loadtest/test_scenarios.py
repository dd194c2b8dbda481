"""Each built-in scenario, run in this process for a few seconds against a real server: what the
report says is what a user of the load generator sees."""

from __future__ import annotations

import argparse
import io

import trio

from loadtest import stats as names
from loadtest.cli import add_arguments, execute, make_config
from loadtest.report import Monitor, Report, build_report, format_report
from loadtest.scenario import CLOSE_S, DRAIN_S
from tests.e2e.server_process import ServerProcess

RUN_S = 2.0
BOUND_S = RUN_S + DRAIN_S + CLOSE_S + 1  # the runner's own hard stop


async def run_in_process(server_url: str, *argv: str) -> tuple[Report, str]:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config, scenarios = make_config(parser.parse_args(["--host", server_url, "--duration", str(RUN_S), *argv]))
    progress = io.StringIO()
    monitor = Monitor(config.users, config.duration, out=progress)
    with trio.fail_after(BOUND_S + 5):
        elapsed, problems = await execute(config, monitor)
    assert problems == []
    report = build_report(config, monitor.totals, elapsed, scenarios, None)
    assert RUN_S <= report.elapsed <= BOUND_S, "a run stops by itself, at its duration"
    assert report.counts[names.REQUESTS] > 0
    assert report.failures == {}, format_report(report)
    return report, progress.getvalue()


async def test_visitors_see_their_own_events_come_back(server: ServerProcess) -> None:
    report, progress = await run_in_process(server.url, "--scenario", "visitor", "--users", "30", "--spawn-rate", "60")
    assert report.scenarios == {"visitor": 30}
    assert report.latencyMs[names.ACK_WS].count > 0
    assert report.latencyMs[names.CONNECT_WS].count >= 30
    assert report.latencyMs[names.E2E_SESSION].count == report.ownSession.seen > 0
    assert report.counts[names.MESSAGES] >= report.ownSession.seen  # and their session_metrics
    lines = progress.splitlines()
    assert len(lines) >= RUN_S and "users 30/30" in progress and "ack p50" in progress, progress


async def test_cross_device_users_see_what_their_other_device_does(server: ServerProcess) -> None:
    report, _ = await run_in_process(server.url, "--scenario", "cross_device", "--users", "20", "--spawn-rate", "40")
    cross = report.crossDevice
    assert cross.sent > 0 and cross.seen > 0 and cross.missed == 0
    assert cross.seen + cross.unconfirmedAtStop == cross.sent
    assert report.latencyMs[names.E2E_CROSS_DEVICE].count == cross.seen
    assert report.latencyMs[names.CONNECT_WS].count == 40  # two devices each


async def test_dashboards_follow_what_backend_services_send(server: ServerProcess) -> None:
    report, _ = await run_in_process(server.url, "--scenario", "backend=2,dashboard=1", "--users", "30",
                                     "--spawn-rate", "60")
    assert report.scenarios == {"backend": 20, "dashboard": 10}
    assert report.latencyMs[names.ACK_BATCH].count > 0
    assert report.counts[names.EVENTS] > report.counts[names.REQUESTS]  # batches carry many events
    assert report.latencyMs[names.QUERY].count >= 10  # each dashboard loaded the statistics
    for stream in (names.E2E_DASHBOARD_WS, names.E2E_DASHBOARD_SSE):  # half on each transport
        assert report.latencyMs[stream].count > 0
    assert report.counts["messages.dashboard"] == report.counts[names.MESSAGES] > 0


async def test_a_run_against_a_server_that_never_answers_still_stops_at_its_bound() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    accepted: list[trio.SocketStream] = []

    async def black_hole() -> None:
        while True:
            accepted.append(await listeners[0].accept())  # accept, then never say a word

    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(black_hole)
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        config, _ = make_config(parser.parse_args(["--host", f"http://127.0.0.1:{port}", "--duration", "0.5",
                                                   "--scenario", "visitor=1,backend=1", "--users", "4",
                                                   "--spawn-rate", "100"]))
        with trio.fail_after(10):
            await execute(config, Monitor(config.users, config.duration, enabled=False))
        nursery.cancel_scope.cancel()
    assert trio.current_time() - started <= 0.5 + DRAIN_S + CLOSE_S + 1.5
    for stream in accepted:
        await stream.aclose()
    await listeners[0].aclose()
