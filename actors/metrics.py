"""Process-wide counters and latency histograms behind /api/v1/behavioral/monitoring/performance.

Everything reported there is computed from these: nothing is estimated or invented. The histogram is
log-bucketed (about 4% resolution) so recording costs a bisect and percentiles stay cheap; a second,
coarse set of buckets is kept for the Prometheus histograms of GET /metrics (server/prometheus.py).
"""

from __future__ import annotations

import bisect
import math
import time
from collections import Counter, deque
from typing import Final

RATE_WINDOW_S: Final = 60  # rates are averaged over the last minute (or since start, if shorter)
PROJECT_RATES_MAX: Final = 4096  # per-project rate windows kept before idle ones are dropped


def _bucket_bounds() -> list[float]:
    bounds, value = [], 0.01  # 10 µs, in ms
    while value < 120_000:
        bounds.append(value)
        value *= 1.04
    return bounds


BOUNDS: Final = _bucket_bounds()
# Coarse buckets (ms) kept beside the fine ones for GET /metrics (server/prometheus.py): Prometheus
# needs cumulative counts at stable, round bounds, which the fine log buckets (0.01 x 1.04^k) do not
# fall on. Recording costs one more bisect over these 17 bounds.
EXPORT_BOUNDS_MS: Final = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0,
                           1_000.0, 2_500.0, 5_000.0, 10_000.0, 30_000.0)  # fmt: skip


class Histogram:
    """Latency histogram in milliseconds with fixed log buckets."""

    def __init__(self) -> None:
        self.counts = [0] * (len(BOUNDS) + 1)
        self.export_counts = [0] * (len(EXPORT_BOUNDS_MS) + 1)  # the last one: above 30 s
        self.total = 0
        self.sum = 0.0
        self.max = 0.0

    def record(self, ms: float) -> None:
        self.counts[bisect.bisect_left(BOUNDS, ms)] += 1
        self.export_counts[bisect.bisect_left(EXPORT_BOUNDS_MS, ms)] += 1
        self.total += 1
        self.sum += ms
        if ms > self.max:
            self.max = ms

    def percentile(self, p: float) -> float | None:
        if not self.total:
            return None
        rank = math.ceil(self.total * p / 100)
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return round(BOUNDS[min(index, len(BOUNDS) - 1)], 3)
        return round(self.max, 3)

    def mean(self) -> float | None:
        return round(self.sum / self.total, 3) if self.total else None


class RateWindow:
    """Counts per second over the last RATE_WINDOW_S seconds, in one-second slots.

    Until the window has existed RATE_WINDOW_S seconds the average is over the time it has
    existed (at least one second): a minute-long average in the first seconds of a process would
    count seconds in which it was not running and understate the rate.
    """

    def __init__(self, started: float | None = None) -> None:
        self.slots: deque[list[int]] = deque()  # [second, count]
        self.started = started if started is not None else time.monotonic()

    def add(self, count: int, now: float | None = None) -> None:
        second = int(now if now is not None else time.monotonic())
        if self.slots and self.slots[-1][0] == second:
            self.slots[-1][1] += count
        else:
            self.slots.append([second, count])
        while self.slots and self.slots[0][0] <= second - RATE_WINDOW_S:
            self.slots.popleft()

    def per_second(self, now: float | None = None) -> float:
        at = now if now is not None else time.monotonic()
        second = int(at)
        total = sum(count for slot, count in self.slots if slot > second - RATE_WINDOW_S)
        span = min(float(RATE_WINDOW_S), max(1.0, at - self.started))
        return round(total / span, 2)


class Metrics:
    """Counters of one process. Drops are counted by reason and shown, never silent."""

    def __init__(self) -> None:
        self.started_at = time.time()
        self.ingest_rate = RateWindow()  # events accepted (stored + duplicates) per second
        self.project_rates: dict[str, RateWindow] = {}  # the same, per project (SSE stats)
        self.response_rate = RateWindow()  # HTTP answers per second (streams are not answers)
        self.events_stored = 0
        self.events_duplicate = 0
        self.events_rejected = 0
        self.processing = Histogram()  # receipt -> stored and processed, per request (ms)
        self.responses = Histogram()  # every HTTP answer (ms)
        self.requests = 0
        self.responses_4xx = 0
        self.responses_5xx = 0
        self.statuses: dict[int, int] = {}  # HTTP status -> answers (GET /metrics); a dict: cheaper than a Counter
        self.processing_failures = 0
        self.drops: Counter[str] = Counter()  # reason -> count (slow_subscriber, ...)
        self.open_websockets = 0
        self.open_sse = 0
        self.ws_refused = 0

    def count_ingest(self, stored: int, duplicate: int, rejected: int, elapsed_ms: float) -> None:
        self.events_stored += stored
        self.events_duplicate += duplicate
        self.events_rejected += rejected
        self.ingest_rate.add(stored + duplicate)
        self.processing.record(elapsed_ms)

    def count_project_ingest(self, project: str, accepted: int) -> None:
        """The events of one request accepted for ``project`` (stored + duplicates), for its rate."""
        if accepted:
            self._project_window(project).add(accepted)

    def _project_window(self, project: str) -> RateWindow:
        window = self.project_rates.get(project)
        if window is None:
            if len(self.project_rates) >= PROJECT_RATES_MAX:  # drop the projects idle for a minute
                now = int(time.monotonic())
                for idle in [p for p, w in self.project_rates.items() if not w.slots or w.slots[-1][0] <= now - RATE_WINDOW_S]:
                    del self.project_rates[idle]
            # counted over the process's life so far, like the process-wide rate
            window = self.project_rates[project] = RateWindow(started=self.ingest_rate.started)
        return window

    def project_rate(self, project: str) -> float:
        """Events per second of one project (stored + duplicates) over the last minute, on this node."""
        window = self.project_rates.get(project)
        return window.per_second() if window is not None else 0.0

    def count_response(self, status: int, elapsed_ms: float) -> None:
        self.requests += 1
        self.response_rate.add(1)
        self.responses.record(elapsed_ms)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status >= 500:
            self.responses_5xx += 1
        elif status >= 400:
            self.responses_4xx += 1

    def error_rate(self) -> float:
        """Share of answers that were server errors (5xx); client mistakes are not our errors."""
        return round(self.responses_5xx / self.requests, 6) if self.requests else 0.0
