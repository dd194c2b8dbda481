"""The condition language: validation (400s naming the field) and evaluation."""

from __future__ import annotations

from typing import Any

import pytest

from actors.automation.conditions import DictContext, compile_conditions
from protocol.errors import InvalidInput


def check(spec: dict[str, Any], context: dict[str, Any]) -> bool:
    return compile_conditions(spec).matches(DictContext(context))


def one(field: str, operator: str, value: Any) -> dict[str, Any]:
    return {"eventType": "click", "filters": [{"field": field, "operator": operator, "value": value}]}


@pytest.mark.parametrize(
    ("spec", "context", "expected"),
    [
        (one("engagementScore", "greater_than", 0.7), {"engagementScore": 0.71}, True),
        (one("engagementScore", "greater_than", 0.7), {"engagementScore": 0.7}, False),
        (one("engagementScore", "less_than", 0.7), {"engagementScore": 0.2}, True),
        (one("engagementScore", "greater_than", 0.7), {}, False),  # missing never matches
        (one("timeOnPage", "greater_than", 30000), {"eventData": {"timeOnPage": 45000}}, True),
        (one("deviceType", "equals", "mobile"), {"deviceType": "mobile"}, True),
        (one("deviceType", "equals", "mobile"), {"deviceType": "Mobile"}, False),
        (one("deviceType", "not_equals", "mobile"), {}, True),  # missing is "not equal"
        (one("deviceType", "not_equals", "mobile"), {"deviceType": "mobile"}, False),
        (one("url", "contains", "/pricing"), {"url": "https://x.io/pricing/pro"}, True),
        (one("url", "contains", "/pricing"), {"url": "/blog"}, False),
        (one("persona", "in", ["TechEarlyAdopter", "Researcher"]), {"persona": "Researcher"}, True),
        (one("persona", "in", ["TechEarlyAdopter"]), {"persona": "Bargain"}, False),
        (one("pageViews", "equals", 3), {"pageViews": 3.0}, True),  # numbers compare as numbers
        (one("eventData.cart.total", "greater_than", 100), {"eventData": {"cart": {"total": 120}}}, True),
        (one("eventData.tags", "contains", "vip"), {"eventData": {"tags": ["new", "vip"]}}, True),
        (one("metadata.plan", "equals", True), {"metadata": {"plan": True}}, True),
        (one("metadata.plan", "equals", True), {"metadata": {"plan": 1}}, False),  # a bool is not a number
        (one("eventData.price", "greater_than", 5), {"eventData": {"price": "9"}}, False),  # a string is not a number
        # an integer too large for a float compares exactly (float() and math.isfinite would overflow)
        (one("eventData.n", "equals", 1.5), {"eventData": {"n": 10**400}}, False),
        (one("eventData.n", "in", [10**400]), {"eventData": {"n": 10**400}}, True),
        (one("eventData.n", "greater_than", 10**400), {"eventData": {"n": 2.5}}, False),
        (one("eventData.n", "not_equals", 10**400), {"eventData": {"n": 3}}, True),
    ],
)
def test_operators(spec: dict[str, Any], context: dict[str, Any], expected: bool) -> None:
    assert check(spec, context) is expected


def test_all_and_any() -> None:
    filters = [{"field": "deviceType", "operator": "equals", "value": "mobile"},
               {"field": "scrollDepth", "operator": "greater_than", "value": 0.5}]
    context = {"deviceType": "mobile", "scrollDepth": 0.2}
    assert check({"eventType": "x", "filters": filters}, context) is False
    assert check({"eventType": "x", "filters": filters, "match": "any"}, context) is True
    assert check({"eventType": "x"}, {}) is True  # no filter: the event type alone


def test_explain_gives_every_filter_with_its_actual_value() -> None:
    compiled = compile_conditions({"eventType": "Exit_Intent", "filters": [
        {"field": "engagementScore", "operator": "greater_than", "value": 0.7},
        {"field": "timeOnPage", "operator": "greater_than", "value": 30000}]})
    assert compiled.event_type == "exit_intent"
    passed, results = compiled.explain(DictContext({"engagementScore": 0.812345, "timeOnPage": 1000}))
    assert passed is False
    assert [(r.field, r.actual, r.passed) for r in results] == [("engagementScore", 0.8123, True), ("timeOnPage", 1000, False)]
    assert compiled.needs_insights is True


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ("nope", "$.conditions"),
        ({"filters": []}, "$.conditions.eventType"),
        ({"eventType": "x", "when": 1}, "$.conditions.when"),
        ({"eventType": "x", "filters": {}}, "$.conditions.filters"),
        ({"eventType": "x", "match": "most"}, "$.conditions.match"),
        ({"eventType": "x", "filters": ["url"]}, "$.conditions.filters[0]"),
        (one("engagment", "equals", 1), "$.conditions.filters[0].field"),
        (one("eventData.", "equals", 1), "$.conditions.filters[0].field"),
        (one("url", "matches", "x"), "$.conditions.filters[0].operator"),
        (one("url", "greater_than", 1), "$.conditions.filters[0].operator"),
        (one("pageViews", "contains", "1"), "$.conditions.filters[0].operator"),
        (one("engagementScore", "greater_than", "0.7"), "$.conditions.filters[0].value"),
        (one("engagementScore", "equals", True), "$.conditions.filters[0].value"),
        (one("engagementScore", "greater_than", float("nan")), "$.conditions.filters[0].value"),
        (one("url", "equals", 5), "$.conditions.filters[0].value"),
        (one("persona", "in", []), "$.conditions.filters[0].value"),
        (one("persona", "in", ["a", 2]), "$.conditions.filters[0].value[1]"),
        (one("eventData.x", "equals", {"a": 1}), "$.conditions.filters[0].value"),
        ({"eventType": "x", "filters": [{"field": "url", "operator": "equals"}]}, "$.conditions.filters[0].value"),
        ({"eventType": "x", "filters": [{"field": "url", "operator": "equals", "value": "a", "x": 1}]},
         "$.conditions.filters[0].x"),
    ],
)
def test_invalid_specs_name_the_field(spec: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        compile_conditions(spec)
    assert caught.value.field == field
    assert caught.value.status == 400
