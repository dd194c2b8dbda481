"""What every ingest route does before the pipeline: authenticate and apply the project's rate
limits (before the body is read or decoded), then adaptive sampling of the decoded events.

``admitted`` replaces ``pulse.access`` on the ingest routes. Per request, a project without limits
costs its policy's dict lookup; without adaptive sampling, ``sample`` costs the same lookup.
"""

from __future__ import annotations

import time
from typing import Any

from protocol.privacy import DROP_RATE_LIMITED, DROP_SAMPLING, Dropped
from protocol.record import Event
from server.auth import Access, key_from
from server.context import Pulse
from server.http import HotRequest
from server.privacy.client_ip import client_ip
from server.privacy.rate_limit import RateLimited

__all__ = ["RateLimited", "admitted", "has_gpc", "limit", "sample"]


def limit(pulse: Pulse, req: HotRequest, access: Access, api_key: str | None) -> None:
    """Raise RateLimited when the request is over one of its project's limits (counted)."""
    project = access.project.id
    policy = pulse.policies.get(project)
    if policy.rate_limit is None and policy.ip_rate_limit is None:
        return
    ip = client_ip(req, pulse.settings) if policy.ip_rate_limit is not None else None
    try:
        pulse.limits.admit(project, policy, api_key or project, ip)
    except RateLimited:
        pulse.metrics.drops[DROP_RATE_LIMITED] += 1
        raise


def has_gpc(req: HotRequest) -> bool:
    """The request carries the Global Privacy Control (``Sec-GPC: 1``): no marketing, no advertising."""
    return req.headers.get("sec-gpc") == "1"


async def admitted(pulse: Pulse, req: HotRequest) -> Access:
    """The request's project access, once its rate limits allow it (RateLimited otherwise)."""
    api_key = key_from(req.headers, req.query)
    access = await pulse.access(req)
    limit(pulse, req, access, api_key)
    return access


def sample(pulse: Pulse, events: list[Event]) -> list[Dropped | None] | None:
    """Adaptive sampling of one request's events (one project's): per event None (keep) or why it
    is dropped; None when nothing is (always, unless the project samples and the node is overloaded)."""
    if not events or not pulse.policies.get(events[0].project).adaptive_sampling:
        return None
    metrics = pulse.metrics
    sampler = pulse.sampler
    sampler.observe(time.monotonic(), metrics.processing.total, metrics.processing.sum,
                    metrics.drops["backpressure_503"])  # fmt: skip
    decisions = sampler.decide(events[0].project, events)
    if decisions is not None:
        metrics.drops[DROP_SAMPLING] += sum(1 for decision in decisions if decision is not None)
    return decisions


def retry_after_header(err: RateLimited) -> list[tuple[bytes, bytes]]:
    return [(b"retry-after", str(err.retry_after).encode())]


def rate_limited_body(err: RateLimited) -> dict[str, Any]:
    return {"success": False, "error": {"code": "rate_limited", "reason": err.reason, "retryAfter": err.retry_after}}
