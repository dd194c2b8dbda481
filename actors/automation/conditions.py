"""The condition language of triggers (and, later, workflows): an event type plus filters.

A condition spec is validated once, when a trigger is created or changed (``compile_conditions``);
every problem is an InvalidInput naming the offending field as a JSON path
(``$.conditions.filters[1].operator``). Evaluation (``Conditions.evaluate``) then costs a few dict
lookups per filter against a ``Context``: anything with ``value(field) -> object | None`` (the
session actor's live context, or a dict given to the test route). A missing value never matches
(except ``not_equals``), so a filter on a field the event does not carry is a clean "no".

Fields (docs/automation.md lists them): typed live-state and event fields (``FIELDS``), and paths
into the event's own payload (``eventData.price``, ``metadata.plan``, ``properties.x.y``), whose
type is whatever the client sent.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final, Protocol

import msgspec

from protocol.errors import InvalidInput

NUMBER: Final = "number"
STRING: Final = "string"
ANY: Final = "any"  # payload paths: typed by the client

# field -> type. The numeric live-state fields come from the session actor (actors/session.py)
# and its insights (actors/insights/): scores are 0..1, times in ms, scroll depth 0..1.
FIELDS: Final[dict[str, str]] = {
    "eventType": STRING,
    "url": STRING,
    "deviceType": STRING,
    "persona": STRING,
    "trafficSource": STRING,
    "userId": STRING,
    "behaviorPattern": STRING,
    "recommendedAction": STRING,
    "nextAction": STRING,
    "engagementScore": NUMBER,
    "intentScore": NUMBER,
    "timeOnPage": NUMBER,
    "scrollDepth": NUMBER,
    "maxScrollDepth": NUMBER,
    "pageViews": NUMBER,
    "eventCount": NUMBER,
    "sessionDuration": NUMBER,
}
# the live-state fields that need the session's insights (computed only when a filter asks)
INSIGHT_FIELDS: Final = frozenset({"engagementScore", "intentScore", "behaviorPattern", "recommendedAction", "nextAction"})
PATH_ROOTS: Final = ("eventData", "metadata", "properties", "payload")
OPERATORS: Final = ("equals", "not_equals", "greater_than", "less_than", "contains", "in")
MAX_FILTERS: Final = 50
MAX_IN_VALUES: Final = 1000
MAX_TEXT: Final = 1000
MAX_PATH_DEPTH: Final = 8


class Context(Protocol):
    def value(self, field: str) -> object | None:
        """The field's value after the event, or None when it has none."""


class FilterResult(msgspec.Struct, kw_only=True):
    """Why one filter passed or not: what ``test``, ``monitor`` and executions report."""

    field: str
    operator: str
    expected: Any
    actual: Any
    passed: bool


def _is_number(value: object) -> bool:
    # an int of any size is a number (math.isfinite and float() would overflow on a 400-digit one)
    if isinstance(value, int):
        return not isinstance(value, bool)
    return isinstance(value, float) and math.isfinite(value)


def _equals(actual: object, expected: object) -> bool:
    if _is_number(actual) and _is_number(expected):
        return actual == expected  # Python compares int and float exactly, at any size
    return actual == expected and type(actual) is type(expected)


def _contains(actual: object, expected: object) -> bool:
    if isinstance(actual, str):
        return isinstance(expected, str) and expected in actual
    if isinstance(actual, list):
        return any(_equals(item, expected) for item in actual)
    return False


_NUMERIC: Final = (int, float)  # by exact type: a bool is not a number; NaN compares false anyway

OPS: Final[dict[str, Callable[[object, Any], bool]]] = {
    "equals": lambda a, e: a is not None and _equals(a, e),
    "not_equals": lambda a, e: a is None or not _equals(a, e),
    "greater_than": lambda a, e: type(a) in _NUMERIC and a > e,  # type: ignore[operator]
    "less_than": lambda a, e: type(a) in _NUMERIC and a < e,  # type: ignore[operator]
    "contains": lambda a, e: a is not None and _contains(a, e),
    "in": lambda a, e: a is not None and any(_equals(a, item) for item in e),
    # the map form's inclusive bounds (workflows: {"engagementScore": {"min": 0.8}})
    "min": lambda a, e: type(a) in _NUMERIC and a >= e,  # type: ignore[operator]
    "max": lambda a, e: type(a) in _NUMERIC and a <= e,  # type: ignore[operator]
}
# The map form's operators: ``{"field": {"min": 0.8, "max": 1}}``, ``{"field": value}`` (equals).
MAP_OPERATORS: Final = ("min", "max", "equals", "not_equals", "greater_than", "less_than", "contains", "in")


class Filter(msgspec.Struct, frozen=True):
    field: str
    operator: str
    value: Any

    def check(self, context: Context) -> bool:
        return OPS[self.operator](context.value(self.field), self.value)

    def explain(self, context: Context) -> FilterResult:
        actual = context.value(self.field)
        passed = OPS[self.operator](actual, self.value)
        shown = round(actual, 4) if isinstance(actual, float) else _jsonable(actual)
        expected = list(self.value) if isinstance(self.value, tuple) else self.value
        return FilterResult(field=self.field, operator=self.operator, expected=expected, actual=shown, passed=passed)


def _jsonable(value: object) -> object:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | dict):
        return value
    return str(value)


class Conditions:
    """A compiled condition: the event type it listens to (lowercased) and its filters, each with
    its operator's function looked up once."""

    __slots__ = ("event_type", "filters", "match_any", "needs_insights", "_checks")

    def __init__(self, event_type: str, filters: tuple[Filter, ...], match_any: bool = False) -> None:
        self.event_type = event_type
        self.filters = filters
        self.match_any = match_any  # "match": "any" (default "all")
        self.needs_insights = any(f.field in INSIGHT_FIELDS for f in filters)
        self._checks = tuple((f.field, OPS[f.operator], f.value) for f in filters)

    def matches(self, context: Context) -> bool:
        value = context.value
        if self.match_any:
            for field, op, expected in self._checks:
                if op(value(field), expected):
                    return True
            return not self._checks
        for field, op, expected in self._checks:
            if not op(value(field), expected):
                return False
        return True

    def explain(self, context: Context) -> tuple[bool, list[FilterResult]]:
        results = [f.explain(context) for f in self.filters]
        if not results:
            return True, results
        passed = any(r.passed for r in results) if self.match_any else all(r.passed for r in results)
        return passed, results


def field_type(name: str, where: str) -> str:
    """The type of a filterable field, or an InvalidInput naming ``where``."""
    if not isinstance(name, str) or not name:
        raise InvalidInput(where, "must be a non-empty string naming a field")
    known = FIELDS.get(name)
    if known is not None:
        return known
    root, _, rest = name.partition(".")
    if root in PATH_ROOTS and rest:
        parts = rest.split(".")
        if len(parts) > MAX_PATH_DEPTH or not all(parts):
            raise InvalidInput(where, f"a payload path has 1 to {MAX_PATH_DEPTH} non-empty parts, got {name!r}")
        return ANY
    known_list = ", ".join(FIELDS)
    raise InvalidInput(where, f"unknown field {name!r}; known: {known_list}, or a path under {', '.join(PATH_ROOTS)}")


def _check_scalar(value: object, kind: str, where: str) -> None:
    if kind == NUMBER and not _is_number(value):
        raise InvalidInput(where, f"must be a finite number, got {value!r}")
    if kind == STRING:
        if not isinstance(value, str):
            raise InvalidInput(where, f"must be a string, got {value!r}")
        if len(value) > MAX_TEXT:
            raise InvalidInput(where, f"at most {MAX_TEXT} characters")
    if kind == ANY and not (value is None or isinstance(value, str | bool) or _is_number(value)):
        raise InvalidInput(where, f"must be a string, number, boolean or null, got {value!r}")


def compile_filter(spec: object, where: str) -> Filter:
    if not isinstance(spec, dict):
        raise InvalidInput(where, "must be an object with field, operator and value")
    unknown = sorted(set(spec) - {"field", "operator", "value"})
    if unknown:
        raise InvalidInput(f"{where}.{unknown[0]}", "unknown key; a filter has field, operator and value")
    name = spec.get("field")
    kind = field_type(name, f"{where}.field")  # type: ignore[arg-type]
    op = spec.get("operator")
    if op not in OPERATORS:
        raise InvalidInput(f"{where}.operator", f"unknown operator {op!r}; one of {', '.join(OPERATORS)}")
    if "value" not in spec:
        raise InvalidInput(f"{where}.value", "required")
    value = spec["value"]
    at = f"{where}.value"
    if op in ("greater_than", "less_than"):
        if kind == STRING:
            raise InvalidInput(f"{where}.operator", f"{op} needs a numeric field; {name!r} is a string")
        _check_scalar(value, NUMBER, at)
    elif op == "contains":
        if kind == NUMBER:
            raise InvalidInput(f"{where}.operator", f"contains needs a string or list field; {name!r} is a number")
        _check_scalar(value, STRING if kind == STRING else ANY, at)
    elif op == "in":
        if not isinstance(value, list) or not value:
            raise InvalidInput(at, "in needs a non-empty list of values")
        if len(value) > MAX_IN_VALUES:
            raise InvalidInput(at, f"at most {MAX_IN_VALUES} values")
        for i, item in enumerate(value):
            _check_scalar(item, kind, f"{at}[{i}]")
        value = tuple(value)
    else:
        _check_scalar(value, kind, at)
    return Filter(name, op, value)  # type: ignore[arg-type]


def compile_conditions(spec: object, where: str = "$.conditions") -> Conditions:
    """Validate a condition spec ``{"eventType", "filters": [...], "match": "all"|"any"}``."""
    if not isinstance(spec, dict):
        raise InvalidInput(where, "must be an object with eventType and filters")
    unknown = sorted(set(spec) - {"eventType", "filters", "match"})
    if unknown:
        raise InvalidInput(f"{where}.{unknown[0]}", "unknown key; conditions have eventType, filters and match")
    event_type = spec.get("eventType")
    if not isinstance(event_type, str) or not event_type.strip() or len(event_type) > 200:
        raise InvalidInput(f"{where}.eventType", "required: the event type (1 to 200 characters) the trigger listens to")
    filters = spec.get("filters", [])
    if filters is None:
        filters = []
    if not isinstance(filters, list):
        raise InvalidInput(f"{where}.filters", "must be a list of {field, operator, value}")
    if len(filters) > MAX_FILTERS:
        raise InvalidInput(f"{where}.filters", f"at most {MAX_FILTERS} filters")
    match = spec.get("match", "all")
    if match not in ("all", "any"):
        raise InvalidInput(f"{where}.match", f"must be all or any, got {match!r}")
    compiled = tuple(compile_filter(f, f"{where}.filters[{i}]") for i, f in enumerate(filters))
    return Conditions(event_type.strip().lower(), compiled, match_any=match == "any")


def compile_condition_map(spec: object, where: str, event_type: str = "*") -> Conditions:
    """The map form (workflow triggers): ``{"engagementScore": {"min": 0.8}, "deviceType": "mobile"}``.
    Each key is a field (as in ``filters``); its value is either a scalar (equals) or an object of
    operators from MAP_OPERATORS (``min``/``max`` inclusive), all of which must hold. Every field
    must hold (match all). Errors name the path: ``$.triggers[0].conditions.engagementScore.minimum``."""
    if not isinstance(spec, dict) or not spec:
        raise InvalidInput(where, "must be a non-empty object of field -> value or {operator: value}")
    if len(spec) > MAX_FILTERS:
        raise InvalidInput(where, f"at most {MAX_FILTERS} fields")
    filters: list[Filter] = []
    for name, given in spec.items():
        at = f"{where}.{name}"
        kind = field_type(name, at)
        if not isinstance(given, dict):
            _check_scalar(given, kind, at)
            filters.append(Filter(name, "equals", given))
            continue
        if not given:
            raise InvalidInput(at, f"an empty operator object; use one or more of {', '.join(MAP_OPERATORS)}")
        for op, value in given.items():
            op_at = f"{at}.{op}"
            if op not in MAP_OPERATORS:
                raise InvalidInput(op_at, f"unknown operator {op!r}; one of {', '.join(MAP_OPERATORS)}")
            if op in ("min", "max", "greater_than", "less_than"):
                if kind == STRING:
                    raise InvalidInput(op_at, f"{op} needs a numeric field; {name!r} is a string")
                _check_scalar(value, NUMBER, op_at)
            elif op == "contains":
                if kind == NUMBER:
                    raise InvalidInput(op_at, f"contains needs a string or list field; {name!r} is a number")
                _check_scalar(value, STRING if kind == STRING else ANY, op_at)
            elif op == "in":
                if not isinstance(value, list) or not value or len(value) > MAX_IN_VALUES:
                    raise InvalidInput(op_at, f"a non-empty list of at most {MAX_IN_VALUES} values")
                for i, item in enumerate(value):
                    _check_scalar(item, kind, f"{op_at}[{i}]")
                value = tuple(value)
            else:
                _check_scalar(value, kind, op_at)
            filters.append(Filter(name, op, value))
    return Conditions(event_type, tuple(filters))


def path_value(root: object, path: str) -> object | None:
    """``a.b.c`` inside nested dicts (a list index as a number part), or None."""
    node = root
    for part in path.split("."):
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
        if node is None:
            return None
    return node


class DictContext:
    """A context given as a JSON object (the test route, the execute route): typed fields at its
    top level or inside ``eventData``; payload paths inside the object itself."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values
        data = values.get("eventData")
        self.data: dict[str, Any] = data if isinstance(data, dict) else {}

    def value(self, field: str) -> object | None:
        if field in FIELDS:
            found = self.values.get(field)
            return found if found is not None else self.data.get(field)
        root, _, rest = field.partition(".")
        if root == "payload":
            return path_value(self.values, rest)
        return path_value(self.values.get(root), rest)
