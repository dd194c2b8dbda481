"""Workflow definitions: the seed's body is accepted, bad input is a 400 naming the field, and the
compiled rule (the map form of conditions, any-of triggers) matches what it says."""

from __future__ import annotations

import copy
from typing import Any

import msgspec
import pytest

from actors.automation.approval import ApprovalGate
from actors.automation.conditions import DictContext
from actors.automation.index import TriggerIndex
from actors.automation.workflow_rules import WorkflowRules
from actors.automation.workflows import compile_workflow, parse_delay, parse_workflow
from protocol.errors import InvalidInput
from storage.workflow_records import WorkflowRow

SEED: dict[str, Any] = {
    "workflowName": "High Intent Mobile Conversion",
    "triggers": [{"type": "behavioral_threshold",
                  "conditions": {"engagementScore": {"min": 0.8}, "intentScore": {"min": 0.7}, "deviceType": "mobile"}}],
    "actions": [
        {"type": "personalized_offer", "delay": "0s",
         "parameters": {"offerType": "mobile_optimized", "discount": "persona_based", "urgency": "medium"}},
        {"type": "follow_up_sequence", "delay": "2h", "parameters": {"channel": "email",
                                                                     "sequence": "mobile_conversion_series"}},
    ],
    "optimization": {"abTest": True, "variants": ["offer_a", "offer_b", "control"], "trafficSplit": [40, 40, 20]},
}


def seed(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(SEED)
    body.update(changes)
    return body


def test_the_seed_body_parses_with_its_delays_and_split() -> None:
    wf = parse_workflow(seed(), "workflow_1", "test_1", 1000)
    assert [a.delay_ms for a in wf.actions] == [0, 7_200_000]
    assert wf.status == "active" and wf.optimization is not None
    assert wf.optimization.variants == ["offer_a", "offer_b", "control"]
    assert wf.optimization.traffic_split == [40.0, 40.0, 20.0] and wf.optimization.test_id == "test_1"


@pytest.mark.parametrize(("text", "ms"), [("0s", 0), ("90s", 90_000), ("15m", 900_000), ("2h", 7_200_000),
                                          ("1d", 86_400_000)])
def test_delays(text: str, ms: int) -> None:
    assert parse_delay(text, "$.d") == ms


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"actions": [{"type": "x", "delay": "soon"}]}, "$.actions[0].delay"),
        ({"actions": [{"type": "x", "delay": 5}]}, "$.actions[0].delay"),
        ({"actions": [{"type": "x", "delay": "-1s"}]}, "$.actions[0].delay"),
        ({"actions": [{"type": "x", "delay": "400d"}]}, "$.actions[0].delay"),
        ({"actions": []}, "$.actions"),
        ({"actions": [{"delay": "1s"}]}, "$.actions[0].type"),
        ({"actions": [{"type": "x", "when": "1s"}]}, "$.actions[0].when"),
        ({"triggers": [{"type": "behavioral_threshold", "conditions": {"engagementScore": {"minimum": 0.8}}}]},
         "$.triggers[0].conditions.engagementScore.minimum"),
        ({"triggers": [{"type": "behavioral_threshold", "conditions": {"engagementScor": {"min": 0.8}}}]},
         "$.triggers[0].conditions.engagementScor"),
        ({"triggers": [{"type": "behavioral_threshold", "conditions": {"deviceType": {"min": 1}}}]},
         "$.triggers[0].conditions.deviceType.min"),
        ({"triggers": [{"type": "behavioral_threshold", "conditions": {"engagementScore": {"min": "high"}}}]},
         "$.triggers[0].conditions.engagementScore.min"),
        ({"triggers": [{"type": "behavioral_threshold", "conditions": {}}]}, "$.triggers[0].conditions"),
        ({"triggers": [{"type": "page_view", "conditions": {"url": "/x"}}]}, "$.triggers[0].type"),
        ({"triggers": []}, "$.triggers"),
        ({"optimization": {"abTest": True, "variants": ["a", "b"], "trafficSplit": [50, 40]}},
         "$.optimization.trafficSplit"),
        ({"optimization": {"abTest": True, "variants": ["a", "a"], "trafficSplit": [50, 50]}},
         "$.optimization.variants[1]"),
        ({"optimization": {"abTest": "yes"}}, "$.optimization.abTest"),
        ({"workflowName": ""}, "$.workflowName"),
        ({"status": "pending_approval"}, "$.status"),
        ({"colour": "red"}, "$.colour"),
    ],
)
def test_bad_input_names_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_workflow(seed(**change), "workflow_1", "test_1", 0)
    assert caught.value.field == field
    assert caught.value.status == 400


def test_requires_approval_creates_it_pending_and_its_rule_inactive() -> None:
    wf = parse_workflow(seed(requiresApproval=True), "workflow_1", "test_1", 0)
    assert wf.status == "pending_approval"
    assert not compile_workflow(wf, wf.status).active
    assert compile_workflow(wf, "active").active


def test_the_map_form_min_max_are_inclusive_and_all_fields_must_hold() -> None:
    body = seed(triggers=[{"type": "behavioral_threshold",
                           "conditions": {"engagementScore": {"min": 0.8, "max": 0.9}, "deviceType": "mobile"}}])
    rule = compile_workflow(parse_workflow(body, "workflow_1", "test_1", 0), "active")
    assert rule.conditions.matches(DictContext({"engagementScore": 0.8, "deviceType": "mobile"}))
    assert rule.conditions.matches(DictContext({"engagementScore": 0.9, "deviceType": "mobile"}))
    assert not rule.conditions.matches(DictContext({"engagementScore": 0.91, "deviceType": "mobile"}))
    assert not rule.conditions.matches(DictContext({"engagementScore": 0.85, "deviceType": "desktop"}))
    assert not rule.conditions.matches(DictContext({"deviceType": "mobile"}))  # a missing value never matches


def test_several_triggers_fire_when_any_holds_and_explain_the_one_that_did() -> None:
    body = seed(triggers=[
        {"type": "behavioral_threshold", "conditions": {"deviceType": "mobile"}},
        {"type": "behavioral_threshold", "conditions": {"timeOnPage": {"greater_than": 30000}, "url": {"contains": "/pricing"}}},
    ])  # fmt: skip
    rule = compile_workflow(parse_workflow(body, "workflow_1", "test_1", 0), "active")
    desktop = DictContext({"deviceType": "desktop", "timeOnPage": 40000, "url": "/pricing/pro"})
    assert rule.conditions.matches(desktop)
    passed, reasons = rule.conditions.explain(desktop)
    assert passed and [r.field for r in reasons] == ["timeOnPage", "url"]
    assert not rule.conditions.matches(DictContext({"deviceType": "desktop", "timeOnPage": 40000, "url": "/blog"}))
    assert rule.variant_names == ["offer_a", "offer_b", "control"] and rule.actions_for("control") == []
    assert [a.type for a in rule.actions_for("offer_a")] == ["personalized_offer", "follow_up_sequence"]


def test_an_approval_with_conditions_reaches_the_compiled_rule_and_a_reload() -> None:
    wf = parse_workflow(seed(requiresApproval=True), "workflow_1", "test_1", 0)
    assert compile_workflow(wf, "active").gate is None  # no decided approval: nothing to enforce
    gate = ApprovalGate(approval_id="approval_1", reason="requiresApproval is true",
                        decision="approved_with_conditions", conditions=["limit_to_1_users_per_hour"], decided=5)
    rule = compile_workflow(msgspec.structs.replace(wf, approval=gate), "active")
    assert rule.active and rule.gate is not None and rule.gate.users_per_hour == 1
    assert rule.definition.approval == gate  # the engine counts the limit under this approval's id
    # a reload sees a decision that changed only the approval column (same updated, same status)
    index = TriggerIndex()
    rules = WorkflowRules(index)
    body = msgspec.json.encode(wf).decode()
    pending = ApprovalGate(approval_id="approval_1", reason="requiresApproval is true")
    row = WorkflowRow("prj", "workflow_1", "active", 0, 0, body, msgspec.json.encode(pending).decode())
    rules.replace_all([row])
    found = index.get("prj", "workflow_1")
    assert found is not None and found.gate is None
    rules.replace_all([msgspec.structs.replace(row, approval=msgspec.json.encode(gate).decode())])
    found = index.get("prj", "workflow_1")
    assert found is not None and found.gate is not None and found.gate.users_per_hour == 1
