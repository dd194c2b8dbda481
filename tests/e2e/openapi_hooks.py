"""schemathesis hooks for the contract run (tests/e2e/test_openapi_contract.py): the rules between
two parameters, which OpenAPI cannot state, and nothing else.

Each parameter's own rules (formats, bounds, enumerations, lengths) are in /openapi.json and checked
both ways by schemathesis. A parameter schema cannot say "from not after to" or "sessionId or
userId": schemathesis would then call a request valid that the server rightly refuses with a 400
naming the field (documented in the operation's summary). Only such positive (schema-valid) cases
are left out here; the negative ones all still run. Load with SCHEMATHESIS_HOOKS=tests.e2e.openapi_hooks.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

import schemathesis

from protocol.errors import InvalidInput
from server.anomalies import DEFAULT_RANGE_MS, MAX_RANGE_MS
from server.compat import posthog, segment
from server.params import time_param


def _query(case: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in (case.query or {}).items() if v is not None}


def _anomaly_range_ok(query: dict[str, str]) -> bool:
    """GET /api/events/anomalies: from <= to (default now) and at most 31 days apart."""
    try:
        to = time_param(query, "to")
        start = time_param(query, "from")
    except InvalidInput:
        return True  # a bad value on its own: the document's to judge
    until = time.time_ns() // 1_000_000 if to is None else to
    since = until - DEFAULT_RANGE_MS if start is None else start
    # a minute of slack either way: "now" here and on the server are read at different instants
    return since <= until - 60_000 and until - since <= MAX_RANGE_MS - 60_000


def _date_range_ok(query: dict[str, str]) -> bool:
    """GET /api/v1/behavioral/analytics/historical: dateRange=first,last with last not before first."""
    days = [d.strip() for d in query.get("dateRange", "").split(",") if d.strip()]
    try:
        parsed = [datetime.date.fromisoformat(d) for d in days]
    except ValueError:
        return True
    return len(parsed) < 2 or parsed[0] <= parsed[1]


CROSS_PARAMETER_RULES = {
    ("GET", "/api/events/anomalies"): _anomaly_range_ok,
    ("GET", "/api/v1/behavioral/analytics/historical"): _date_range_ok,
    # the patterns of a session, or of a user's latest session: one of the two is needed; with both,
    # the session must be that user's (a 400 naming userId otherwise), which only the data knows
    ("GET", "/api/v1/behavioral/patterns"): lambda q: bool(q.get("sessionId")) != bool(q.get("userId")),
    # a cursor is opaque: only a nextCursor the server returned is one (the stateful phase follows
    # the document's link from nextCursor); a generated string is rightly a 400
    ("GET", "/api/events"): lambda q: not q.get("cursor"),
}


# A batch is judged event by event: the valid events are stored and the others listed under
# `rejected` in a 200 (seeds 000/004, Segment, PostHog; a batch with no valid event is a 400). A
# schema cannot say "accepted in part", so an invalid batch is not a refusal to expect: negative
# cases of these operations are left out (their refusals are tested in test_api_validation.py and
# the compat tests); their valid cases, and every other check, still run.
BATCHES = {"/api/events/track/batch", "/api/v1/behavioral/batch", *(p for p, call in segment.PATHS.items() if call is None),
           *posthog.PATHS}


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    meta = case.meta
    if meta is None:
        return True
    if not meta.generation.mode.is_positive:
        return case.operation.path not in BATCHES
    rule = CROSS_PARAMETER_RULES.get((case.method.upper(), case.operation.path))
    return rule is None or bool(rule(_query(case)))
