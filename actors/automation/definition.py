"""A trigger's definition: the seed's create body, validated, and what is stored for it.

``parse_trigger`` turns a request body into a ``TriggerDef`` (400s name the field); ``TriggerDef``
is stored as JSON (storage/triggers_schema.py) and compiled into a ``CompiledTrigger`` for the
session actors (actors/automation/index.py). Status: ``active`` or ``paused`` (stored);
``expired`` is answered for an active trigger whose schedule has ended. The approval gate
(actors/automation/approval.py) adds GATED_STATUSES, set only by the approval routes:
``pending_approval`` until a human decides, ``rejected`` after a rejection. Anything but ``active``
fires nothing.
"""

from __future__ import annotations

import datetime
import zoneinfo
from typing import Any, Final

import msgspec

from actors.automation.approval import ApprovalGate, parse_impact
from actors.automation.conditions import Conditions, compile_conditions
from protocol.errors import InvalidInput

STATUSES: Final = ("active", "paused")
GATED_STATUSES: Final = ("pending_approval", "rejected")  # only the approval decision changes these
PERSONALIZATION_KEYS: Final = ("persona", "deviceType", "trafficSource")
TOP_KEYS: Final = frozenset(
    {"name", "description", "type", "triggerType", "conditions", "actions", "personalization", "schedule",
     "cooldownSeconds", "urgency", "status", "requiresApproval", "impact"}
)
MAX_ACTIONS: Final = 20
MAX_COOLDOWN_S: Final = 365 * 86_400
URGENCIES: Final = ("low", "medium", "high", "critical")
DEFAULT_URGENCY: Final = "medium"


class Action(msgspec.Struct, kw_only=True):
    type: str
    parameters: dict[str, Any] = {}


class Schedule(msgspec.Struct, kw_only=True, rename="camel"):
    active: bool = True
    start_date: str | None = None
    end_date: str | None = None
    time_zone: str = "UTC"


class Variant(msgspec.Struct, kw_only=True):
    name: str
    actions: list[Action]  # empty for "control": it fires nothing


class Optimization(msgspec.Struct, kw_only=True, rename="camel"):
    at: int  # unix ms
    old_split: list[float]
    new_split: list[float]
    probability_best: dict[str, float]


class ABTest(msgspec.Struct, kw_only=True, rename="camel"):
    test_id: str
    variants: list[Variant]
    traffic_split: list[float]  # percentages, sum 100, one per variant
    created: int  # unix ms
    optimizations: list[Optimization] = []  # newest last, at most OPTIMIZATIONS_KEPT


class TriggerDef(msgspec.Struct, kw_only=True, rename="camel"):
    trigger_id: str
    name: str
    description: str = ""
    trigger_type: str
    conditions: dict[str, Any]  # as given (validated); compiled by compile_trigger
    actions: list[Action]
    personalization: dict[str, list[str]] = {}  # key -> allowed values; absent key = all
    schedule: Schedule = msgspec.field(default_factory=Schedule)
    cooldown_seconds: int | None = None  # None: at most once per session
    urgency: str = DEFAULT_URGENCY
    status: str = "active"
    created: int = 0  # unix ms
    updated: int = 0
    ab_test: ABTest | None = None
    requires_approval: bool = False
    impact: dict[str, Any] | None = None  # the seed's {expectedUsers, revenueImpact, riskLevel}
    approval: ApprovalGate | None = None  # the approval that gates it (actors/automation/approval.py)


def _text(body: dict[str, Any], key: str, *, required: bool, limit: int) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise InvalidInput(f"$.{key}", "required")
        return None
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > limit:
        raise InvalidInput(f"$.{key}", f"must be a string of {'1' if required else '0'} to {limit} characters")
    return value


def parse_actions(value: object, where: str) -> list[Action]:
    if not isinstance(value, list) or not value:
        raise InvalidInput(where, "must be a non-empty list of {type, parameters}")
    if len(value) > MAX_ACTIONS:
        raise InvalidInput(where, f"at most {MAX_ACTIONS} actions")
    actions = []
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise InvalidInput(at, "must be an object {type, parameters}")
        unknown = sorted(set(item) - {"type", "parameters"})
        if unknown:
            raise InvalidInput(f"{at}.{unknown[0]}", "unknown key; an action has type and parameters")
        kind = item.get("type")
        if not isinstance(kind, str) or not kind.strip() or len(kind) > 200:
            raise InvalidInput(f"{at}.type", "required: a string of 1 to 200 characters")
        params = item.get("parameters", {})
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise InvalidInput(f"{at}.parameters", "must be an object")
        actions.append(Action(type=kind, parameters=params))
    return actions


def _personalization(value: object) -> dict[str, list[str]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput("$.personalization", "must be an object of persona, deviceType, trafficSource")
    out: dict[str, list[str]] = {}
    for key, given in value.items():
        at = f"$.personalization.{key}"
        if key not in PERSONALIZATION_KEYS:
            raise InvalidInput(at, f"unknown key; one of {', '.join(PERSONALIZATION_KEYS)}")
        values = given if isinstance(given, list) else [given]
        if not values or not all(isinstance(v, str) and v and len(v) <= 200 for v in values):
            raise InvalidInput(at, '"all", a value, or a non-empty list of values (strings)')
        if "all" in values:
            continue  # "all" = any value (and none)
        out[key] = values
    return out


def parse_instant(value: str, zone: zoneinfo.ZoneInfo, where: str, *, end: bool) -> int:
    """A date (``2024-01-01``: the whole local day; an end date includes it) or an ISO datetime
    (a naive one is local to the schedule's time zone) as unix ms."""
    try:
        if len(value) == 10:
            day = datetime.date.fromisoformat(value)
            if end:
                day += datetime.timedelta(days=1)
            moment = datetime.datetime(day.year, day.month, day.day, tzinfo=zone)
        else:
            moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=zone)
    except (ValueError, OverflowError):
        raise InvalidInput(where, f"expected a date (YYYY-MM-DD) or an ISO 8601 datetime, got {value!r}") from None
    return int(moment.timestamp() * 1000)


def _schedule(value: object) -> Schedule:
    if value is None:
        return Schedule()
    if not isinstance(value, dict):
        raise InvalidInput("$.schedule", "must be an object {active, startDate, endDate, timeZone}")
    unknown = sorted(set(value) - {"active", "startDate", "endDate", "timeZone"})
    if unknown:
        raise InvalidInput(f"$.schedule.{unknown[0]}", "unknown key; a schedule has active, startDate, endDate, timeZone")
    active = value.get("active", True)
    if not isinstance(active, bool):
        raise InvalidInput("$.schedule.active", "must be true or false")
    tz = value.get("timeZone") or "UTC"
    if not isinstance(tz, str):
        raise InvalidInput("$.schedule.timeZone", "must be an IANA time zone name")
    try:
        zone = zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidInput("$.schedule.timeZone", f"unknown time zone {tz!r} (an IANA name like Europe/Berlin)") from None
    bounds = []
    for key, end in (("startDate", False), ("endDate", True)):
        raw = value.get(key)
        if raw is not None and not isinstance(raw, str):
            raise InvalidInput(f"$.schedule.{key}", "must be a date string or null")
        bounds.append(None if raw is None else parse_instant(raw, zone, f"$.schedule.{key}", end=end))
    if bounds[0] is not None and bounds[1] is not None and bounds[1] <= bounds[0]:
        raise InvalidInput("$.schedule.endDate", "must be after startDate")
    return Schedule(active=active, start_date=value.get("startDate"), end_date=value.get("endDate"), time_zone=tz)


def parse_trigger(body: object, trigger_id: str, now_ms: int, previous: TriggerDef | None = None) -> TriggerDef:
    """A validated definition from a create body, or (with ``previous``) from an update body whose
    keys replace the stored ones."""
    if not isinstance(body, dict):
        raise InvalidInput("$", "must be a JSON object")
    unknown = sorted(set(body) - TOP_KEYS)
    if unknown:
        raise InvalidInput(f"$.{unknown[0]}", f"unknown key; a trigger has {', '.join(sorted(TOP_KEYS))}")
    given = set(body)
    if previous is not None:
        stored = msgspec.to_builtins(previous)
        merged = {k: stored[k] for k in TOP_KEYS if k in stored and k not in ("triggerType", "type")}
        merged["type"] = previous.trigger_type
        if "triggerType" in body:
            merged.pop("type")
        merged.update(body)
        body = merged
    name = _text(body, "name", required=True, limit=200)
    description = _text(body, "description", required=False, limit=2000) or ""
    conditions_spec = body.get("conditions")
    compiled = compile_conditions(conditions_spec)
    kind = body.get("triggerType", body.get("type"))
    if kind is not None and (not isinstance(kind, str) or not kind.strip() or len(kind) > 200):
        raise InvalidInput("$.type", "must be a string of 1 to 200 characters")
    actions = parse_actions(body.get("actions"), "$.actions")
    cooldown = body.get("cooldownSeconds")
    if cooldown is not None and (isinstance(cooldown, bool) or not isinstance(cooldown, int) or not 1 <= cooldown <= MAX_COOLDOWN_S):
        raise InvalidInput("$.cooldownSeconds", f"an integer of seconds from 1 to {MAX_COOLDOWN_S}, or null (once per session)")
    urgency = body.get("urgency")
    if urgency is None:
        first = actions[0].parameters.get("urgency")
        urgency = first if first in URGENCIES else DEFAULT_URGENCY
    elif urgency not in URGENCIES:
        raise InvalidInput("$.urgency", f"one of {', '.join(URGENCIES)}")
    status = body.get("status", "active")
    if status not in STATUSES and not (previous is not None and status == previous.status):
        raise InvalidInput("$.status", f"one of {', '.join(STATUSES)}")
    requires = body.get("requiresApproval", False)
    if not isinstance(requires, bool):
        raise InvalidInput("$.requiresApproval", "must be true or false")
    schedule = _schedule(body.get("schedule"))
    if previous is None and not schedule.active:
        status = "paused"
    elif "schedule" in given and previous is not None and "status" not in given:
        status = "active" if schedule.active else "paused"
    return TriggerDef(
        trigger_id=trigger_id,
        name=name or "",
        description=description,
        trigger_type=kind or compiled.event_type,
        conditions=conditions_spec,  # type: ignore[arg-type]
        actions=actions,
        personalization=_personalization(body.get("personalization")),
        schedule=schedule,
        cooldown_seconds=cooldown,
        urgency=urgency,
        status=status,
        created=previous.created if previous is not None else now_ms,
        updated=now_ms,
        ab_test=previous.ab_test if previous is not None else None,
        requires_approval=requires,
        impact=parse_impact(body.get("impact")),
        approval=previous.approval if previous is not None else None,
    )


def schedule_bounds(schedule: Schedule) -> tuple[int | None, int | None]:
    zone = zoneinfo.ZoneInfo(schedule.time_zone)
    start = None if schedule.start_date is None else parse_instant(schedule.start_date, zone, "$.schedule.startDate", end=False)
    end = None if schedule.end_date is None else parse_instant(schedule.end_date, zone, "$.schedule.endDate", end=True)
    return start, end


def public_status(trigger: TriggerDef, now_ms: int) -> str:
    """The status answered: ``expired`` once an active trigger's schedule has ended."""
    if trigger.status == "active":
        _, end = schedule_bounds(trigger.schedule)
        if end is not None and now_ms >= end:
            return "expired"
    return trigger.status


def conditions_of(trigger: TriggerDef) -> Conditions:
    return compile_conditions(trigger.conditions)
