"""A generator of realistic per-minute service series with injected anomalies whose minutes are
known: the ground truth that the anomaly detector's precision and recall are measured against.

Each service has a daily traffic cycle with gamma-Poisson (overdispersed) counts, a response time
that drifts slowly and is the mean of that minute's log-normal samples, and a small error rate that
wobbles from minute to minute. Incidents are injected at random minutes (never in the first two
hours, never overlapping): response-time spikes (x2-3.5 for 1-5 minutes), error bursts (25-60 %
errors for 1-5 minutes), traffic spikes (x3-5 for 1-5 minutes) and, on services with enough
traffic for a quiet minute to mean something, outages (no events for 2-10 minutes).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from actors.insights.anomaly import (
    ERROR_RATE,
    MIN_RT_SAMPLES,
    MIN_STATUS_SAMPLES,
    RESPONSE_TIME,
    VOLUME,
    Minute,
)

DAY_MINUTES = 1_440


class ServiceShape(NamedTuple):
    name: str
    rate: float  # mean events per minute over a day
    rt_ms: float  # median response time
    rt_sigma: float  # log-normal sigma of one response time
    error_rate: float
    outages: bool  # quiet minutes are evidence only with enough traffic


SHAPES = (
    ServiceShape("api-gateway", 150.0, 80.0, 0.6, 0.01, True),
    ServiceShape("checkout", 40.0, 250.0, 0.8, 0.02, True),
    ServiceShape("search", 8.0, 40.0, 0.5, 0.03, False),  # small counts
)

Truth = set[tuple[str, str, int]]  # (service, metric, minute)


class Generated(NamedTuple):
    series: dict[str, list[Minute]]
    truth: Truth
    start: int  # first minute
    minutes: int


def generate(seed: int, *, minutes: int = 3 * DAY_MINUTES, start: int = 29_000_000) -> Generated:
    rng = np.random.default_rng(seed)
    series: dict[str, list[Minute]] = {}
    truth: Truth = set()
    for shape in SHAPES:
        incidents = _incidents(rng, shape, minutes)
        phase = rng.uniform(0, 2 * math.pi)
        rows: list[Minute] = []
        for t in range(minutes):
            kind, factor = incidents.get(t, ("", 1.0))
            daily = 1 + 0.6 * math.sin(2 * math.pi * t / DAY_MINUTES + phase)
            rate = shape.rate * daily * rng.gamma(100.0, 1 / 100.0)  # +-10 % beyond Poisson
            if kind == VOLUME:
                rate *= factor
            count = int(rng.poisson(rate))
            drift = 1 + 0.15 * math.sin(2 * math.pi * t / (1.3 * DAY_MINUTES) + phase) + 0.1 * (daily - 1)
            rt_median = shape.rt_ms * drift * (factor if kind == RESPONSE_TIME else 1.0)
            p = min(shape.error_rate * rng.gamma(10.0, 1 / 10.0), 1.0)
            if kind == ERROR_RATE:
                p = factor
            errors = int(rng.binomial(count, p)) if count else 0
            rt_sum = float(rng.lognormal(math.log(rt_median), shape.rt_sigma, count).sum()) if count else 0.0
            if count:
                rows.append(Minute(start + t, count, count, errors, count, rt_sum))
            if kind == VOLUME or (kind == RESPONSE_TIME and count >= MIN_RT_SAMPLES) or (kind == ERROR_RATE and count >= MIN_STATUS_SAMPLES):
                truth.add((shape.name, kind, start + t))
        series[shape.name] = rows
    return Generated(series, truth, start, minutes)


def _incidents(rng: np.random.Generator, shape: ServiceShape, minutes: int) -> dict[int, tuple[str, float]]:
    """minute offset -> (metric, factor): ~one incident every 3 hours, in turn of each metric."""
    kinds = [RESPONSE_TIME, ERROR_RATE, VOLUME]
    out: dict[int, tuple[str, float]] = {}
    t = 120
    i = 0
    while True:
        t += int(rng.integers(120, 240))
        length = int(rng.integers(1, 6))
        if t + 10 >= minutes:
            return out
        kind = kinds[i % 3]
        i += 1
        if kind == RESPONSE_TIME:
            factor = float(rng.uniform(2.0, 3.5))
        elif kind == ERROR_RATE:
            factor = float(rng.uniform(0.25, 0.6))
        elif shape.outages and rng.random() < 0.5:
            factor, length = 0.0, int(rng.integers(2, 11))
        else:
            factor = float(rng.uniform(3.0, 5.0))
        for k in range(length):
            out[t + k] = (kind, factor)


class Score(NamedTuple):
    precision: float
    recall: float
    f1: float
    true_positives: int
    found: int
    injected: int


def score(found: Truth, truth: Truth) -> Score:
    hits = len(found & truth)
    precision = hits / len(found) if found else 1.0
    recall = hits / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Score(precision, recall, f1, hits, len(found), len(truth))
