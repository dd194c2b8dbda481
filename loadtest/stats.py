"""What a load test measures: counters, failures by reason, latency histograms (HDR).

A process records into one ``Stats``; once a second ``take()`` hands over what was recorded since the
last call as a ``Delta`` (plain dicts and encoded HDR histograms: msgpack-able, so a worker process
can stream it to the parent) and starts afresh. ``Totals`` merges deltas from any number of
processes: the whole run for the report, and the last second for the progress line.

Latencies are recorded in microseconds, from 1 µs to 10 min, to 3 significant digits (HDR's usual
setting: ~0.1% resolution at every magnitude, ~170 KiB of counters per histogram).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Final

import msgspec
from hdrh.histogram import HdrHistogram

LOWEST_US: Final = 1
HIGHEST_US: Final = 600_000_000  # 10 min: anything slower is recorded as "latency_overflow"
SIGNIFICANT_DIGITS: Final = 3
PERCENTILES: Final = (50.0, 90.0, 99.0, 99.9)

# Histogram names: what is measured, then how (the report groups on the prefix)
ACK_WS: Final = "ack.ws_event"  # event sent on a WebSocket -> its ack
ACK_BEACON: Final = "ack.beacon"  # navigator.sendBeacon-style POST (text/plain) -> 2xx
ACK_BATCH: Final = "ack.http_batch"  # POST /api/events/track/batch -> 2xx
ACK_TRACK: Final = "ack.http_track"  # POST /api/events/track/{name} -> 2xx
E2E_SESSION: Final = "e2e.own_session"  # a visitor's event -> the same visitor's subscription
E2E_CROSS_DEVICE: Final = "e2e.cross_device"  # device A's event -> device B's subscription
E2E_DASHBOARD_WS: Final = "e2e.dashboard_ws"  # any event -> a dashboard on /api/events/ws
E2E_DASHBOARD_SSE: Final = "e2e.dashboard_sse"  # any event -> a dashboard on /api/events/stream
CONNECT_WS: Final = "connect.ws"  # TCP + WebSocket handshake + the server's connection_ack
QUERY: Final = "query.statistics"  # a dashboard's GET /api/events/statistics

# Counter names
REQUESTS: Final = "requests"  # anything the server acknowledges: HTTP requests, socket ingests
EVENTS: Final = "events_sent"  # events carried by those (a batch is one request, many events)
MESSAGES: Final = "messages_received"  # stream messages delivered to subscribers (not acks)
USERS_STARTED: Final = "users_started"
USERS_FINISHED: Final = "users_finished"  # ended by themselves (a visitor's exit), not by the stop
CROSS_SENT: Final = "cross_device_sent"
CROSS_SEEN: Final = "cross_device_seen"
CROSS_UNCONFIRMED: Final = "cross_device_unconfirmed_at_stop"  # still within the deadline at the stop
SESSION_SENT: Final = "own_session_sent"
SESSION_SEEN: Final = "own_session_seen"


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


class Delta(msgspec.Struct, kw_only=True):
    """What one process recorded during one interval. ``histograms`` are HDR-encoded (base64)."""

    counts: dict[str, int] = {}
    failures: dict[str, int] = {}
    histograms: dict[str, bytes] = {}
    users: int = 0  # users running at the end of the interval (a level, not a sum over time)


SUB_BUCKET_BITS: Final = 11  # HDR with 3 significant digits: 2,048 sub-buckets per power of two


def bucket_of(us: int) -> int:
    """The lowest value of ``us``'s HDR bucket (3 significant digits, 1 µs unit): recording it
    instead of ``us`` fills the same counter, so the histogram (and every percentile, min and max
    read from it) is the same."""
    shift = us.bit_length() - SUB_BUCKET_BITS
    return us if shift <= 0 else (us >> shift) << shift


class Stats:
    """One process's recorder. Hot path: ``count``, ``fail``, ``latency_ns`` (well under 1 µs each).

    Latencies are counted per HDR bucket in a plain dict and put into the HDR histograms by
    ``take`` (once a second): hdrh's ``record_value`` is pure Python (~0.6 µs); at 200,000
    deliveries/s the generator measures, that alone was an eighth of its CPU."""

    def __init__(self) -> None:
        self.counts: defaultdict[str, int] = defaultdict(int)
        self.failures: defaultdict[str, int] = defaultdict(int)
        self.histograms: dict[str, HdrHistogram] = {}
        self.buckets: dict[str, dict[int, int]] = {}  # histogram -> {bucket_of(µs): count}, until take()

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def fail(self, reason: str, n: int = 1) -> None:
        self.failures[reason] += n

    def latency_ns(self, name: str, ns: int) -> None:
        buckets = self.buckets.get(name)
        if buckets is None:
            buckets = self.buckets[name] = {}
        us = ns // 1000
        if us < 2048:
            key = us if us > LOWEST_US else LOWEST_US
        else:
            shift = us.bit_length() - SUB_BUCKET_BITS
            key = (us >> shift) << shift
        buckets[key] = buckets.get(key, 0) + 1

    def _record(self) -> None:
        """Move the bucket counts into the HDR histograms."""
        for name, buckets in self.buckets.items():
            histogram = self.histograms.get(name)
            if histogram is None:
                histogram = self.histograms[name] = new_histogram()
            for value, n in buckets.items():
                if not histogram.record_value(value, n):
                    self.counts["latency_overflow"] += n
        self.buckets.clear()

    def take(self, users: int = 0) -> Delta:
        """Everything recorded since the last ``take``, and start afresh."""
        self._record()
        delta = Delta(
            counts=dict(self.counts),
            failures=dict(self.failures),
            # An empty histogram is never sent: adding a decoded empty one corrupts hdrh's min.
            histograms={name: h.encode() for name, h in self.histograms.items() if h.get_total_count()},
            users=users,
        )
        self.counts.clear()
        self.failures.clear()
        self.histograms.clear()  # fresh ones on the next record: 6x cheaper than hdrh's reset()
        return delta


class Summary(msgspec.Struct, kw_only=True):
    """A histogram as the report shows it, in milliseconds."""

    count: int
    mean: float
    p50: float
    p90: float
    p99: float
    p999: float
    max: float


def summarize(histogram: HdrHistogram) -> Summary:
    """One pass over the non-empty buckets (hdrh's own iterators take ~0.1 s per histogram)."""
    total = histogram.get_total_count()
    buckets = [(index, count) for index, count in enumerate(histogram.counts) if count]
    value_of = histogram.get_value_from_index
    mean = sum(histogram._hdr_median_equiv_value(value_of(index)) * count for index, count in buckets) / max(total, 1)
    targets = sorted((max(1, int(p * total / 100 + 0.5)), p) for p in PERCENTILES)  # hdrh's rounding
    values: dict[float, float] = {}
    seen = 0
    for index, count in buckets:
        seen += count
        while targets and seen >= targets[0][0]:
            values[targets.pop(0)[1]] = histogram.get_highest_equivalent_value(value_of(index)) / 1000
    return Summary(
        count=total,
        mean=round(mean / 1000, 3),
        p50=round(values.get(50.0, 0.0), 3),
        p90=round(values.get(90.0, 0.0), 3),
        p99=round(values.get(99.0, 0.0), 3),
        p999=round(values.get(99.9, 0.0), 3),
        max=round(histogram.get_max_value() / 1000, 3),
    )


class Totals:
    """Deltas merged: counts and failures summed, histograms added bucket by bucket."""

    def __init__(self) -> None:
        self.counts: defaultdict[str, int] = defaultdict(int)
        self.failures: defaultdict[str, int] = defaultdict(int)
        self.histograms: dict[str, HdrHistogram] = {}

    def add(self, delta: Delta) -> None:
        for name, n in delta.counts.items():
            self.counts[name] += n
        for reason, n in delta.failures.items():
            self.failures[reason] += n
        for name, encoded in delta.histograms.items():
            histogram = self.histograms.get(name)
            if histogram is None:
                histogram = self.histograms[name] = new_histogram()
            histogram.decode_and_add(encoded)

    def merged(self, prefix: str) -> HdrHistogram | None:
        """All histograms whose name starts with ``prefix`` added together (None if none has data)."""
        parts = [h for name, h in self.histograms.items() if name.startswith(prefix) and h.get_total_count()]
        if not parts:
            return None
        total = new_histogram()
        for part in parts:
            total.add(part)
        return total

    @property
    def failure_count(self) -> int:
        return sum(self.failures.values())

    def summaries(self) -> dict[str, Summary]:
        return {name: summarize(h) for name, h in sorted(self.histograms.items()) if h.get_total_count()}
