"""Anomalies per service and minute: response time, error rate and volume against a robust,
adaptive baseline (sans-IO: minutes in, findings out; no trio, no clock, no randomness).

Seed 004 sketches "2σ / 3σ / 2.5σ" thresholds on response time, error rate and volume. Done with a
plain mean and standard deviation per minute that idea fires ~30 times a day per service on noise
alone and is blind to an outage of a small service, so each metric here has:

- a **scale it is judged on** where its noise is about even: the log of the minute's mean response
  time (slowdowns multiply), the error rate itself, and the Anscombe transform 2·sqrt(count + 3/8)
  of the volume (Poisson noise ~1 at any level, so a drop to zero and a spike weigh alike);
- a **baseline** that adapts: an exponentially weighted level (ALPHA per minute, ~14 minutes of
  half-life) and a spread that tracks the SPREAD_QUANTILE quantile of the absolute residuals,
  started from the median and quantile of the first WARMUP_MINUTES observations (robust
  exponential smoothing after Gelper, Fried and Croux, 2010). Minutes judged anomalous move
  neither; a metric anomalous for RELEARN_AFTER minutes in a row is a new normal (it warms up again);
- a **noise model** for one minute given its sample size: sd/sqrt(n) for a mean of n response
  times, the binomial sqrt(p(1-p)/n) for an error rate (p at least ERR_P_FLOOR), Poisson for volume;
  times the dispersion learned from the data (never below 1 for counts: real traffic is noisier
  than Poisson, never quieter);
- a **score**: the robust z = (value - expected) / scale, where the scale is NOISE_MARGIN times the
  noise's standard deviation, and at least a materiality floor (RT_REL_FLOOR of the expected
  response time, ERR_ABS_FLOOR of error rate, VOL_REL_FLOOR of the expected volume): a 3 % wobble
  of a very precise mean is not an incident;
- a **judgement**: anomalous when the score reaches the seed's threshold in the direction that
  matters (slower; more errors; volume either way, so an outage to zero counts), with enough
  evidence in the minute (MIN_RT_SAMPLES response times, MIN_STATUS_SAMPLES status codes and
  MIN_ERRORS errors, a volume change of MIN_VOLUME_DELTA events).

NOISE_MARGIN and the floors were tuned on generated series with injected incidents
(tests/insights/anomaly_series.py): precision and recall both above 0.9 (docs/anomalies.md).

``ServiceDetector`` judges one service's minutes fed in order (gaps are zero-volume minutes);
``detect`` judges a stored per-minute series (GET /api/events/anomalies); the live detector
(actors/anomaly_watch.py) keeps one ServiceDetector per service and feeds it each closed minute.
docs/anomalies.md explains every number.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Final, NamedTuple

import msgspec

RESPONSE_TIME: Final = "responseTime"
ERROR_RATE: Final = "errorRate"
VOLUME: Final = "volume"
METRICS: Final = (RESPONSE_TIME, ERROR_RATE, VOLUME)
THRESHOLDS: Final = {RESPONSE_TIME: 2.0, ERROR_RATE: 3.0, VOLUME: 2.5}  # seed 004's, in robust z

WARMUP_MINUTES: Final = 20  # observations of a metric before its first judgement
HISTORY_MINUTES: Final = 180  # read before a judged range, so its first minute has a settled baseline
ALPHA: Final = 0.05  # weight of a new minute in the level and spread (half-life ~14 minutes)
CLIP: Final = 3.0  # a residual moves the level by at most this many scales
RELEARN_AFTER: Final = 60  # minutes anomalous in a row after which the level is a new normal
SPREAD_QUANTILE: Final = 0.9  # the spread tracks this quantile of the absolute residuals
SPREAD_TO_SD: Final = 1.6449  # that quantile of |N(0, 1)|: spread / SPREAD_TO_SD is a standard deviation
NOISE_MARGIN: Final = 1.75  # sigma = this many standard deviations of the measured noise
SPREAD_STEP: Final = 0.05  # the spread moves by up to 5 % per minute
SPREAD_UP: Final = math.exp(SPREAD_STEP * SPREAD_QUANTILE)
SPREAD_DOWN: Final = math.exp(-SPREAD_STEP * (1 - SPREAD_QUANTILE))

MIN_RT_SAMPLES: Final = 5  # response times needed in a minute to judge its mean
RT_REL_FLOOR: Final = 0.15  # the scale of response time is at least 15 % of the expected value
RT_LOG_FLOOR: Final = math.log1p(RT_REL_FLOOR)
RT_MIN_MS: Final = 0.01  # a mean response time below this is taken as this (log scale)
ERR_ABS_FLOOR: Final = 0.02  # the scale of error rate is at least 2 percentage points
ERR_P_FLOOR: Final = 0.005  # the binomial sd is computed with p at least 0.5 %
MIN_STATUS_SAMPLES: Final = 10  # status codes needed in a minute to judge its error rate
MIN_ERRORS: Final = 3  # errors needed in a minute for an error-rate anomaly
VOL_REL_FLOOR: Final = 0.15  # the scale of volume is at least 15 % of the expected volume
MIN_VOLUME_DELTA: Final = 5  # events per minute a volume anomaly must differ by


class Minute(msgspec.Struct, frozen=True, array_like=True):
    """One service's figures for one minute (storage's MinuteRow without the service)."""

    minute: int  # unix ms // 60_000
    count: int = 0
    with_status: int = 0
    errors: int = 0
    with_rt: int = 0
    rt_sum: float = 0.0


class Finding(NamedTuple):
    """An anomalous minute of one metric: the value seen, what the baseline expected, the score."""

    metric: str
    minute: int
    value: float
    expected: float
    score: float  # robust z: (value - expected) / scale; negative for a volume drop


class _Baseline:
    """Level and spread of one metric, and its warm-up observations until it has enough."""

    __slots__ = ("level", "spread", "warm", "streak")

    def __init__(self) -> None:
        self.level = 0.0
        self.spread = 0.0  # quantile of the absolute residuals, in the metric's unit of noise (_scale)
        self.warm: list[tuple[float, float]] | None = []  # (value, sample size) while warming up
        self.streak = 0  # anomalous minutes in a row

    def relearn(self) -> None:
        self.warm, self.streak = [], 0


class ServiceDetector:
    """The three baselines of one service. Feed every minute in order with ``observe`` (or
    ``feed``, which fills gaps with zero-volume minutes); each returns the anomalous findings."""

    __slots__ = ("rt", "err", "vol", "last_minute", "judged", "warming")

    def __init__(self) -> None:
        self.rt = _Baseline()
        self.err = _Baseline()
        self.vol = _Baseline()
        self.last_minute: int | None = None
        self.judged = dict.fromkeys(METRICS, 0)  # minutes judged per metric (warm-up excluded)
        self.warming = dict.fromkeys(METRICS, 0)  # observations spent warming up per metric

    def feed(self, minutes: Iterable[Minute], *, until: int | None = None) -> Iterator[Finding]:
        """``minutes`` in ascending order; minutes between them (and after the last through
        ``until``) had no events: zero volume."""
        for m in minutes:
            if self.last_minute is not None:
                yield from self._zeros(self.last_minute + 1, m.minute)
            yield from self.observe(m)
        if until is not None and self.last_minute is not None:
            yield from self._zeros(self.last_minute + 1, until + 1)

    def _zeros(self, start: int, stop: int) -> Iterator[Finding]:
        for minute in range(start, stop):
            yield from self.observe(Minute(minute))

    def observe(self, m: Minute) -> list[Finding]:
        if self.last_minute is not None and m.minute <= self.last_minute:
            raise ValueError(f"minute {m.minute!r} is not after {self.last_minute!r}")
        self.last_minute = m.minute
        found: list[Finding] = []
        if m.with_rt >= MIN_RT_SAMPLES:
            mean = max(m.rt_sum / m.with_rt, RT_MIN_MS)  # judged on a log scale: slowdowns multiply
            self._judge(RESPONSE_TIME, self.rt, m.minute, math.log(mean), m.with_rt, m.errors, found)
        if m.with_status >= MIN_STATUS_SAMPLES:
            self._judge(ERROR_RATE, self.err, m.minute, m.errors / m.with_status, m.with_status, m.errors, found)
        self._judge(VOLUME, self.vol, m.minute, _anscombe(m.count), 1, m.errors, found)
        return found

    # one metric ----------------------------------------------------------------------------------
    def _judge(
        self, metric: str, b: _Baseline, minute: int, x: float, n: int, errors: int, found: list[Finding]
    ) -> None:
        if b.warm is not None:
            b.warm.append((x, n))
            self.warming[metric] += 1
            if len(b.warm) >= WARMUP_MINUTES:
                _start(metric, b, b.warm)
                b.warm = None
            return
        self.judged[metric] += 1
        scale = _scale(metric, b, n)
        z = (x - b.level) / scale
        value, expected = _natural(metric, x), _natural(metric, b.level)
        if _anomalous(metric, z, value - expected, errors):
            found.append(Finding(metric, minute, value, expected, z))
            b.streak += 1
            if b.streak >= RELEARN_AFTER:
                b.relearn()  # a new normal (a deploy, a moved workload): warm up on it again
            return
        b.streak = 0
        _update(metric, b, x, n, scale)


def _scale(metric: str, b: _Baseline, n: int) -> float:
    """The scale of one minute's value: the noise model for its sample size, times the learned
    dispersion, with the metric's materiality floor."""
    if metric == RESPONSE_TIME:  # log scale; spread: of one response time around the minute's mean
        return max(NOISE_MARGIN * b.spread / SPREAD_TO_SD / math.sqrt(n), RT_LOG_FLOOR)
    if metric == ERROR_RATE:  # spread: dispersion factor over the binomial sd
        p = max(b.level, ERR_P_FLOOR)
        return max(NOISE_MARGIN * max(b.spread / SPREAD_TO_SD, 1.0) * math.sqrt(p * (1 - p) / n), ERR_ABS_FLOOR)
    # volume, on the Anscombe scale (Poisson sd 1); spread: dispersion factor over it
    expected = _natural(VOLUME, b.level)
    return max(NOISE_MARGIN * max(b.spread / SPREAD_TO_SD, 1.0), VOL_REL_FLOOR * math.sqrt(max(expected, 1.0)))


def _unit_factor(metric: str, b: _Baseline, n: int) -> float:
    """What turns |value - level| into the unit the spread is kept in."""
    if metric == RESPONSE_TIME:
        return math.sqrt(n)
    if metric == ERROR_RATE:
        p = max(b.level, ERR_P_FLOOR)
        return 1 / math.sqrt(p * (1 - p) / n)
    return 1.0


def _anomalous(metric: str, z: float, delta: float, errors: int) -> bool:
    threshold = THRESHOLDS[metric]
    if metric == RESPONSE_TIME:
        return z >= threshold  # slower; faster is not an incident
    if metric == ERROR_RATE:
        return z >= threshold and errors >= MIN_ERRORS
    return abs(z) >= threshold and abs(delta) >= MIN_VOLUME_DELTA


def _start(metric: str, b: _Baseline, warm: list[tuple[float, float]]) -> None:
    """Level and spread from the warm-up: a median and a quantile, so an incident inside it barely
    skews them."""
    if metric == ERROR_RATE:  # pooled rate: a median of small-count rates is mostly 0
        total = sum(n for _, n in warm)
        b.level = sum(x * n for x, n in warm) / total
    else:
        b.level = _median([x for x, _ in warm])
    units = sorted(abs(x - b.level) * _unit_factor(metric, b, int(n)) for x, n in warm)
    b.spread = max(units[min(int(SPREAD_QUANTILE * len(units)), len(units) - 1)], 1e-6)


def _update(metric: str, b: _Baseline, x: float, n: int, scale: float) -> None:
    """Move the level and spread towards a normal minute (robust: residuals clipped at CLIP)."""
    step = max(-CLIP * scale, min(CLIP * scale, x - b.level))
    unit = abs(x - b.level) * _unit_factor(metric, b, n)
    b.level += ALPHA * step
    if metric == ERROR_RATE:
        b.level = min(max(b.level, 0.0), 1.0)
    elif metric == VOLUME:
        b.level = max(b.level, _anscombe(0))
    # The spread tracks a quantile of the absolute residuals: up a step when a residual is above it,
    # down a smaller one when below, so it settles where 1 - SPREAD_QUANTILE of them are above. An
    # outlier counts as one step however far out it is.
    b.spread *= SPREAD_UP if unit > b.spread else SPREAD_DOWN


def _anscombe(count: int) -> float:
    """Counts on a scale where Poisson noise has a standard deviation of about 1 whatever the
    level (Anscombe, 1948), so a drop to zero and a spike are judged alike at 5 or 5,000 a minute."""
    return 2 * math.sqrt(count + 0.375)


def _natural(metric: str, x: float) -> float:
    """A value on the scale it is judged on, back in its own unit."""
    if metric == RESPONSE_TIME:
        return math.exp(x)
    if metric == VOLUME:
        return max((x / 2) ** 2 - 0.375, 0.0)
    return x


def _median(values: list[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


class Judged(NamedTuple):
    findings: list[tuple[str, Finding]]  # (service, finding), by service then minute then metric
    judged: dict[str, int]  # minutes judged per metric, all services
    warming: dict[str, int]  # observations spent warming up inside the judged range


def detect(series: dict[str, list[Minute]], *, since: int, until: int) -> Judged:
    """Judge minutes ``since``..``until`` (inclusive) of each service's ascending series, which may
    start earlier (HISTORY_MINUTES of warm-up). A service's series starts at its first minute with
    events; minutes without events after it are zero-volume minutes, through ``until``."""
    findings: list[tuple[str, Finding]] = []
    judged = dict.fromkeys(METRICS, 0)
    warming = dict.fromkeys(METRICS, 0)
    for service in sorted(series):
        detector = ServiceDetector()
        minutes = series[service]
        before = [m for m in minutes if m.minute < since]
        inside = [m for m in minutes if since <= m.minute <= until]
        for _ in detector.feed(before, until=since - 1 if before else None):
            pass  # the warm-up window: not judged in the answer
        start_judged, start_warming = dict(detector.judged), dict(detector.warming)
        for finding in detector.feed(inside, until=until if (before or inside) else None):
            findings.append((service, finding))
        for metric in METRICS:
            judged[metric] += detector.judged[metric] - start_judged[metric]
            warming[metric] += detector.warming[metric] - start_warming[metric]
    return Judged(findings, judged, warming)
