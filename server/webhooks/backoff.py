"""When a failed delivery is tried again: exponential backoff with full jitter above a floor.

Attempt n (1 = the first) failed: the next is due after FLOOR_MS + uniform(0, min(CAP_MS,
BASE_MS * 2 ** (n - 1))). The floor keeps the first retry within 1-2 s (never a retry storm at
0 s); the jitter spreads receivers' recoveries; the cap keeps a day-long outage probed at least
hourly. Past the retry window (counted from the delivery's creation or last replay) it is dead.
"""

from __future__ import annotations

import random
from typing import Final

FLOOR_MS: Final = 1_000
BASE_MS: Final = 1_000
CAP_MS: Final = 3_600_000  # one hour
DEFAULT_WINDOW_MS: Final = 24 * 3_600_000
MAX_RETRY_AFTER_MS: Final = CAP_MS  # a receiver's Retry-After is honoured up to this


def retry_delay_ms(attempts: int, rng: random.Random | None = None, retry_after_ms: int | None = None) -> int:
    """The wait after ``attempts`` failed attempts (the receiver's Retry-After, capped, when longer)."""
    spread = min(CAP_MS, BASE_MS * 2 ** min(max(attempts - 1, 0), 32))
    delay = FLOOR_MS + int((rng or random).uniform(0, spread))
    if retry_after_ms is not None:
        delay = max(delay, min(retry_after_ms, MAX_RETRY_AFTER_MS))
    return delay


def next_attempt(now_ms: int, retry_from_ms: int, attempts: int, window_ms: int,
                 rng: random.Random | None = None, retry_after_ms: int | None = None) -> int | None:
    """When to try again, or None: the retry window is spent (the delivery is dead)."""
    due = now_ms + retry_delay_ms(attempts, rng, retry_after_ms)
    return None if due > retry_from_ms + window_ms else due
