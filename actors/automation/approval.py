"""Approval gates (seed "HITL Integration Points"): which definitions need a human's approval
before they act, the grammar of the conditions an approver may attach, and their enforcement when
a trigger is about to fire.

Gate: a definition is created ``pending_approval`` (it fires nothing) when it says
``requiresApproval: true``, when its ``impact.riskLevel`` is ``high`` or ``critical``, or when its
expected reach (``impact.expectedUsers``, or ``impact.expectedReach``) exceeds the project's
threshold (DEFAULT_REACH_THRESHOLD until the project sets one: PUT /api/v1/behavioral/hitl/settings).

Conditions (``approved_with_conditions``), each a string:

- ``limit_to_<N>_users_per_hour``: at most N distinct users (the session id stands for a visitor
  without a user id) get the trigger in any sliding hour.
- ``limit_to_<N>_sessions_per_day``: at most N distinct sessions in any sliding 24 hours.
- ``only_device_<type>``: only sessions whose deviceType is <type> (mobile, desktop, tablet, …).
- ``expires_after_<N>h``: nothing fires N hours after the decision.

Anything else is refused (400 naming it): a condition Pulse cannot enforce is not accepted.

Counting is per node (the check runs inside the synchronous session actor, where a Store round
trip is not possible): every session's actor lives on exactly one node, and each node admits
ceil(N / live nodes) of a limit, so a cluster together stays within N (rounded up per node) while
membership is stable. A node restart forgets its window (the counts start again). Admission is
per key: the same user or session admitted in the window again is not counted twice (an
activation replay of a session that already fired costs nothing).
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any, Final

import msgspec

from protocol.errors import InvalidInput

DEFAULT_REACH_THRESHOLD: Final = 10_000  # expected users above which a definition needs approval
MAX_REACH_THRESHOLD: Final = 1_000_000_000
RISK_LEVELS: Final = ("low", "medium", "high", "critical")
GATED_RISK: Final = frozenset({"high", "critical"})
IMPACT_KEYS: Final = frozenset({"expectedUsers", "expectedReach", "revenueImpact", "riskLevel"})
DECISIONS: Final = ("approved", "approved_with_conditions", "rejected")
MAX_CONDITIONS: Final = 10
MAX_LIMIT: Final = 1_000_000  # a window keeps at most this many admitted keys
MAX_EXPIRY_H: Final = 24 * 366
HOUR_MS: Final = 3_600_000
DAY_MS: Final = 24 * HOUR_MS

_USERS: Final = re.compile(r"limit_to_([1-9][0-9]*)_users_per_hour")
_SESSIONS: Final = re.compile(r"limit_to_([1-9][0-9]*)_sessions_per_day")
_DEVICE: Final = re.compile(r"only_device_([a-z][a-z0-9_-]{0,39})")
_EXPIRES: Final = re.compile(r"expires_after_([1-9][0-9]*)h")
GRAMMAR: Final = ("limit_to_<N>_users_per_hour", "limit_to_<N>_sessions_per_day", "only_device_<type>",
                  "expires_after_<N>h")


class ApprovalGate(msgspec.Struct, kw_only=True, rename="camel"):
    """What a gated definition keeps of its approval: which request, and once decided, the
    decision and its conditions."""

    approval_id: str
    reason: str
    decision: str | None = None
    conditions: list[str] = []
    decided: int | None = None  # unix ms


def parse_impact(value: object, where: str = "$.impact") -> dict[str, Any] | None:
    """The seed's ``impact`` object, checked: numbers are non-negative, riskLevel is known."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidInput(where, "must be an object {expectedUsers, revenueImpact, riskLevel}")
    unknown = sorted(set(value) - IMPACT_KEYS)
    if unknown:
        raise InvalidInput(f"{where}.{unknown[0]}", f"unknown key; impact has {', '.join(sorted(IMPACT_KEYS))}")
    for key in ("expectedUsers", "expectedReach"):
        count = value.get(key)
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
            raise InvalidInput(f"{where}.{key}", "must be a non-negative integer")
    revenue = value.get("revenueImpact")
    if revenue is not None and (isinstance(revenue, bool) or not isinstance(revenue, int | float) or not math.isfinite(revenue)):
        raise InvalidInput(f"{where}.revenueImpact", "must be a number")
    risk = value.get("riskLevel")
    if risk is not None and risk not in RISK_LEVELS:
        raise InvalidInput(f"{where}.riskLevel", f"one of {', '.join(RISK_LEVELS)}")
    return dict(value)


def expected_reach(impact: dict[str, Any] | None) -> int | None:
    if not impact:
        return None
    reach = impact.get("expectedUsers", impact.get("expectedReach"))
    return reach if isinstance(reach, int) else None


def needs_approval(requires: bool, impact: dict[str, Any] | None, threshold: int) -> str | None:
    """Why a definition must wait for approval, or None when it may act at once."""
    if requires:
        return "requiresApproval is true"
    risk = (impact or {}).get("riskLevel")
    if risk in GATED_RISK:
        return f"impact.riskLevel is {risk}"
    reach = expected_reach(impact)
    if reach is not None and reach > threshold:
        return f"expected reach {reach} exceeds the project's threshold {threshold}"
    return None


def parse_threshold(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_REACH_THRESHOLD:
        raise InvalidInput(where, f"an integer from 0 to {MAX_REACH_THRESHOLD}")
    return value


class Gate(msgspec.Struct, frozen=True):
    """The compiled conditions of one approval."""

    users_per_hour: int | None = None
    sessions_per_day: int | None = None
    device: str | None = None
    expires_at: int | None = None  # unix ms

    @property
    def counts(self) -> bool:
        return self.users_per_hour is not None or self.sessions_per_day is not None


def _limit(match: re.Match[str], where: str) -> int:
    value = int(match.group(1))
    if value > MAX_LIMIT:
        raise InvalidInput(where, f"a limit of at most {MAX_LIMIT}")
    return value


def compile_gate(conditions: list[str], decided_ms: int, where: str = "$.conditions") -> Gate:
    """The conditions as a Gate; an unknown or repeated condition is a 400 naming it."""
    users = sessions = device = expires = None
    seen: set[str] = set()
    for i, condition in enumerate(conditions):
        at = f"{where}[{i}]"
        if not isinstance(condition, str):
            raise InvalidInput(at, "a condition is a string")
        kind = ""
        if match := _USERS.fullmatch(condition):
            kind, users = "users", _limit(match, at)
        elif match := _SESSIONS.fullmatch(condition):
            kind, sessions = "sessions", _limit(match, at)
        elif match := _DEVICE.fullmatch(condition):
            kind, device = "device", match.group(1)
        elif match := _EXPIRES.fullmatch(condition):
            hours = int(match.group(1))
            if hours > MAX_EXPIRY_H:
                raise InvalidInput(at, f"expires_after_<N>h takes at most {MAX_EXPIRY_H} hours")
            kind, expires = "expires", decided_ms + hours * HOUR_MS
        else:
            raise InvalidInput(at, f"unknown condition {condition!r}; known: {', '.join(GRAMMAR)}")
        if kind in seen:
            raise InvalidInput(at, f"condition {condition!r} repeats a {kind} condition given before")
        seen.add(kind)
    return Gate(users, sessions, device, expires)


def parse_conditions(value: object, decision: str, decided_ms: int) -> list[str]:
    """The decision's conditions: required (1 to MAX_CONDITIONS) for approved_with_conditions,
    absent or empty otherwise."""
    if value is None:
        value = []
    if not isinstance(value, list):
        raise InvalidInput("$.conditions", "must be a list of condition strings")
    if decision == "approved_with_conditions":
        if not 1 <= len(value) <= MAX_CONDITIONS:
            raise InvalidInput("$.conditions", f"approved_with_conditions needs 1 to {MAX_CONDITIONS} conditions")
    elif value:
        raise InvalidInput("$.conditions", f"a {decision} decision takes no conditions (use approved_with_conditions)")
    compile_gate(value, decided_ms)
    return list(value)


def gate_of(approval: ApprovalGate | None) -> Gate | None:
    """The Gate to enforce at fire time, or None when nothing is to be checked."""
    if approval is None or not approval.conditions or approval.decided is None:
        return None
    return compile_gate(approval.conditions, approval.decided)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class _Window:
    """The keys admitted within the last ``span_ms``, oldest first (at most the limit of them)."""

    __slots__ = ("admitted", "span_ms")

    def __init__(self, span_ms: int) -> None:
        self.span_ms = span_ms
        self.admitted: OrderedDict[str, int] = OrderedDict()

    def admit(self, key: str, limit: int, now: int) -> bool:
        admitted = self.admitted
        while admitted:
            oldest_key, at = next(iter(admitted.items()))
            if now - at < self.span_ms:
                break
            del admitted[oldest_key]
        if key in admitted:
            return True  # counted already in this window
        if len(admitted) >= limit:
            return False
        admitted[key] = now
        return True


class FireLimits:
    """This node's counting for the approval conditions of every trigger (see the module doc).

    ``clock``: unix ms (tests pass a virtual one); ``nodes``: how many nodes share a limit now."""

    def __init__(self, clock: Callable[[], int] = wall_ms, nodes: Callable[[], int] = lambda: 1) -> None:
        self.clock = clock
        self.nodes = nodes
        self._windows: dict[tuple[str, str, str, str], _Window] = {}
        self.refused: dict[str, int] = {"limit": 0, "device": 0, "expired": 0}  # fires held back, by reason
        self.held_back: dict[str, Counter[str]] = {}  # approval id -> fires held back on this node, by reason

    def share(self, limit: int) -> int:
        return max(1, math.ceil(limit / max(1, self.nodes())))

    def admit(self, project: str, trigger_id: str, approval_id: str, gate: Gate, *, user_key: str, session_id: str,
              device: object) -> bool:  # fmt: skip
        """May the trigger fire now for this session? Counts the session (and its user) when yes."""
        now = self.clock()
        if gate.expires_at is not None and now >= gate.expires_at:
            self._refuse(approval_id, "expired")
            return False
        if gate.device is not None and (not isinstance(device, str) or device.lower() != gate.device):
            self._refuse(approval_id, "device")
            return False
        checks = []
        if gate.users_per_hour is not None:
            checks.append((self._window(project, trigger_id, approval_id, "users", HOUR_MS), user_key,
                           self.share(gate.users_per_hour)))
        if gate.sessions_per_day is not None:
            checks.append((self._window(project, trigger_id, approval_id, "sessions", DAY_MS), session_id,
                           self.share(gate.sessions_per_day)))
        # every limit must have room before any counts the session: a refused one takes nothing
        for window, key, limit in checks:
            if key not in window.admitted and len(window.admitted) >= limit and not self._expire(window, now):
                self._refuse(approval_id, "limit")
                return False
        for window, key, limit in checks:
            if not window.admit(key, limit, now):
                self._refuse(approval_id, "limit")
                return False
        return True

    def _refuse(self, approval_id: str, reason: str) -> None:
        self.refused[reason] += 1
        self.held_back.setdefault(approval_id, Counter())[reason] += 1

    @staticmethod
    def _expire(window: _Window, now: int) -> bool:
        """True when the full window has an entry old enough to leave (room after all)."""
        if not window.admitted:
            return True
        return now - next(iter(window.admitted.values())) >= window.span_ms

    def _window(self, project: str, trigger_id: str, approval_id: str, kind: str, span_ms: int) -> _Window:
        key = (project, trigger_id, approval_id, kind)
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window(span_ms)
        return window

    def forget(self, project: str, trigger_id: str) -> None:
        """A deleted trigger's windows go (a new approval has its own id, hence its own windows)."""
        for key in [k for k in self._windows if k[0] == project and k[1] == trigger_id]:
            del self._windows[key]
