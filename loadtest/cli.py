"""``pulse loadtest`` (and ``python -m loadtest``): run simulated users against a Pulse server.

    pulse loadtest --scenario visitor --users 300 --spawn-rate 50 --duration 20s --host http://127.0.0.1:8000
    pulse loadtest --scenario mixed --users 1000 --duration 1m
    pulse loadtest --scenario backend=2,dashboard=1 --users 30 --duration 10
    pulse loadtest --scenario my_package.scenarios:Shopper --users 100 --duration 30

Progress once a second on stderr; the report on stdout and as JSON in ``--report-json`` (default
``loadtest-report.json`` in the current directory, overwritten by each run). Exit code: 0 when no
request failed, 1 when some did (the report says which and why), 2 when the run could not start
(bad arguments, a target that is not loopback without --allow-remote, a server that is not there).

Every run is bounded: at most --duration (at most 24 h), --users (at most 200,000) and
--max-requests (default 10,000,000), and it stops by itself; Ctrl-C stops it early, with a report.
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import re
import secrets
import signal
import sys
from collections import Counter
from functools import partial
from typing import Any, Final

import httpx
import msgspec
import trio

from loadtest.multiproc import Workers
from loadtest.plan import TargetRefused, parse_target, plan_run
from loadtest.report import Monitor, Report, build_report, format_report
from loadtest.runner import RunConfig, Runner, assign, parse_mix, scenario_class
from loadtest.scenarios import BUILT_IN, PRESETS

MAX_USERS: Final = 200_000
MAX_DURATION_S: Final = 86_400.0
MAX_SPAWN_RATE: Final = 10_000.0
DEFAULT_MAX_REQUESTS: Final = 10_000_000
DEFAULT_REPORT: Final = "loadtest-report.json"
PROBE_TIMEOUT_S: Final = 5.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


def duration(text: str) -> float:
    match = _DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected a duration like 20, 20s, 5m or 1h, got {text!r}")
    seconds = float(match[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[match[2]]
    if not 0 < seconds <= MAX_DURATION_S:
        raise argparse.ArgumentTypeError(f"duration must be more than 0 and at most {MAX_DURATION_S:g} s, got {text!r}")
    return seconds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    scenarios = ", ".join([*BUILT_IN, *PRESETS])
    parser.add_argument("--scenario", default="visitor",
                        help=f"{scenarios}; a weighted mix like visitor=8,dashboard=1; or module:UserClass (default visitor)")
    parser.add_argument("--users", type=int, default=10, help=f"simulated users, all processes together (at most {MAX_USERS:,})")
    parser.add_argument("--spawn-rate", type=float, default=None,
                        help="users started per second (default: all within 5 s, at most 500/s)")
    parser.add_argument("--duration", type=duration, default=30.0, help="how long: 20, 20s, 5m, 1h (default 30 s)")
    parser.add_argument("--host", default="http://127.0.0.1:8000", help="the server's base URL (default http://127.0.0.1:8000)")
    parser.add_argument("--allow-remote", action="store_true", help="allow a target that is not a loopback address")
    parser.add_argument("--key", default=os.environ.get("PULSE_KEY"), help="API key (default $PULSE_KEY; loopback servers need none)")
    parser.add_argument("--processes", type=int, default=1,
                        help="at least this many processes (more when the sockets need them: ~19,000 per process)")
    parser.add_argument("--source-addresses", type=int, default=None,
                        help="spread connections over 127.0.0.1..127.0.0.N (default: as many as the ephemeral ports need)")
    parser.add_argument("--http-connections", type=int, default=64, help="keep-alive HTTP connections per process (default 64)")
    parser.add_argument("--max-requests", type=int, default=DEFAULT_MAX_REQUESTS,
                        help=f"stop after about this many requests (default {DEFAULT_MAX_REQUESTS:,})")
    parser.add_argument("--report-json", default=DEFAULT_REPORT, help=f"where to write the JSON report (default ./{DEFAULT_REPORT})")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: a new one; the report shows it)")
    parser.add_argument("--quiet", action="store_true", help="no progress line")


def _fail(message: str) -> int:
    print(f"pulse loadtest: {message}", file=sys.stderr)
    return 2


def make_config(args: argparse.Namespace) -> tuple[RunConfig, dict[str, int]]:
    """Check the arguments and plan the run; raises ValueError or TargetRefused with what is wrong."""
    if not 1 <= args.users <= MAX_USERS:
        raise ValueError(f"--users must be 1..{MAX_USERS:,}, got {args.users}")
    rate = args.spawn_rate if args.spawn_rate is not None else min(500.0, max(1.0, args.users / 5))
    if not 0 < rate <= MAX_SPAWN_RATE:
        raise ValueError(f"--spawn-rate must be more than 0 and at most {MAX_SPAWN_RATE:g}, got {rate:g}")
    if args.processes < 1 or args.http_connections < 1 or args.max_requests < 1:
        raise ValueError("--processes, --http-connections and --max-requests must be at least 1")
    if args.source_addresses is not None and args.source_addresses < 1:
        raise ValueError("--source-addresses must be at least 1")
    mix = parse_mix(args.scenario)
    per_scenario = Counter(assign(mix, args.users))
    sockets = sum(count * scenario_class(spec).sockets for spec, count in per_scenario.items())
    target = parse_target(args.host, allow_remote=args.allow_remote, key=args.key)
    plan = plan_run(target, sockets, args.http_connections, min_processes=args.processes,
                    source_addresses=args.source_addresses)
    config = RunConfig(
        target=target, mix=mix, users=args.users, spawn_rate=rate, duration=args.duration,
        max_requests=args.max_requests, http_connections=args.http_connections,
        source_addresses=plan.source_addresses, seed=args.seed if args.seed is not None else secrets.randbits(32),
        run_id="lt" + secrets.token_hex(3), processes=plan.processes,
    )
    return config, {spec: per_scenario.get(spec, 0) for spec in mix}


async def execute(config: RunConfig, monitor: Monitor, *, handle_signals: bool = False) -> tuple[float, list[str]]:
    """Run in this process (one process) or in worker processes; returns (elapsed seconds, problems
    with workers). With ``handle_signals``, SIGINT/SIGTERM stop the run early (a report still follows)."""
    async with trio.open_nursery() as nursery:
        if config.processes == 1:
            started = trio.current_time()

            async def on_interval(delta: Any) -> None:
                monitor.add(delta)
                monitor.tick(trio.current_time() - started)

            runner = Runner(config, on_interval)
            if handle_signals:
                nursery.start_soon(_stop_on_signal, runner.stop)
            await runner.run()
            elapsed, problems = trio.current_time() - started, []
        else:
            workers = Workers(config, monitor)
            if handle_signals:
                nursery.start_soon(_stop_on_signal, lambda: nursery.start_soon(workers.stop))
            elapsed = await workers.run()
            problems = workers.problems
        nursery.cancel_scope.cancel()
    monitor.finish()
    return elapsed, problems


async def _stop_on_signal(stop: Any) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            print("\nstopping (the report follows)...", file=sys.stderr)
            stop()


def _probe(config: RunConfig) -> str | None:
    """None when the server answers its health check; else what is wrong."""
    headers = {"authorization": f"Bearer {config.target.key}"} if config.target.key else {}
    try:
        with httpx.Client(base_url=config.target.url, timeout=PROBE_TIMEOUT_S, headers=headers) as client:
            client.get("/api/v1/behavioral/health")
    except httpx.HTTPError as exc:
        return f"cannot reach a server at {config.target.url}: {exc}"
    return None


def _server_view(config: RunConfig) -> dict[str, Any] | None:
    """The server's own figures after the run (None when it cannot be read, e.g. a public key)."""
    headers = {"authorization": f"Bearer {config.target.key}"} if config.target.key else {}
    try:
        with httpx.Client(base_url=config.target.url, timeout=PROBE_TIMEOUT_S, headers=headers) as client:
            answer = client.get("/api/v1/behavioral/monitoring/performance")
    except httpx.HTTPError:
        return None
    if answer.status_code != 200:
        return None
    body = answer.json()
    return body if isinstance(body, dict) else None


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        config, scenarios = make_config(args)
    except (ValueError, TargetRefused) as exc:
        return _fail(str(exc))
    problem = _probe(config)
    if problem:
        return _fail(problem)
    monitor = Monitor(config.users, config.duration, enabled=not args.quiet)
    if not args.quiet:
        spread = f"{config.processes} processes" if config.processes > 1 else "1 process"
        if config.source_addresses:
            spread += f", source addresses {config.source_addresses[0]}..{config.source_addresses[-1]}"
        print(f"pulse loadtest: {config.users:,} users ({', '.join(f'{k} {v:,}' for k, v in scenarios.items())}) "
              f"against {config.target.url} for {config.duration:g} s, {spread}, seed {config.seed}", file=sys.stderr)
    elapsed, problems = trio.run(partial(execute, config, monitor, handle_signals=True))
    for problem in problems:
        monitor.totals.failures["worker_failed"] += 1
        print(f"pulse loadtest: {problem}", file=sys.stderr)
    report = build_report(config, monitor.totals, elapsed, scenarios, _server_view(config))
    path = write_report(report, args.report_json)
    print(format_report(report, str(path)))
    return 0 if report.failureCount == 0 else 1


def write_report(report: Report, path: str) -> pathlib.Path:
    target = pathlib.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(msgspec.json.format(msgspec.json.encode(report), indent=2) + b"\n")
    return target.resolve()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest", description="Pulse load generator")
    add_arguments(parser)
    return run(parser.parse_args(argv))


