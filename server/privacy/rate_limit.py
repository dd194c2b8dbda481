"""Per-project rate limits on the ingest routes: a token bucket per API key and one per client IP.

A project's policy (protocol/policy.py) sets ``rate_limit`` (requests per second per API key, the
bucket holding ``burst()`` tokens) and ``ip_rate_limit`` (requests per second per client IP, the
bucket holding max(1, that rate)). A request takes one token of each bucket that applies; when one
is empty, nothing is taken and the request is refused with 429 and ``Retry-After`` = the seconds
until that bucket holds a token again (whole, at least 1), before its body is decoded: nothing of it
is stored. A project without limits costs one dict lookup (its policy) per request.

Buckets live in each node's memory. In a cluster the kernel spreads connections over the workers,
so each node refills at rate / live nodes (as the approval limits do): the cluster as a whole
never admits more than the configured rate, and a client whose requests all reach one node gets
its share of it (see docs/privacy.md). The bucket map is bounded: past MAX_BUCKETS the buckets
unused for a minute go first, else the oldest-created quarter (an evicted bucket comes back full).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Final

from protocol.policy import ProjectPolicy

MAX_BUCKETS: Final = 100_000  # keys + client IPs tracked per node
IDLE_S: Final = 60.0  # a bucket unused this long goes first when the map is full
EVICT_SHARE: Final = 4  # when no bucket is idle, the oldest-created 1/EVICT_SHARE go


class RateLimited(Exception):
    """The request exceeded a rate limit: answered 429 with Retry-After, nothing stored."""

    def __init__(self, reason: str, retry_after: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _Bucket:
    __slots__ = ("tokens", "at")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at


class RateLimiter:
    """Token buckets keyed (project, "key" | "ip", value). Sans-IO: the clock is passed in."""

    def __init__(self, *, nodes: Callable[[], int] = lambda: 1, max_buckets: int = MAX_BUCKETS) -> None:
        self.nodes = nodes  # live nodes of the cluster: each refills at rate / nodes
        self.max_buckets = max_buckets
        self._buckets: dict[tuple[str, str, str], _Bucket] = {}
        self.refused = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def admit(self, project: str, policy: ProjectPolicy, api_key: str | None, ip: str | None,
              now: float | None = None) -> None:  # fmt: skip
        """Take a token of each bucket that applies, or raise RateLimited (and take none)."""
        at = time.monotonic() if now is None else now
        share = 1.0 / max(1, self.nodes())
        takes: list[tuple[_Bucket, float]] = []
        if policy.rate_limit is not None:
            rate = policy.rate_limit * share
            bucket = self._fill(("key", project, api_key or ""), rate, max(1.0, policy.burst() * share), at)
            if bucket.tokens < 1.0:
                self._refuse(f"rate limit of {policy.rate_limit:g} requests/s per api key exceeded", bucket, rate)
            takes.append((bucket, rate))
        if policy.ip_rate_limit is not None and ip is not None:
            rate = policy.ip_rate_limit * share
            bucket = self._fill(("ip", project, ip), rate, max(1.0, policy.ip_rate_limit * share), at)
            if bucket.tokens < 1.0:
                self._refuse(f"rate limit of {policy.ip_rate_limit:g} requests/s per client ip exceeded", bucket, rate)
            takes.append((bucket, rate))
        for bucket, _ in takes:
            bucket.tokens -= 1.0

    def _refuse(self, reason: str, bucket: _Bucket, rate: float) -> None:
        self.refused += 1
        raise RateLimited(reason, max(1, math.ceil((1.0 - bucket.tokens) / rate)))

    def _fill(self, key: tuple[str, str, str], rate: float, burst: float, at: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_buckets:
                self._evict(at)
            bucket = self._buckets[key] = _Bucket(burst, at)
            return bucket
        # a policy change applies at once: the bucket never holds more than the current burst
        bucket.tokens = min(burst, bucket.tokens + (at - bucket.at) * rate)
        bucket.at = at
        return bucket

    def _evict(self, at: float) -> None:
        """Make room: drop the buckets unused for IDLE_S, else the oldest-created quarter."""
        buckets = self._buckets
        idle = [key for key, bucket in buckets.items() if at - bucket.at >= IDLE_S]
        if not idle:
            idle = list(buckets)[: max(1, len(buckets) // EVICT_SHARE)]
        for key in idle:
            del buckets[key]
        self.evicted += len(idle)
