"""Wire types of anomalies: GET /api/events/anomalies and the ``anomaly`` stream message.

An anomaly is one metric of one service in one minute whose value is far from what the service's
adaptive baseline expected (actors/insights/anomaly.py; docs/anomalies.md).
"""

from __future__ import annotations

from typing import Literal

import msgspec

Metric = Literal["responseTime", "errorRate", "volume"]


class Anomaly(msgspec.Struct, kw_only=True):
    serviceName: str | None  # None: events sent without a serviceName
    metric: Metric
    minute: str  # ISO 8601 (UTC) start of the minute
    value: float  # responseTime: mean ms of the minute; errorRate: errors / events with a status; volume: events
    expected: float  # the baseline's value for that minute, in the same unit
    score: float  # robust z: (value - expected) / scale; negative for a drop in volume


class AnomalyBasis(msgspec.Struct, kw_only=True, rename={"from_": "from"}):
    """What an answer is based on."""

    from_: str  # ISO 8601: the first minute judged
    to: str  # ISO 8601: the last minute judged (closed minutes only)
    services: int  # services with events in the range or the warm-up before it
    minutesJudged: dict[str, int]  # per metric: service-minutes with a judgement
    minutesWarmingUp: dict[str, int]  # per metric: service-minutes in the range spent warming up
    warmupMinutes: int  # observations of a metric before its first judgement
    historyMinutes: int  # minutes read before ``from`` to settle the baseline
    thresholds: dict[str, float]  # per metric: |score| at or above which a minute is anomalous


class AnomaliesResponse(msgspec.Struct, kw_only=True):
    anomalies: list[Anomaly]  # by service, then minute, then metric
    basedOn: AnomalyBasis


class AnomalyMessage(msgspec.Struct, kw_only=True, tag="anomaly", tag_field="type"):
    """Pushed on the streams (both families) a few seconds after a minute closes."""

    serviceName: str | None
    metric: Metric
    minute: str
    value: float
    expected: float
    score: float
