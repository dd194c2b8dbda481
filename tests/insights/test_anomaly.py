"""The anomaly detector on generated series with known injected anomalies, and the live watcher."""

from __future__ import annotations

import math

import msgspec
import pytest
import trio

from actors.anomaly_watch import AnomalyWatch
from actors.hub import KIND_BEHAVIORAL, KIND_EVENT, Hub, Subscriber
from actors.insights.anomaly import (
    ERROR_RATE,
    METRICS,
    RELEARN_AFTER,
    RESPONSE_TIME,
    VOLUME,
    WARMUP_MINUTES,
    Minute,
    ServiceDetector,
    detect,
)
from actors.metrics import Metrics
from storage.base import MinuteRow

from .anomaly_series import generate, score

SEEDS = range(4)


def _found(seed: int) -> tuple[set[tuple[str, str, int]], set[tuple[str, str, int]]]:
    g = generate(seed)
    judged = detect(g.series, since=g.start, until=g.start + g.minutes - 1)
    return {(s, f.metric, f.minute) for s, f in judged.findings}, g.truth


def test_precision_and_recall_on_injected_anomalies() -> None:
    found: set[tuple[int, str, str, int]] = set()
    truth: set[tuple[int, str, str, int]] = set()
    for seed in SEEDS:
        f, t = _found(seed)
        found |= {(seed, *x) for x in f}
        truth |= {(seed, *x) for x in t}
    total = score(found, truth)
    print(f"\nall metrics: precision {total.precision:.3f} recall {total.recall:.3f} F1 {total.f1:.3f} "
          f"({total.true_positives} of {total.injected} injected minutes found, {total.found} flagged)")  # fmt: skip
    for metric in METRICS:
        s = score({x for x in found if x[2] == metric}, {x for x in truth if x[2] == metric})
        print(f"{metric:>12}: precision {s.precision:.3f} recall {s.recall:.3f} F1 {s.f1:.3f} ({s.injected} injected)")
        assert s.precision >= 0.85 and s.recall >= 0.85, (metric, s)
    assert total.precision >= 0.9 and total.recall >= 0.9 and total.f1 >= 0.9, total


def test_judgements_are_deterministic() -> None:
    assert _found(7) == _found(7)


def steady(minutes: range, count: int = 100, rt: float = 100.0, errors: int = 1) -> list[Minute]:
    """Traffic with a small deterministic wobble (no randomness needed)."""
    out = []
    for t in minutes:
        wobble = math.sin(t * 1.7)
        n = count + int(5 * wobble)
        out.append(Minute(t, n, n, errors + (t % 2), n, n * rt * (1 + 0.05 * wobble)))
    return out


def test_warm_up_is_respected() -> None:
    minutes = steady(range(1000, 1100))
    # an enormous spike inside the warm-up: not judged (and, median-based, it does not skew the start)
    minutes[5] = Minute(1005, 1000, 1000, 900, 1000, 1000 * 5000.0)
    detector = ServiceDetector()
    findings = list(detector.feed(minutes))
    assert findings == []
    assert detector.warming == dict.fromkeys(METRICS, WARMUP_MINUTES)
    assert detector.judged == dict.fromkeys(METRICS, 100 - WARMUP_MINUTES)
    # the same spike after the warm-up is found in all three metrics
    minutes[50] = Minute(1050, 1000, 1000, 900, 1000, 1000 * 5000.0)
    found = {(f.metric, f.minute) for f in ServiceDetector().feed(minutes)}
    assert found == {(RESPONSE_TIME, 1050), (ERROR_RATE, 1050), (VOLUME, 1050)}


def test_zero_volume_outage_is_detected() -> None:
    minutes = [m for m in steady(range(0, 120)) if not 60 <= m.minute < 64]  # no events for 4 minutes
    findings = list(ServiceDetector().feed(minutes, until=119))
    assert [(f.metric, f.minute, f.value) for f in findings] == [(VOLUME, t, 0.0) for t in range(60, 64)]
    assert all(f.score <= -2.5 and 90 <= f.expected <= 110 for f in findings)
    # and when the service stops for good: every minute through ``until`` is a zero-volume minute
    tail = list(ServiceDetector().feed(steady(range(0, 60)), until=65))
    assert [f.minute for f in tail] == list(range(60, 66))


def test_small_counts_are_not_anomalies() -> None:
    """A service with a couple of events a minute: quiet minutes and single errors are normal."""
    minutes = []
    for t in range(600):
        n = (0, 1, 2, 3, 2, 4, 1)[t % 7]
        if n:
            minutes.append(Minute(t, n, n, 1 if t % 11 == 0 else 0, n, n * 80.0))
    assert list(ServiceDetector().feed(minutes, until=599)) == []


def test_error_rate_needs_care_for_small_counts() -> None:
    # 12 events a minute, ~1 error in 12 now and then: normal; 6 errors of 12: an incident
    minutes = [Minute(t, 12, 12, 1 if t % 5 == 0 else 0, 12, 12 * 50.0) for t in range(100)]
    assert list(ServiceDetector().feed(minutes)) == []
    minutes[70] = Minute(70, 12, 12, 6, 12, 12 * 50.0)
    found = list(ServiceDetector().feed(minutes))
    assert [(f.metric, f.minute, round(f.value, 3)) for f in found] == [(ERROR_RATE, 70, 0.5)]


def test_a_lasting_shift_becomes_the_new_normal() -> None:
    minutes = steady(range(0, 400))
    shifted = [msgspec.structs.replace(m, rt_sum=m.rt_sum * 3) if m.minute >= 100 else m for m in minutes]
    found = [f for f in ServiceDetector().feed(shifted) if f.metric == RESPONSE_TIME]
    assert [f.minute for f in found] == list(range(100, 100 + RELEARN_AFTER))


def test_minutes_must_come_in_order() -> None:
    detector = ServiceDetector()
    detector.observe(Minute(10, 1))
    with pytest.raises(ValueError, match="not after"):
        detector.observe(Minute(10, 1))


# the live watcher ---------------------------------------------------------------------------------
class SeriesStore:
    """Just minute_series, over rows kept in memory."""

    def __init__(self, rows: list[MinuteRow]) -> None:
        self.rows = rows
        self.reads: list[tuple[int, int]] = []

    async def minute_series(
        self, project: str, *, since_ms: int, until_ms: int, service_name: str | None = None
    ) -> list[MinuteRow]:
        await trio.lowlevel.checkpoint()
        lo, hi = since_ms // 60_000, until_ms // 60_000
        self.reads.append((lo, hi))
        return sorted((r for r in self.rows if lo <= r.minute <= hi), key=lambda r: (r.service_name or "", r.minute))


def rows_of(service: str, minutes: list[Minute]) -> list[MinuteRow]:
    return [MinuteRow(service, m.minute, m.count, m.with_status, m.errors, m.with_rt, m.rt_sum) for m in minutes]


async def test_live_watcher_pushes_each_closed_minute_to_project_wide_subscribers() -> None:
    base = 29_000_000
    history = steady(range(base - 120, base))
    store = SeriesStore(rows_of("pay", history) + rows_of("auth", steady(range(base - 120, base))))
    hub = Hub(Metrics())
    now = [(base + 1) * 60_000 + 6_000]  # minute base has closed 6 s ago
    watch = AnomalyWatch(store, hub, settle_s=5, wall_ms=lambda: now[0])  # type: ignore[arg-type]
    wide = Subscriber("p1", [KIND_EVENT])
    only_auth = Subscriber("p1", [KIND_EVENT])
    only_auth.service_name = "auth"
    behavioral = Subscriber("p1", [KIND_BEHAVIORAL])
    session = Subscriber("p1", [KIND_BEHAVIORAL], session_id="s1")
    nothing_yet = Subscriber("p1", [])  # a seed-000 socket before its connection message
    for sub in (wide, only_auth, behavioral, session, nothing_yet):
        hub.subscribe(sub)
    # minute base: pay is 4x slower
    store.rows += rows_of("pay", [Minute(base, 100, 100, 1, 100, 100 * 400.0)])
    store.rows += rows_of("auth", steady(range(base, base + 1)))
    await watch.tick()
    assert store.reads == [(base - 180, base)]  # cold start: history plus the closed minute
    message = msgspec.json.decode(wide.frames.receive_nowait().data)
    assert message == {"type": "anomaly", "serviceName": "pay", "metric": "responseTime",
                       "minute": "2025-02-19T21:20:00.000Z", "value": 400.0, "expected": message["expected"],
                       "score": message["score"]}  # fmt: skip
    assert 90 < message["expected"] < 110 and message["score"] > 2
    assert msgspec.json.decode(behavioral.frames.receive_nowait().data)["type"] == "anomaly"
    for sub in (only_auth, session, nothing_yet):
        with pytest.raises(trio.WouldBlock):
            sub.frames.receive_nowait()
    await watch.tick()  # nothing new closed: no read
    assert len(store.reads) == 1
    # the next minute: pay stops (zero volume), read incrementally
    now[0] += 60_000
    store.rows += rows_of("auth", steady(range(base + 1, base + 2)))
    await watch.tick()
    assert store.reads[-1] == (base + 1, base + 1)
    message = msgspec.json.decode(wide.frames.receive_nowait().data)
    assert (message["serviceName"], message["metric"], message["value"]) == ("pay", "volume", 0.0)
    with pytest.raises(trio.WouldBlock):
        wide.frames.receive_nowait()
    # no subscribers left: the project's state goes
    for sub in (wide, only_auth, behavioral, session, nothing_yet):
        hub.unsubscribe(sub)
    await watch.tick()
    assert watch.projects == {}
