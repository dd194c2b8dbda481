"""When to retry a batch, and how long to wait first: exponential backoff with full jitter, or the
server's ``Retry-After`` when it gave one."""

from __future__ import annotations

import random
import time
from email.utils import parsedate_to_datetime
from typing import Final

# Statuses that say "not now" rather than "never": timeout, rate limit, and every server error.
RETRYABLE_4XX: Final = frozenset({408, 429})


def is_retryable(status: int | None) -> bool:
    """True for a network failure (no status), 408, 429 and 5xx; any other refusal would fail again."""
    return status is None or status in RETRYABLE_4XX or status >= 500


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP date. None when absent or
    unreadable (the caller then uses its own backoff); a date in the past means "now" (0)."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 and seconds == seconds and seconds != float("inf") else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; parsedate gives naive for "-0000"
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(attempt: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Full jitter (uniform over [0, min(cap, base * 2**attempt)]): many clients that failed at the same
    moment do not come back at the same moment. ``attempt`` counts from 0 for the first retry."""
    ceiling = min(cap, base * (2 ** min(attempt, 62)))
    return (rng or random).uniform(0.0, ceiling)


def retry_delay(
    attempt: int, retry_after: float | None, *, base: float, cap: float, retry_after_max: float
) -> float:
    """The wait before retry number ``attempt``: the server's Retry-After (up to ``retry_after_max``)
    when it sent one, else the jittered backoff."""
    if retry_after is not None:
        return min(retry_after, retry_after_max)
    return backoff_delay(attempt, base=base, cap=cap)
