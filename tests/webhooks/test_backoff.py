"""The retry schedule: first retry within 1-2 s, exponential with full jitter up to an hour apart,
and nothing past the retry window."""

from __future__ import annotations

import random

from server.webhooks import backoff

DAY_MS = 86_400_000


def test_the_first_retry_comes_within_one_to_two_seconds() -> None:
    rng = random.Random(1)
    delays = [backoff.retry_delay_ms(1, rng) for _ in range(1000)]
    assert 1000 <= min(delays) and max(delays) <= 2000
    assert max(delays) - min(delays) > 900  # jittered over the whole second, not one fixed value


def test_delays_double_until_the_cap() -> None:
    rng = random.Random(2)
    for attempts in range(1, 40):
        ceiling = backoff.FLOOR_MS + min(backoff.CAP_MS, backoff.BASE_MS * 2 ** (attempts - 1))
        delays = [backoff.retry_delay_ms(attempts, rng) for _ in range(200)]
        assert backoff.FLOOR_MS <= min(delays) and max(delays) <= ceiling
    assert max(backoff.retry_delay_ms(30, rng) for _ in range(200)) > backoff.CAP_MS / 2  # reaches the cap's range


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    rng = random.Random(3)
    assert backoff.retry_delay_ms(1, rng, retry_after_ms=30_000) == 30_000
    assert backoff.retry_delay_ms(1, rng, retry_after_ms=10 * DAY_MS) == backoff.CAP_MS


def test_a_day_long_outage_is_retried_for_a_day_then_the_delivery_is_dead() -> None:
    rng = random.Random(4)
    now, attempts = 0, 1
    times = []
    while (due := backoff.next_attempt(now, 0, attempts, DAY_MS, rng)) is not None:
        times.append(due)
        now, attempts = due, attempts + 1
    assert times[-1] <= DAY_MS
    assert DAY_MS - times[-1] <= backoff.FLOOR_MS + backoff.CAP_MS  # it kept trying until near the end
    assert 20 < len(times) < 100
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert max(gaps) <= backoff.FLOOR_MS + backoff.CAP_MS


def test_the_window_counts_from_the_replay() -> None:
    assert backoff.next_attempt(10 * DAY_MS, 0, 5, DAY_MS) is None
    assert backoff.next_attempt(10 * DAY_MS, 10 * DAY_MS - 1000, 5, DAY_MS) is not None
