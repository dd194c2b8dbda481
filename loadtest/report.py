"""What a run shows: the live progress line (stderr, once a second) and the final report (stdout and
a JSON file).

Progress: users running / asked, requests/s, messages/s received by subscribers, failures in the last
second (and in all), acknowledgement latency p50/p99 and end-to-end p50/p99 over the last second.
Report: counts, rates, failures by reason, every latency histogram as count/mean/p50/p90/p99/p99.9/max
in milliseconds, the cross-device and own-session delivery tallies, and the server's own view
(/api/v1/behavioral/monitoring/performance) when it could be read.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

import msgspec

from loadtest import stats as names
from loadtest.runner import RunConfig
from loadtest.stats import Delta, Summary, Totals


class Monitor:
    """Merges the deltas of every process; ``tick`` prints the progress line for the last interval."""

    def __init__(self, users: int, duration: float, *, out: TextIO | None = None, enabled: bool = True) -> None:
        self.users = users
        self.duration = duration
        self.out = out if out is not None else sys.stderr
        self.enabled = enabled
        self.totals = Totals()
        self.window = Totals()
        self.running: dict[int, int] = {}  # worker -> users running at its last delta
        self.elapsed = 0.0
        self.live = self.enabled and self.out.isatty()

    def add(self, delta: Delta, worker: int = 0) -> None:
        self.totals.add(delta)
        self.window.add(delta)
        self.running[worker] = delta.users

    def tick(self, elapsed: float, interval: float = 1.0) -> None:
        self.elapsed = elapsed
        if self.enabled:
            line = self.line(elapsed, interval)
            if self.live:
                self.out.write("\r\x1b[2K" + line)
            else:
                self.out.write(line + "\n")
            self.out.flush()
        self.window = Totals()

    def line(self, elapsed: float, interval: float) -> str:
        window = self.window
        requests = window.counts.get(names.REQUESTS, 0) / interval
        messages = window.counts.get(names.MESSAGES, 0) / interval
        parts = [
            f"{elapsed:5.0f}s/{self.duration:.0f}s",
            f"users {sum(self.running.values()):,}/{self.users:,}",
            f"req/s {requests:,.0f}",
            f"msg/s {messages:,.0f}",
            f"errors {window.failure_count:,} ({self.totals.failure_count:,} total)",
        ]
        for label, prefix in (("ack", "ack."), ("e2e", "e2e.")):
            merged = window.merged(prefix)
            if merged is not None:
                p50, p99 = merged.get_value_at_percentile(50) / 1000, merged.get_value_at_percentile(99) / 1000
                parts.append(f"{label} p50 {p50:.1f} p99 {p99:.1f} ms")
        return "  ".join(parts)

    def finish(self) -> None:
        if self.enabled and self.live:
            self.out.write("\n")
            self.out.flush()


class Delivery(msgspec.Struct, kw_only=True):
    sent: int
    seen: int


class CrossDevice(Delivery, kw_only=True):
    missed: int
    unconfirmedAtStop: int


class Report(msgspec.Struct, kw_only=True):
    target: str
    scenarios: dict[str, int]  # users per scenario
    users: int
    spawnRate: float
    duration: float
    elapsed: float
    processes: int
    sourceAddresses: list[str]
    counts: dict[str, int]
    rates: dict[str, float]  # per second of elapsed time
    failures: dict[str, int]
    failureCount: int
    latencyMs: dict[str, Summary]
    ownSession: Delivery
    crossDevice: CrossDevice
    server: dict[str, Any] | None = None  # the server's /api/v1/behavioral/monitoring/performance at the end
    runId: str = ""
    seed: int = 0


def build_report(config: RunConfig, totals: Totals, elapsed: float, scenarios: dict[str, int],
                 server: dict[str, Any] | None) -> Report:
    counts = dict(sorted(totals.counts.items()))
    per_second = max(elapsed, 1e-9)
    return Report(
        target=config.target.url,
        scenarios=scenarios,
        users=config.users,
        spawnRate=config.spawn_rate,
        duration=config.duration,
        elapsed=round(elapsed, 3),
        processes=config.processes,
        sourceAddresses=config.source_addresses,
        counts=counts,
        rates={
            "requestsPerSecond": round(counts.get(names.REQUESTS, 0) / per_second, 1),
            "eventsPerSecond": round(counts.get(names.EVENTS, 0) / per_second, 1),
            "messagesPerSecond": round(counts.get(names.MESSAGES, 0) / per_second, 1),
        },
        failures=dict(sorted(totals.failures.items(), key=lambda item: -item[1])),
        failureCount=totals.failure_count,
        latencyMs=totals.summaries(),
        ownSession=Delivery(sent=counts.get(names.SESSION_SENT, 0), seen=counts.get(names.SESSION_SEEN, 0)),
        crossDevice=CrossDevice(
            sent=counts.get(names.CROSS_SENT, 0), seen=counts.get(names.CROSS_SEEN, 0),
            missed=totals.failures.get("cross_device_missed", 0),
            unconfirmedAtStop=counts.get(names.CROSS_UNCONFIRMED, 0),
        ),
        server=server,
        runId=config.run_id,
        seed=config.seed,
    )


def format_report(report: Report, json_path: str | None = None) -> str:
    mix = ", ".join(f"{name} {count:,}" for name, count in report.scenarios.items())
    procs = f"{report.processes} process{'es' if report.processes > 1 else ''}"
    sources = f", from {len(report.sourceAddresses)} source addresses" if report.sourceAddresses else ""
    c, r = report.counts, report.rates
    lines = [
        f"Pulse load test against {report.target}: {report.users:,} users ({mix}), "
        f"{report.elapsed:.1f} s ({report.duration:g} s asked), {procs}{sources}",
        f"  users started   {c.get(names.USERS_STARTED, 0):,} ({c.get(names.USERS_FINISHED, 0):,} left by themselves)",
        f"  requests        {c.get(names.REQUESTS, 0):,} ({r['requestsPerSecond']:,.1f}/s), "
        f"carrying {c.get(names.EVENTS, 0):,} events ({r['eventsPerSecond']:,.1f}/s)",
        f"  messages in     {c.get(names.MESSAGES, 0):,} ({r['messagesPerSecond']:,.1f}/s) delivered to subscribers",
    ]
    if report.ownSession.sent:
        lines.append(f"  own session     {report.ownSession.seen:,} of {report.ownSession.sent:,} events came back "
                     "on the visitor's own subscription")
    cross = report.crossDevice
    if cross.sent:
        lines.append(f"  cross-device    {cross.seen:,} of {cross.sent:,} seen on the other device, {cross.missed:,} missed, "
                     f"{cross.unconfirmedAtStop:,} still on their way at the stop")
    lines.append(f"  failures        {report.failureCount:,}")
    for reason, count in report.failures.items():
        lines.append(f"    {reason:<28}{count:>10,}")
    if report.latencyMs:
        lines.append(f"  {'latency (ms)':<26}{'count':>9}{'p50':>9}{'p90':>9}{'p99':>9}{'p99.9':>9}{'max':>9}")
        for name, s in report.latencyMs.items():
            lines.append(f"    {name:<24}{s.count:>9,}{s.p50:>9.1f}{s.p90:>9.1f}{s.p99:>9.1f}{s.p999:>9.1f}{s.max:>9.1f}")
    server = report.server
    if server and isinstance(server.get("metrics"), dict):
        latency = server["metrics"].get("processingLatency") or {}
        lines.append(f"  server says     processing p50 {latency.get('p50')} p99 {latency.get('p99')} ms, "
                     f"drops {server.get('drops') or {}}")
    if json_path:
        lines.append(f"  report          {json_path}")
    return "\n".join(lines)
