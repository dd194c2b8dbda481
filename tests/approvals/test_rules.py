"""The approval rules (actors/automation/approval.py): which definitions are gated, the condition
grammar, and the fire-time limits on a virtual clock."""

from __future__ import annotations

import pytest

from actors.automation.approval import (
    DAY_MS,
    DEFAULT_REACH_THRESHOLD,
    HOUR_MS,
    FireLimits,
    Gate,
    compile_gate,
    needs_approval,
    parse_conditions,
    parse_impact,
)
from protocol.errors import InvalidInput


class Clock:
    def __init__(self, now: int = 1_700_000_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def test_what_needs_approval() -> None:
    assert needs_approval(True, None, DEFAULT_REACH_THRESHOLD) == "requiresApproval is true"
    assert needs_approval(False, {"riskLevel": "high"}, DEFAULT_REACH_THRESHOLD) == "impact.riskLevel is high"
    assert needs_approval(False, {"riskLevel": "critical"}, DEFAULT_REACH_THRESHOLD) == "impact.riskLevel is critical"
    assert needs_approval(False, {"riskLevel": "medium", "expectedUsers": 10_000}, 10_000) is None  # not above
    assert needs_approval(False, {"riskLevel": "medium", "expectedUsers": 10_001}, 10_000) == (
        "expected reach 10001 exceeds the project's threshold 10000")
    assert needs_approval(False, {"expectedReach": 51}, 50) is not None  # the other spelling
    assert needs_approval(False, None, 0) is None and needs_approval(False, {}, 0) is None


@pytest.mark.parametrize(("impact", "field"), [
    ({"riskLevel": "huge"}, "$.impact.riskLevel"),
    ({"expectedUsers": -1}, "$.impact.expectedUsers"),
    ({"expectedUsers": 1.5}, "$.impact.expectedUsers"),
    ({"revenueImpact": "lots"}, "$.impact.revenueImpact"),
    ({"reach": 5}, "$.impact.reach"),
    ("high", "$.impact"),
])
def test_bad_impact_names_the_field(impact: object, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_impact(impact)
    assert caught.value.field == field


def test_the_condition_grammar() -> None:
    gate = compile_gate(["limit_to_50_users_per_hour", "limit_to_7_sessions_per_day", "only_device_mobile",
                         "expires_after_2h"], decided_ms=1000)
    assert gate == Gate(users_per_hour=50, sessions_per_day=7, device="mobile", expires_at=1000 + 2 * HOUR_MS)
    for bad, reason in [("monitor_satisfaction_score", "unknown condition"), ("limit_to_0_users_per_hour", "unknown"),
                        ("limit_to_5_users_per_minute", "unknown"), ("expires_after_soon", "unknown"),
                        ("limit_to_2000000_users_per_hour", "at most")]:
        with pytest.raises(InvalidInput) as caught:
            compile_gate(["only_device_mobile", bad], decided_ms=0)
        assert caught.value.field == "$.conditions[1]" and reason in caught.value.reason, bad
    with pytest.raises(InvalidInput, match="repeats"):
        compile_gate(["limit_to_1_users_per_hour", "limit_to_2_users_per_hour"], decided_ms=0)


def test_conditions_belong_to_approved_with_conditions_only() -> None:
    assert parse_conditions(["only_device_tablet"], "approved_with_conditions", 0) == ["only_device_tablet"]
    assert parse_conditions(None, "approved", 0) == []
    for conditions, decision in [([], "approved_with_conditions"), (None, "approved_with_conditions"),
                                 (["only_device_tablet"], "approved"), (["only_device_tablet"], "rejected"),
                                 ("only_device_tablet", "approved_with_conditions")]:
        with pytest.raises(InvalidInput) as caught:
            parse_conditions(conditions, decision, 0)
        assert caught.value.field == "$.conditions"


def admit(limits: FireLimits, gate: Gate, user: str, session: str | None = None, device: object = "mobile") -> bool:
    return limits.admit("p", "t", "a", gate, user_key=user, session_id=session or "s-" + user, device=device)


def test_users_per_hour_is_a_sliding_hour_of_distinct_users() -> None:
    clock = Clock()
    limits = FireLimits(clock)
    gate = compile_gate(["limit_to_2_users_per_hour"], 0)
    assert admit(limits, gate, "u1") and admit(limits, gate, "u2")
    assert not admit(limits, gate, "u3")  # the third user within the hour
    assert admit(limits, gate, "u1", "another-session-of-u1")  # a user admitted already is not counted again
    clock.now += HOUR_MS - 1
    assert not admit(limits, gate, "u3")
    clock.now += 1  # u1 and u2 leave the window
    assert admit(limits, gate, "u3") and admit(limits, gate, "u4") and not admit(limits, gate, "u5")
    assert limits.refused["limit"] == 3
    # another approval (or trigger) counts on its own
    assert limits.admit("p", "t", "a2", gate, user_key="u5", session_id="s", device=None)


def test_sessions_per_day_and_a_refused_limit_takes_nothing_from_the_other() -> None:
    clock = Clock()
    limits = FireLimits(clock)
    gate = compile_gate(["limit_to_1_users_per_hour", "limit_to_3_sessions_per_day"], 0)
    assert admit(limits, gate, "u1", "s1")
    assert not admit(limits, gate, "u2", "s2")  # the user limit refuses: s2 does not use a session slot
    clock.now += HOUR_MS
    assert admit(limits, gate, "u2", "s2")
    clock.now += HOUR_MS
    assert admit(limits, gate, "u3", "s3")
    clock.now += HOUR_MS
    assert not admit(limits, gate, "u4", "s4")  # 3 sessions within the day
    clock.now += DAY_MS - 3 * HOUR_MS
    assert admit(limits, gate, "u4", "s4")  # s1 is a day old


def test_device_and_expiry() -> None:
    clock = Clock(10 * HOUR_MS)
    limits = FireLimits(clock)
    gate = compile_gate(["only_device_mobile", "expires_after_1h"], decided_ms=10 * HOUR_MS)
    assert admit(limits, gate, "u1", device="Mobile")
    assert not admit(limits, gate, "u2", device="desktop") and not admit(limits, gate, "u3", device=None)
    clock.now += HOUR_MS
    assert not admit(limits, gate, "u1", device="mobile")
    assert limits.refused == {"limit": 0, "device": 2, "expired": 1}
    assert limits.held_back == {"a": {"device": 2, "expired": 1}}


def test_a_limit_is_shared_out_between_the_live_nodes() -> None:
    nodes = [3]
    limits = FireLimits(Clock(), nodes=lambda: nodes[0])
    gate = compile_gate(["limit_to_5_users_per_hour"], 0)
    assert [admit(limits, gate, f"u{i}") for i in range(3)] == [True, True, False]  # ceil(5 / 3) = 2 here
    nodes[0] = 1
    assert admit(limits, gate, "u9")
