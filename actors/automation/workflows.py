"""An automation workflow's definition (seed 000 "Behavioral Automation Integration API"): the create
body, validated, and the rule the session actors evaluate for it.

A workflow is evaluated by the trigger engine (actors/automation/engine.py) as one more rule of its
project (TriggerIndex.install_any_event): on every event, against the state after it, at most once
per session, with the A/B split of its ``optimization`` block (deterministic per session; the
``control`` variant is recorded and fires nothing). When it fires, its actions are scheduled
durably, each at firing time + its delay (server/workflow_scheduler.py runs them).

Triggers: ``{"type": "behavioral_threshold", "conditions": {field: value | {operator: value}}}``
(the map form, actors/automation/conditions.py compile_condition_map); several triggers: the
workflow fires when any of them holds. Delays: ``"<n>s"``, ``"<n>m"``, ``"<n>h"``, ``"<n>d"``.
Status: active, paused, pending_approval (the approval gate, issue 13 item 5), rejected; only
``active`` fires. A workflow approved with conditions (``limit_to_N_users_per_hour``, …) carries its
decided approval into its rule (``compile_workflow``), so the engine enforces them at fire time
exactly as for a trigger.
"""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec

from actors.automation.abtest import CONTROL, MAX_VARIANTS
from actors.automation.approval import ApprovalGate, parse_impact
from actors.automation.conditions import Conditions, FilterResult, compile_condition_map
from actors.automation.definition import URGENCIES, ABTest, Action, TriggerDef, Variant
from actors.automation.index import CompiledTrigger
from protocol.errors import InvalidInput

WORKFLOW_PREFIX: Final = "workflow_"  # workflow ids; trigger ids start with "trigger_"
TRIGGER_TYPES: Final = ("behavioral_threshold",)
STATUSES: Final = ("active", "paused", "pending_approval", "rejected")
CREATE_STATUSES: Final = ("active", "paused")
TOP_KEYS: Final = frozenset({"workflowName", "description", "triggers", "actions", "optimization", "status",
                             "requiresApproval", "impact"})
MAX_TRIGGERS: Final = 10
MAX_ACTIONS: Final = 20
MAX_DELAY_MS: Final = 365 * 86_400_000
_UNITS: Final = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DELAY: Final = re.compile(r"^([0-9]{1,9})([smhd])$")  # ASCII digits only (as documented)


class WorkflowTrigger(msgspec.Struct, kw_only=True):
    type: str
    conditions: dict[str, Any]  # the map form, as given (validated)


class WorkflowAction(msgspec.Struct, kw_only=True, rename="camel"):
    type: str
    delay: str
    delay_ms: int
    parameters: dict[str, Any] = {}


class WorkflowOptimization(msgspec.Struct, kw_only=True, rename="camel"):
    ab_test: bool
    variants: list[str] = []
    traffic_split: list[float] = []
    test_id: str | None = None


class WorkflowDef(msgspec.Struct, kw_only=True, rename="camel"):
    workflow_id: str
    workflow_name: str
    description: str = ""
    triggers: list[WorkflowTrigger]
    actions: list[WorkflowAction]
    optimization: WorkflowOptimization | None = None
    requires_approval: bool = False
    impact: dict[str, Any] | None = None  # the seed's {expectedUsers, revenueImpact, riskLevel}: the approval gate
    status: str = "active"  # the stored row's status column wins (WorkflowRow.status)
    # the approval that gates it (pending, or decided with its conditions); the row's approval
    # column wins (WorkflowRow.approval): the gate sets it together with the status
    approval: ApprovalGate | None = None
    created: int = 0  # unix ms
    updated: int = 0


def is_workflow_id(rule_id: str) -> bool:
    return rule_id.startswith(WORKFLOW_PREFIX)


def parse_delay(value: object, where: str) -> int:
    """``"0s"``, ``"90s"``, ``"15m"``, ``"2h"``, ``"1d"`` -> milliseconds."""
    if not isinstance(value, str):
        raise InvalidInput(where, 'a duration like "0s", "90s", "15m", "2h" or "1d"')
    match = _DELAY.match(value.strip())
    if match is None:
        raise InvalidInput(where, f'{value!r} is not a duration: a whole number and a unit s, m, h or d, like "90s" or "2h"')
    delay = int(match.group(1)) * _UNITS[match.group(2)]
    if delay > MAX_DELAY_MS:
        raise InvalidInput(where, "at most 365 days")
    return delay


def _triggers(value: object) -> list[WorkflowTrigger]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_TRIGGERS:
        raise InvalidInput("$.triggers", f"required: a list of 1 to {MAX_TRIGGERS} triggers {{type, conditions}}")
    out = []
    for i, item in enumerate(value):
        at = f"$.triggers[{i}]"
        if not isinstance(item, dict):
            raise InvalidInput(at, "must be an object {type, conditions}")
        unknown = sorted(set(item) - {"type", "conditions"})
        if unknown:
            raise InvalidInput(f"{at}.{unknown[0]}", "unknown key; a workflow trigger has type and conditions")
        kind = item.get("type")
        if kind not in TRIGGER_TYPES:
            raise InvalidInput(f"{at}.type", f"unknown trigger type {kind!r}; one of {', '.join(TRIGGER_TYPES)}")
        compile_condition_map(item.get("conditions"), f"{at}.conditions")
        out.append(WorkflowTrigger(type=kind, conditions=item["conditions"]))
    return out


def _actions(value: object) -> list[WorkflowAction]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_ACTIONS:
        raise InvalidInput("$.actions", f"required: a list of 1 to {MAX_ACTIONS} actions {{type, delay, parameters}}")
    out = []
    for i, item in enumerate(value):
        at = f"$.actions[{i}]"
        if not isinstance(item, dict):
            raise InvalidInput(at, "must be an object {type, delay, parameters}")
        unknown = sorted(set(item) - {"type", "delay", "parameters"})
        if unknown:
            raise InvalidInput(f"{at}.{unknown[0]}", "unknown key; an action has type, delay and parameters")
        kind = item.get("type")
        if not isinstance(kind, str) or not kind.strip() or len(kind) > 200:
            raise InvalidInput(f"{at}.type", "required: a string of 1 to 200 characters")
        delay = item.get("delay", "0s")
        delay_ms = parse_delay(delay, f"{at}.delay")
        params = item.get("parameters")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise InvalidInput(f"{at}.parameters", "must be an object")
        out.append(WorkflowAction(type=kind, delay=str(delay).strip(), delay_ms=delay_ms, parameters=params))
    return out


def _optimization(value: object, test_id: str) -> WorkflowOptimization | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidInput("$.optimization", "must be an object {abTest, variants, trafficSplit}")
    unknown = sorted(set(value) - {"abTest", "variants", "trafficSplit"})
    if unknown:
        raise InvalidInput(f"$.optimization.{unknown[0]}", "unknown key; optimization has abTest, variants, trafficSplit")
    enabled = value.get("abTest", False)
    if not isinstance(enabled, bool):
        raise InvalidInput("$.optimization.abTest", "must be true or false")
    if not enabled:
        return WorkflowOptimization(ab_test=False)
    names = value.get("variants")
    if not isinstance(names, list) or not 2 <= len(names) <= MAX_VARIANTS:
        raise InvalidInput("$.optimization.variants", f"a list of 2 to {MAX_VARIANTS} variant names")
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            raise InvalidInput(f"$.optimization.variants[{i}]", "a name of 1 to 100 characters")
        if names.index(name) != i:
            raise InvalidInput(f"$.optimization.variants[{i}]", f"duplicate variant name {name!r}")
    split = value.get("trafficSplit")
    if not isinstance(split, list) or len(split) != len(names):
        raise InvalidInput("$.optimization.trafficSplit", f"one percentage per variant ({len(names)} numbers)")
    for i, share in enumerate(split):
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 100:
            raise InvalidInput(f"$.optimization.trafficSplit[{i}]", "a percentage from 0 to 100")
    if abs(sum(split) - 100.0) > 1e-6:
        raise InvalidInput("$.optimization.trafficSplit", f"must sum to 100, got {sum(split):g}")
    return WorkflowOptimization(ab_test=True, variants=list(names), traffic_split=[float(s) for s in split],
                                test_id=test_id)


def parse_workflow(body: object, workflow_id: str, test_id: str, now_ms: int) -> WorkflowDef:
    """A validated definition from a create body (400s name the field)."""
    if not isinstance(body, dict):
        raise InvalidInput("$", "must be a JSON object")
    unknown = sorted(set(body) - TOP_KEYS)
    if unknown:
        raise InvalidInput(f"$.{unknown[0]}", f"unknown key; a workflow has {', '.join(sorted(TOP_KEYS))}")
    name = body.get("workflowName")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise InvalidInput("$.workflowName", "required: a string of 1 to 200 characters")
    description = body.get("description")
    if description is None:
        description = ""
    if not isinstance(description, str) or len(description) > 2000:
        raise InvalidInput("$.description", "a string of at most 2000 characters")
    status = body.get("status", "active")
    if status not in CREATE_STATUSES:
        raise InvalidInput("$.status", f"one of {', '.join(CREATE_STATUSES)} (approval decides pending ones)")
    requires = body.get("requiresApproval", False)
    if not isinstance(requires, bool):
        raise InvalidInput("$.requiresApproval", "must be true or false")
    impact = parse_impact(body.get("impact"))
    return WorkflowDef(
        workflow_id=workflow_id,
        workflow_name=name.strip(),
        description=description,
        triggers=_triggers(body.get("triggers")),
        actions=_actions(body.get("actions")),
        optimization=_optimization(body.get("optimization"), test_id),
        requires_approval=requires,
        impact=impact,
        # fires nothing until approved: the approval gate (item 5) sets it active or rejected
        status="pending_approval" if requires else status,
        created=now_ms,
        updated=now_ms,
    )


class AnyOfConditions(Conditions):
    """A workflow's triggers: it fires when any one of them holds (each a match-all map)."""

    __slots__ = ("groups",)

    def __init__(self, groups: list[Conditions]) -> None:
        super().__init__("*", tuple(f for g in groups for f in g.filters))
        self.groups = groups

    def matches(self, context: Any) -> bool:
        return any(g.matches(context) for g in self.groups)

    def explain(self, context: Any) -> tuple[bool, list[FilterResult]]:
        results: list[FilterResult] = []
        for group in self.groups:
            passed, found = group.explain(context)
            if passed:
                return True, found
            results += found
        return False, results


def compile_workflow(workflow: WorkflowDef, status: str) -> CompiledTrigger:
    """The rule the trigger engine evaluates: no event type (every event), once per session, the
    workflow's A/B test. Its actions here carry no delay: firing only schedules them."""
    actions = [Action(type=a.type, parameters=a.parameters) for a in workflow.actions]
    test = None
    opt = workflow.optimization
    if opt is not None and opt.ab_test and opt.test_id is not None:
        test = ABTest(test_id=opt.test_id, created=workflow.created, traffic_split=list(opt.traffic_split),
                      variants=[Variant(name=n, actions=[] if n == CONTROL else list(actions)) for n in opt.variants])
    urgency = workflow.actions[0].parameters.get("urgency")
    definition = TriggerDef(
        trigger_id=workflow.workflow_id, name=workflow.workflow_name, trigger_type="workflow",
        conditions={"eventType": "*"}, actions=actions, status=status,
        urgency=urgency if urgency in URGENCIES else "medium",
        created=workflow.created, updated=workflow.updated, ab_test=test,
        approval=workflow.approval,  # approved with conditions: the engine checks them when it would fire
    )  # fmt: skip
    rule = CompiledTrigger(definition)
    groups = [compile_condition_map(t.conditions, "$.conditions") for t in workflow.triggers]
    rule.conditions = groups[0] if len(groups) == 1 else AnyOfConditions(groups)  # one: no any() per event
    return rule
