"""The client's counters: every event is accounted for (delivered, or dropped for a named reason)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True)
class Stats:
    """A snapshot from ``Client.stats()``. Once the queue is empty and nothing is in flight,
    ``tracked == delivered + rejected + dropped_queue_full + dropped_refused
    + dropped_retries_exhausted + dropped_at_close``."""

    tracked: int = 0  # events track() accepted into the queue
    queued: int = 0  # events waiting in the queue now
    in_flight: int = 0  # events in the batch being sent now
    delivered: int = 0  # events Pulse acknowledged (stored now, or already stored: a retried batch)
    duplicates: int = 0  # of delivered: Pulse already had them (same eventId), so not stored again
    rejected: int = 0  # events Pulse refused one by one inside an accepted batch (answer's "rejected")
    dropped_queue_full: int = 0  # oldest events dropped to make room when the queue was full
    dropped_refused: int = 0  # events of batches refused with a 4xx that retrying cannot fix
    dropped_retries_exhausted: int = 0  # events of batches that failed max_retries + 1 times
    dropped_at_close: int = 0  # events not delivered by close()'s deadline
    dropped_closed: int = 0  # track() calls after close(): not queued (not counted in tracked)
    batches: int = 0  # batches Pulse acknowledged
    requests: int = 0  # POSTs made (batches plus retries)
    retries: int = 0  # POSTs that repeated an earlier one
    user_id_errors: int = 0  # the middleware's user_id callable raised (the request was tracked without it)
    middleware_errors: int = 0  # the middleware could not build or queue a request's event (logged)
    last_error: str | None = None  # the latest failure's reason, for a health page


_COUNTERS = tuple(f.name for f in fields(Stats) if f.name not in ("queued", "in_flight", "last_error"))


class Counters:
    """Thread-safe counters behind ``Stats``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(_COUNTERS, 0)
        self._last_error: str | None = None

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._values[name] += n

    def error(self, reason: str) -> None:
        with self._lock:
            self._last_error = reason

    def snapshot(self, queued: int, in_flight: int) -> Stats:
        with self._lock:
            return Stats(queued=queued, in_flight=in_flight, last_error=self._last_error, **self._values)
