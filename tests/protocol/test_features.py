"""protocol.features: the MLFeatureSet row of one event from the events before it (sans-IO)."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from protocol.features import COLUMN_NAMES, WINDOW_MINUTES, FeatureExtractor, FeatureRow, iso_utc, user_role
from protocol.record import SOURCE_EVENTS, Event

MINUTE = 60_000
T0 = 1_709_913_600_000  # 2024-03-08T16:00:00Z, a Friday
_ids = itertools.count(1)


def event(ts: int, *, name: str = "tick", payload: dict[str, Any] | None = None, **fields: Any) -> Event:
    n = next(_ids)
    return Event(
        id=f"evt_{n}", project="prj", name=name, source=SOURCE_EVENTS, timestamp=ts, received_at=ts, seq=n,
        payload=msgspec.Raw(msgspec.json.encode(payload or {})), **fields,
    )  # fmt: skip


def test_the_row_struct_lists_the_columns_in_order() -> None:
    assert FeatureRow.__struct_fields__ == COLUMN_NAMES
    assert COLUMN_NAMES[:3] == ("event_id", "timestamp", "user_id")


@pytest.mark.parametrize("seed", range(3))
def test_time_features_are_utc_calendar_facts(seed: int) -> None:
    rng = random.Random(seed)
    extractor = FeatureExtractor()
    for _ in range(2000):
        ts = rng.randrange(-2_000_000_000_000, 4_000_000_000_000)  # 1906 .. 2096, leap years included
        when = datetime.fromtimestamp(ts / 1000, UTC)
        row = extractor.row(event(ts))
        assert row.timestamp == when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" == iso_utc(ts)
        assert (row.hour_of_day, row.day_of_week) == (when.hour, when.weekday())
        assert row.is_weekend is (when.weekday() >= 5)
        assert row.is_business_hours is (9 <= when.hour <= 17)


def test_session_sequence_features() -> None:
    extractor = FeatureExtractor()
    a1 = extractor.row(event(T0, session_id="a", status_code=200))
    b1 = extractor.row(event(T0 + 1_000, session_id="b"))
    a2 = extractor.row(event(T0 + 1_500, session_id="a", status_code=404))
    a3 = extractor.row(event(T0 + 91_500, session_id="a"))
    lone = extractor.row(event(T0 + 92_000))
    assert [(r.event_sequence_position, r.events_per_session) for r in (a1, b1, a2, a3)] == [(1, 1), (1, 1), (2, 2), (3, 3)]
    assert [r.time_since_last_event for r in (a1, b1, a2, a3)] == [None, None, 1.5, 90.0]
    assert [r.session_duration for r in (a1, a2, a3)] == [0.0, 1.5 / 60, 91.5 / 60]
    assert [r.is_error for r in (a1, a2, a3)] == [False, True, False]
    assert (a3.status_code, lone.session_id, lone.event_sequence_position, lone.time_since_last_event) == (None, None, None, None)


def test_correlation_chain_counts_the_events_so_far() -> None:
    extractor = FeatureExtractor()
    rows = [extractor.row(event(T0 + i, correlation_id=c)) for i, c in enumerate(["x", "y", "x", None, "x"])]
    assert [r.correlation_chain_length for r in rows] == [1, 1, 2, None, 3]


def test_trailing_hour_is_the_events_minute_and_the_59_before() -> None:
    extractor = FeatureExtractor()
    first = extractor.row(event(T0, service_name="api", status_code=500, response_time_ms=100.0))
    assert (first.request_volume, first.error_count_last_hour, first.error_rate, first.success_rate) == (1, 1, 100.0, 0.0)
    inside = extractor.row(event(T0 + (WINDOW_MINUTES - 1) * MINUTE + 59_999, service_name="api", status_code=200))
    assert (inside.request_volume, inside.error_count_last_hour, inside.error_rate) == (2, 1, 50.0)
    assert inside.avg_response_time == 100.0
    past = extractor.row(event(T0 + WINDOW_MINUTES * MINUTE, service_name="api"))  # minute 0 left the window
    assert (past.request_volume, past.error_count_last_hour, past.avg_response_time, past.error_rate) == (2, 0, None, 0.0)
    other = extractor.row(event(T0 + WINDOW_MINUTES * MINUTE, service_name="web"))
    assert (other.request_volume, other.error_rate, other.success_rate) == (1, None, None)  # no status: no rate
    assert (other.event_frequency, past.event_frequency) == (3, 2)  # by event name, whatever the service
    no_service = extractor.row(event(T0 + WINDOW_MINUTES * MINUTE))
    assert (no_service.request_volume, no_service.avg_response_time, no_service.event_frequency) == (None, None, 4)


def test_no_row_depends_on_a_later_event() -> None:
    rng = random.Random(4)
    events = [
        event(T0 + i * rng.randrange(1, 5_000), name=rng.choice("ab"), session_id=rng.choice(["s1", "s2", None]),
              service_name=rng.choice(["api", None]), status_code=rng.choice([200, 500, None]),
              response_time_ms=rng.choice([None, 12.5]), correlation_id=rng.choice(["c", None]))
        for i in range(300)
    ]  # fmt: skip
    events.sort(key=lambda e: (e.timestamp, e.seq))
    whole = FeatureExtractor().rows(events)
    assert FeatureExtractor().rows(events[:150]) == whole[:150]


def test_state_is_bounded_and_an_evicted_session_starts_over() -> None:
    extractor = FeatureExtractor(max_sessions=2, max_correlations=1, max_window_keys=1)
    rows = [extractor.row(event(T0 + i, session_id=s)) for i, s in enumerate(["a", "b", "a", "c", "a", "b"])]
    # "a" was used more recently than "b" when "c" came: "b" went, and comes back as new
    assert [r.event_sequence_position for r in rows] == [1, 1, 2, 1, 3, 1]
    assert extractor.evictions.sessions == 2  # "b" for "c", then "c" for "b"
    assert len(extractor._sessions) == 2
    extractor.row(event(T0 + 10, correlation_id="x", service_name="s1"))
    extractor.row(event(T0 + 11, correlation_id="y", service_name="s2", name="other"))
    again = extractor.row(event(T0 + 12, correlation_id="x", service_name="s1"))
    assert (again.correlation_chain_length, again.request_volume) == (1, 1)
    assert extractor.evictions.correlations == 2 and extractor.evictions.services == 2


@pytest.mark.parametrize(
    ("payload", "role"),
    [
        (b'{"userRole": "admin", "metadata": {"userRole": "other"}}', "admin"),
        (b'{"metadata": {"userRole": "premium-user", "page": "/"}}', "premium-user"),
        (b'{"userRole": 3}', None),
        (b'{"metadata": [1, 2]}', None),
        (b"[1, 2]", None),
        (b"{}", None),
    ],
)
def test_user_role_from_the_payload(payload: bytes, role: str | None) -> None:
    assert user_role(payload) == role
    assert FeatureExtractor().row(event(T0, payload=msgspec.json.decode(payload))).user_role == role
