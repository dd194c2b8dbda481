"""schemathesis hooks for the contract run (tests/e2e/test_openapi_contract.py): the rules between
two parameters or two body fields, which OpenAPI cannot state, and the isolation of the triggers and
webhooks the run creates.

Each parameter's own rules (formats, bounds, enumerations, lengths) are in /openapi.json and checked
both ways by schemathesis. A schema cannot say "from not after to", "sessionId or userId", "endDate
after startDate": schemathesis would then call a request valid that the server rightly refuses with a
400 naming the field (documented in the operation's summary). Only such positive (schema-valid) cases
are left out here (filter_case); the negative ones all still run. An A/B test's split (one share per
variant, summing to 100) is too unlikely to hold by chance, so its positive cases are made to keep it
(map_case), and so are unique variant names. Load with SCHEMATHESIS_HOOKS=tests.e2e.openapi_hooks.
"""

from __future__ import annotations

import datetime
import time
import zoneinfo
from typing import Any, Final

import schemathesis

from actors.automation.abtest import CONTROL
from actors.automation.definition import parse_instant
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


def _schedule_ok(body: Any) -> bool:
    """A trigger's schedule: endDate after startDate (each in the schedule's time zone)."""
    schedule = body.get("schedule") if isinstance(body, dict) else None
    if not isinstance(schedule, dict) or schedule.get("startDate") is None or schedule.get("endDate") is None:
        return True
    try:
        zone = zoneinfo.ZoneInfo(schedule.get("timeZone") or "UTC")
        start = parse_instant(schedule["startDate"], zone, "startDate", end=False)
        end = parse_instant(schedule["endDate"], zone, "endDate", end=True)
    except (InvalidInput, ValueError, zoneinfo.ZoneInfoNotFoundError, TypeError):
        return True  # a bad value on its own: the document's to judge
    return end > start


def _conditions_distinct(body: Any) -> bool:
    """An approval decision: at most one condition of each kind (two user limits are a 400)."""
    conditions = body.get("conditions") if isinstance(body, dict) else None
    if not isinstance(conditions, list) or not all(isinstance(c, str) for c in conditions):
        return True
    kinds = [c.split("_")[-1] if c.startswith("limit_to_") else c.split("_")[0] for c in conditions]
    return len(set(kinds)) == len(kinds)  # hour, day, only, expires


def _no_systems(body: Any) -> bool:
    """An integration sync: webhook ids named in systems must be this project's (a generated one is a
    400 naming it, which only the data knows); without systems every enabled webhook is synced."""
    return not isinstance(body, dict) or body.get("systems") is None


BODY_RULES = {
    ("POST", "/api/v1/behavioral/triggers"): _schedule_ok,
    ("PUT", "/api/v1/behavioral/triggers/{triggerId}"): _schedule_ok,
    ("POST", "/api/v1/behavioral/hitl/approval/{approvalId}/decision"): _conditions_distinct,
    ("POST", "/api/v1/behavioral/integration/sync"): _no_systems,
    # a link names two sessions that have events in the key's project, else a 400 naming the field
    # (the rule for another project's sessions); a generated session never has any, and a
    # schema cannot state "exists": no positive case of this operation can be accepted
    ("POST", "/api/v1/behavioral/cross-device/link"): lambda body: False,
    # a generated deliveryId is no delivery of the webhook (a 404 naming it, which the stateful phase
    # would take for the webhook just created gone missing); without one every dead letter is replayed
    ("POST", "/api/v1/behavioral/webhooks/{webhookId}/dead-letters/replay"):
        lambda body: not isinstance(body, dict) or body.get("deliveryId") is None,
}
AB_TEST: Final = ("POST", "/api/v1/behavioral/triggers/{triggerId}/ab-test")


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    meta = case.meta
    if meta is None:
        return True
    if not meta.generation.mode.is_positive:
        return case.operation.path not in BATCHES
    key = (case.method.upper(), case.operation.path)
    rule = CROSS_PARAMETER_RULES.get(key)
    body_rule = BODY_RULES.get(key)
    return (rule is None or bool(rule(_query(case)))) and (body_rule is None or body_rule(case.body))


# Triggers and webhooks created by the run listen to event types of their own (a prefix on the
# generated names, still schema-valid): otherwise the hundreds of triggers and webhooks it creates
# on the shrunk name "0" would fire, and record deliveries, for every event the ingest operations
# send with that name, and the run would take minutes instead of seconds.
OWN_TYPES: Final = "st-"
TRIGGER_BODIES: Final = {("POST", "/api/v1/behavioral/triggers"), ("PUT", "/api/v1/behavioral/triggers/{triggerId}")}
WEBHOOK_BODY: Final = ("POST", "/api/v1/behavioral/webhooks")
WORKFLOW_BODY: Final = ("POST", "/api/v1/behavioral/automation/workflows")
MAX_CONDITION_FIELDS: Final = 50  # actors/automation/conditions.py MAX_FILTERS


def _own(name: Any) -> Any:
    """``name`` with the prefix, if it is a valid event type (else left as it is: a negative case's
    invalid value must stay invalid)."""
    if isinstance(name, str) and name.strip() and len(name) <= 200 and "\x00" not in name:
        return OWN_TYPES + name[: 200 - len(OWN_TYPES)]
    return name


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    """Triggers and webhooks get event types of their own (OWN_TYPES above; a negative case's invalid
    value is left as it is); and, in positive cases only, an A/B test's rules between its fields (variant names unique,
    control without actions, one share per variant summing to 100), too unlikely to hold by chance
    for a filter, are made to hold, its variants otherwise as generated."""
    body = case.body
    if case.meta is None or not isinstance(body, dict):
        return case
    key = (case.method.upper(), case.operation.path)
    if key in TRIGGER_BODIES and isinstance(body.get("conditions"), dict):
        case.body = {**body, "conditions": {**body["conditions"], "eventType": _own(body["conditions"].get("eventType"))}}
        return case
    if key == WEBHOOK_BODY and isinstance(body.get("events"), list):
        case.body = {**body, "events": [_own(name) for name in body["events"]]}
        return case
    if key == WORKFLOW_BODY:
        if case.meta.generation.mode.is_positive:
            case.body = _own_workflow(body)
        return case
    if key != AB_TEST or not case.meta.generation.mode.is_positive or not isinstance(body.get("variants"), list):
        return case
    variants, seen = [], set()
    for i, variant in enumerate(body["variants"]):
        name = variant if isinstance(variant, str) else variant.get("name") if isinstance(variant, dict) else None
        if not isinstance(name, str):
            return case
        if name in seen:
            name = f"v{i}-{name[:90]}"
        seen.add(name)
        if isinstance(variant, dict):
            variant = {**variant, "name": name}
            if name == CONTROL:
                variant["actions"] = None
        else:
            variant = name
        variants.append(variant)
    count = len(variants)
    share = 100 // count if count else 0
    case.body = {**body, "variants": variants, "trafficSplit": [100 - share * (count - 1)] + [share] * (count - 1)}
    return case


def _own_workflow(body: dict[str, Any]) -> dict[str, Any]:
    """A valid workflow create body whose triggers hold only for events of the run's own type (a
    workflow is evaluated on every event: on "pageViews": 0 it would fire, and schedule its actions,
    for the ingest operations' sessions), and whose A/B split, if any, sums to 100. Only positive
    cases: a negative one is refused, and creates nothing."""
    triggers = body.get("triggers")
    if isinstance(triggers, list):
        owned = []
        for trigger in triggers:
            if isinstance(trigger, dict) and isinstance(trigger.get("conditions"), dict):
                conditions = dict(trigger["conditions"])
                if "eventType" not in conditions and len(conditions) >= MAX_CONDITION_FIELDS:
                    conditions.pop(next(iter(conditions)))
                conditions["eventType"] = OWN_TYPES + "workflow"
                trigger = {**trigger, "conditions": conditions}
            owned.append(trigger)
        body = {**body, "triggers": owned}
    optimization = body.get("optimization")
    if isinstance(optimization, dict) and optimization.get("abTest") is True and isinstance(optimization.get("variants"), list):
        count = len(optimization["variants"])
        share = 100 // count if count else 0
        body = {**body, "optimization": {**optimization,
                                         "trafficSplit": [100 - share * (count - 1)] + [share] * (count - 1)}}
    return body
