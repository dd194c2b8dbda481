"""Seed 004's MLFeatureSet, one row per stored event, computed in one pass over events in time order.

Sans-IO: events in, rows out; no trio, no store. ``FeatureExtractor.row`` takes the events of an
export oldest first (``timestamp``, then ``seq``) and keeps only what the next row needs:

- per session: first and last event time and the count so far (position, time since the last
  event, session duration so far);
- per correlation id: the chain length so far;
- per service and per event name: a trailing window of one-minute buckets (the event's own UTC
  minute and the 59 before it) for the "last hour" features.

Every feature of a row is computed from that event and the events BEFORE it in the export (never a
later one), so a row is what could have been known when the event happened: no look-ahead leaks
into training data. State is bounded: each kind of key lives in an LRU of a fixed size (see the
``MAX_*`` constants). A key pushed out and seen again starts over as new; ``evictions`` counts how
often that happened, per kind. Since the export runs in time order, what gets pushed out is the key
idle the longest (a session idle while ``MAX_SESSIONS`` others had events is almost surely over).

All times are UTC. Column names are the seed's (``MLFeatureSet`` and ``EventFeatureExtractor``);
the seed's fields that cannot be computed from the stored events in one pass are not exported
(docs/export.md says which and why).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import Any, Final, Literal

import msgspec

from protocol.record import Event

MAX_SESSIONS: Final = 50_000  # sessions whose running state is kept (~300 B each)
MAX_CORRELATIONS: Final = 50_000  # correlation ids whose chain length is kept (~200 B each)
MAX_WINDOW_KEYS: Final = 10_000  # services and event names with a trailing-hour window (<= 60 buckets each)
WINDOW_MINUTES: Final = 60  # the "last hour": the event's own minute and the 59 before it
BUSINESS_HOURS: Final = (9, 17)  # inclusive, UTC, as the seed's ``hour.between(9, 17)``
MINUTE_MS: Final = 60_000
HOUR_MS: Final = 3_600_000
DAY_MS: Final = 86_400_000
_EPOCH_WEEKDAY: Final = 3  # 1970-01-01 was a Thursday (Monday = 0)

Kind = Literal["str", "int", "float", "bool", "timestamp"]


class Column(msgspec.Struct, frozen=True):
    name: str
    kind: Kind
    nullable: bool
    meaning: str


COLUMNS: Final[tuple[Column, ...]] = (
    Column("event_id", "str", False, "the stored event's id"),
    Column("timestamp", "timestamp", False, "event time, ISO 8601 UTC with milliseconds (parquet: timestamp[ms, UTC])"),
    Column("user_id", "str", True, "the event's user id"),
    Column("session_id", "str", True, "the event's session id"),
    Column("correlation_id", "str", True, "the event's correlation id"),
    Column("event_name", "str", False, "the event name (seed 004) or event type (seed 000)"),
    Column("service_name", "str", True, "the service that sent it"),
    Column("user_role", "str", True, "payload.userRole (or payload.metadata.userRole)"),
    Column("hour_of_day", "int", False, "0-23, UTC"),
    Column("day_of_week", "int", False, "0 = Monday ... 6 = Sunday, UTC"),
    Column("is_weekend", "bool", False, "Saturday or Sunday, UTC"),
    Column("is_business_hours", "bool", False, "hour_of_day between 9 and 17 inclusive, UTC"),
    Column("status_code", "int", True, "the HTTP status the event reported"),
    Column("is_error", "bool", False, "status_code >= 400 (false without a status code)"),
    Column("response_time_ms", "float", True, "the response time the event reported"),
    Column("event_sequence_position", "int", True, "1-based position of the event in its session, in time order"),
    Column("events_per_session", "int", True, "the session's events so far, this one included"),
    Column("time_since_last_event", "float", True, "seconds since the session's previous event (null for its first)"),
    Column("session_duration", "float", True, "minutes from the session's first event to this one"),
    Column("correlation_chain_length", "int", True, "events so far with this correlation id, this one included"),
    Column("event_frequency", "int", False, "events with this event name in the trailing hour, this one included"),
    Column("request_volume", "int", True, "the service's events in the trailing hour, this one included"),
    Column("avg_response_time", "float", True, "the service's mean response time (ms) in the trailing hour"),
    Column("error_count_last_hour", "int", True, "the service's events with status_code >= 400 in the trailing hour"),
    Column("error_rate", "float", True, "percentage of the service's events with a status code in the trailing hour that are errors"),
    Column("success_rate", "float", True, "100 - error_rate"),
)
COLUMN_NAMES: Final = tuple(c.name for c in COLUMNS)


class FeatureRow(msgspec.Struct, frozen=True):
    """One event's features, in COLUMNS order (encoded as a JSON object with every key, nulls included)."""

    event_id: str
    timestamp: str
    user_id: str | None
    session_id: str | None
    correlation_id: str | None
    event_name: str
    service_name: str | None
    user_role: str | None
    hour_of_day: int
    day_of_week: int
    is_weekend: bool
    is_business_hours: bool
    status_code: int | None
    is_error: bool
    response_time_ms: float | None
    event_sequence_position: int | None
    events_per_session: int | None
    time_since_last_event: float | None
    session_duration: float | None
    correlation_chain_length: int | None
    event_frequency: int
    request_volume: int | None
    avg_response_time: float | None
    error_count_last_hour: int | None
    error_rate: float | None
    success_rate: float | None


assert FeatureRow.__struct_fields__ == COLUMN_NAMES, "FeatureRow and COLUMNS must list the same columns in order"


class _RoleFields(msgspec.Struct):
    userRole: Any = None
    metadata: Any = None


_role_decoder: Final = msgspec.json.Decoder(_RoleFields)


def user_role(payload: bytes) -> str | None:
    """``userRole`` of a stored payload; the seed's own client example sends it in ``metadata``."""
    try:
        fields = _role_decoder.decode(payload)
    except msgspec.DecodeError:  # ValidationError included: a payload that is not a JSON object
        return None
    role = fields.userRole
    if role is None and isinstance(fields.metadata, dict):
        role = fields.metadata.get("userRole")
    return role if isinstance(role, str) else None


def iso_utc(ms: int) -> str:
    """Unix ms -> ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (the form every Pulse answer uses)."""
    # Hand-rolled: datetime.strftime per row costs more than the rest of the row's features.
    days, rest = divmod(ms, DAY_MS)
    year, month, day = _civil(days)
    hour, rest = divmod(rest, HOUR_MS)
    minute, rest = divmod(rest, MINUTE_MS)
    second, milli = divmod(rest, 1000)
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}.{milli:03d}Z"


def _civil(days: int) -> tuple[int, int, int]:
    """Days since 1970-01-01 -> (year, month, day), proleptic Gregorian (H. Hinnant's algorithm)."""
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


class _Window:
    """Counts of one key over the trailing WINDOW_MINUTES one-minute buckets (events come in time order)."""

    __slots__ = ("buckets", "count", "errors", "with_status", "rt_sum", "rt_count")

    def __init__(self) -> None:
        # [minute, count, errors, with_status, rt_sum, rt_count] per minute that had events
        self.buckets: deque[list[Any]] = deque()
        self.count = 0
        self.errors = 0
        self.with_status = 0
        self.rt_sum = 0.0
        self.rt_count = 0

    def add(self, minute: int, status: int | None, response_time: float | None) -> None:
        buckets = self.buckets
        oldest = minute - WINDOW_MINUTES + 1
        while buckets and buckets[0][0] < oldest:
            _, n, errors, with_status, rt_sum, rt_count = buckets.popleft()
            self.count -= n
            self.errors -= errors
            self.with_status -= with_status
            self.rt_sum -= rt_sum
            self.rt_count -= rt_count
        if buckets and buckets[-1][0] >= minute:  # same minute (or, out of order, kept in the newest)
            bucket = buckets[-1]
        else:
            bucket = [minute, 0, 0, 0, 0.0, 0]
            buckets.append(bucket)
        bucket[1] += 1
        self.count += 1
        if status is not None:
            bucket[3] += 1
            self.with_status += 1
            if status >= 400:
                bucket[2] += 1
                self.errors += 1
        if response_time is not None:
            bucket[4] += response_time
            bucket[5] += 1
            self.rt_sum += response_time
            self.rt_count += 1
        if not self.rt_count:
            self.rt_sum = 0.0  # no float residue once the window holds no response time


class Evictions(msgspec.Struct):
    sessions: int = 0
    correlations: int = 0
    services: int = 0
    event_names: int = 0


class FeatureExtractor:
    """Running state of one export: ``row(event)`` for each event, oldest first."""

    def __init__(
        self,
        *,
        max_sessions: int = MAX_SESSIONS,
        max_correlations: int = MAX_CORRELATIONS,
        max_window_keys: int = MAX_WINDOW_KEYS,
    ) -> None:
        self._max_sessions = max_sessions
        self._max_correlations = max_correlations
        self._max_window_keys = max_window_keys
        self._sessions: OrderedDict[str, tuple[int, int, int]] = OrderedDict()  # id -> (first, last, count)
        self._correlations: OrderedDict[str, int] = OrderedDict()  # id -> events so far
        self._services: OrderedDict[str, _Window] = OrderedDict()
        self._names: OrderedDict[str, _Window] = OrderedDict()
        self.evictions = Evictions()
        self._day: int | None = None  # the UTC day of the last row, and its "YYYY-MM-DDT"
        self._date = ""

    def rows(self, events: Iterable[Event]) -> list[FeatureRow]:
        return [self.row(event) for event in events]

    def row(self, event: Event) -> FeatureRow:
        # The hot loop of an export (every exported event): state lookups are inlined.
        ts = event.timestamp
        days, in_day = divmod(ts, DAY_MS)
        if days != self._day:
            self._day = days
            year, month, day = _civil(days)
            self._date = f"{year:04d}-{month:02d}-{day:02d}T"
        hour, rest = divmod(in_day, HOUR_MS)
        minute_of_hour, rest = divmod(rest, MINUTE_MS)
        stamp = f"{self._date}{hour:02d}:{minute_of_hour:02d}:{rest // 1000:02d}.{rest % 1000:03d}Z"
        weekday = (days + _EPOCH_WEEKDAY) % 7
        status = event.status_code
        response_time = event.response_time_ms
        minute = ts // MINUTE_MS

        position = since_last = duration = None
        session_id = event.session_id
        if session_id is not None:
            # (first ms, last ms, events so far): a tuple of ints, which the GC stops tracking, so
            # a full state adds nothing to the collector's passes over the heap.
            sessions = self._sessions
            session = sessions.get(session_id)
            if session is None:
                first = last = ts
                position = 1
                sessions[session_id] = (ts, ts, 1)
                if len(sessions) > self._max_sessions:
                    sessions.popitem(last=False)
                    self.evictions.sessions += 1
            else:
                first, last, count = session
                position = count + 1
                since_last = (ts - last) / 1000 if ts > last else 0.0
                sessions[session_id] = (first, max(ts, last), position)
                sessions.move_to_end(session_id)
            duration = (ts - first) / MINUTE_MS if ts > first else 0.0

        chain = None
        correlation_id = event.correlation_id
        if correlation_id is not None:
            chains = self._correlations
            chain = chains.get(correlation_id, 0) + 1
            chains[correlation_id] = chain
            if chain == 1:
                if len(chains) > self._max_correlations:
                    chains.popitem(last=False)
                    self.evictions.correlations += 1
            else:
                chains.move_to_end(correlation_id)

        name_window = self._window(self._names, event.name)
        name_window.add(minute, status, response_time)

        volume = avg_rt = error_count = error_rate = success_rate = None
        if event.service_name is not None:
            window = self._window(self._services, event.service_name)
            window.add(minute, status, response_time)
            volume = window.count
            error_count = window.errors
            if window.rt_count:
                avg_rt = round(window.rt_sum / window.rt_count, 3)
            if window.with_status:
                error_rate = round(window.errors * 100 / window.with_status, 3)
                success_rate = round(100 - error_rate, 3)

        return FeatureRow(
            event.id,
            stamp,
            event.user_id,
            session_id,
            correlation_id,
            event.name,
            event.service_name,
            user_role(event.payload),
            hour,
            weekday,
            weekday >= 5,
            BUSINESS_HOURS[0] <= hour <= BUSINESS_HOURS[1],
            status,
            status is not None and status >= 400,
            response_time,
            position,
            position,
            since_last,
            duration,
            chain,
            name_window.count,
            volume,
            avg_rt,
            error_count,
            error_rate,
            success_rate,
        )

    def _window(self, windows: OrderedDict[str, _Window], key: str) -> _Window:
        window = windows.get(key)
        if window is None:
            window = windows[key] = _Window()
            if len(windows) > self._max_window_keys:
                windows.popitem(last=False)
                if windows is self._services:
                    self.evictions.services += 1
                else:
                    self.evictions.event_names += 1
        else:
            windows.move_to_end(key)
        return window
