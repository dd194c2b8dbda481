"""Adaptive sampling (seed 000 "Performance Issues: Adaptive Sampling"): when a node is overloaded,
a project with ``adaptive_sampling`` on keeps only 1 in KEEP_ONE_IN of its low-value events; the
others are answered ``stored: false`` with ``dropped: {"reason": "sampling"}`` and counted as
``drops["sampling"]``. Sans-IO: the caller passes the clock and the pipeline's own counters.

Low value: an event whose name is in LOW_VALUE_EVENTS, or whose payload says ``"priority": "low"``
(top level or in eventData). Everything else is always kept, under any load.

Overloaded: over the last completed window (WINDOW_S), the mean ingest latency (receipt -> stored
and processed, the ``processing`` histogram of actors/metrics.py) was above the threshold
(``--sampling-latency-ms``, default 250), or the pipeline refused a request for full actor
mailboxes (``drops["backpressure_503"]`` grew: the mailboxes were filling faster than the actors
empty them). The state holds until the next window is judged, so it follows the load within a
second or two and costs nothing per event when a project has sampling off.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from protocol.privacy import DROP_SAMPLING, Dropped
from protocol.record import Event

KEEP_ONE_IN: Final = 10
WINDOW_S: Final = 1.0
DEFAULT_LATENCY_MS: Final = 250.0
LOW_VALUE_EVENTS: Final = frozenset({
    "mouse_move", "mousemove", "scroll", "heartbeat", "visibility_change", "hover", "mouse_hover",
    "resize", "ping",
})  # fmt: skip
_SAMPLED: Final = Dropped(reason=DROP_SAMPLING, detail=f"low-value event sampled 1 in {KEEP_ONE_IN} under overload")
_PRIORITY_LOW: Final = b'"priority"'


class _Priority(msgspec.Struct):
    priority: Any = None
    eventData: Any = None


_priority: Final = msgspec.json.Decoder(_Priority).decode


def is_low_value(event: Event) -> bool:
    if event.name in LOW_VALUE_EVENTS:
        return True
    raw = bytes(event.payload)
    if _PRIORITY_LOW not in raw:  # most payloads: no decode at all
        return False
    try:
        fields = _priority(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False
    inner = fields.eventData.get("priority") if isinstance(fields.eventData, dict) else None
    return fields.priority == "low" or inner == "low"


class AdaptiveSampler:
    """Judges overload once per window from cumulative counters, and samples low-value events."""

    def __init__(self, *, latency_ms: float = DEFAULT_LATENCY_MS, keep_one_in: int = KEEP_ONE_IN,
                 window_s: float = WINDOW_S) -> None:  # fmt: skip
        if keep_one_in < 1:
            raise ValueError(f"keep_one_in must be >= 1, got {keep_one_in!r}")
        self.latency_ms = latency_ms
        self.keep_one_in = keep_one_in
        self.window_s = window_s
        self.overloaded = False
        self._judged_at: float | None = None
        self._seen = (0, 0.0, 0)  # the counters at the last judgement: requests, latency sum, refusals
        self._counts: dict[str, int] = {}  # project -> low-value events seen while overloaded

    def observe(self, now: float, requests: int, latency_sum_ms: float, refusals: int) -> bool:
        """Feed the cumulative counters; judge the window that ended, if one did. Returns overloaded."""
        if self._judged_at is None:
            self._judged_at, self._seen = now, (requests, latency_sum_ms, refusals)
            return self.overloaded
        if now - self._judged_at < self.window_s:
            return self.overloaded
        done = requests - self._seen[0]
        latency = (latency_sum_ms - self._seen[1]) / done if done > 0 else 0.0
        self.overloaded = (done > 0 and latency > self.latency_ms) or refusals > self._seen[2]
        self._judged_at, self._seen = now, (requests, latency_sum_ms, refusals)
        if not self.overloaded:
            self._counts.clear()
        return self.overloaded

    def decide(self, project: str, events: list[Event]) -> list[Dropped | None] | None:
        """Per event: None (keep) or why it is dropped; None for the whole list when nothing is."""
        if not self.overloaded:
            return None
        out: list[Dropped | None] | None = None
        seen = self._counts.get(project, 0)
        for index, event in enumerate(events):
            if not is_low_value(event):
                continue
            seen += 1
            if seen % self.keep_one_in == 1 or self.keep_one_in == 1:
                continue  # the first of every keep_one_in is kept
            if out is None:
                out = [None] * len(events)
            out[index] = _SAMPLED
        self._counts[project] = seen % self.keep_one_in
        return out
