"""A/B statistics against known values, deterministic assignment, Thompson sampling."""

from __future__ import annotations

import math

import pytest

from actors.automation.abtest import assign, bucket, compare, parse_test, probability_best, thompson_split
from actors.automation.definition import Action
from protocol.errors import InvalidInput


def test_two_proportion_z_test_matches_the_textbook_values() -> None:
    # control 200/1000, variant 250/1000: pooled p = 0.225, SE = sqrt(.225 * .775 * 2/1000) = 0.0186749,
    # z = 0.05 / SE = 2.67739, two-sided p = erfc(z / sqrt 2) = 0.007419;
    # Wald CI: SE = sqrt(.2 * .8/1000 + .25 * .75/1000) = 0.0186414, 0.05 +- 1.959964 * SE
    result = compare((1000, 200), (1000, 250))
    assert result["zScore"] == pytest.approx(2.67739, abs=1e-4)
    assert result["pValue"] == pytest.approx(math.erfc(2.677398 / math.sqrt(2)), abs=1e-5)
    assert result["pValue"] == pytest.approx(0.007419, abs=2e-6)
    low, high = result["confidenceInterval"]
    assert low == pytest.approx(0.05 - 1.959964 * 0.0186414, abs=1e-5)
    assert high == pytest.approx(0.05 + 1.959964 * 0.0186414, abs=1e-5)
    assert result["significant"] is True
    same = compare((500, 50), (500, 52))
    assert same["significant"] is False and same["pValue"] > 0.8


def test_no_p_value_before_the_minimum_samples() -> None:
    assert compare((29, 10), (100, 20))["pValue"] is None  # too few exposures
    assert compare((100, 4), (100, 20))["pValue"] is None  # too few conversions
    assert "insufficient samples" in compare((100, 100), (100, 20))["reason"]  # no non-conversions


def test_assignment_is_deterministic_and_follows_the_split() -> None:
    names, split = ["control", "a", "b"], [20.0, 30.0, 50.0]
    counts = {n: 0 for n in names}
    for i in range(20_000):
        variant = assign("abt_1", f"session-{i}", names, split)
        assert variant == assign("abt_1", f"session-{i}", names, split)
        counts[variant] += 1
    assert counts["control"] / 20_000 == pytest.approx(0.2, abs=0.015)
    assert counts["a"] / 20_000 == pytest.approx(0.3, abs=0.015)
    assert 0 <= bucket("abt_1", "x") < 100
    # another test id reshuffles the sessions
    moved = sum(assign("abt_1", f"s{i}", ["x", "y"], [50, 50]) != assign("abt_2", f"s{i}", ["x", "y"], [50, 50])
                for i in range(1000))
    assert 400 < moved < 600


def test_probability_best_matches_the_closed_form() -> None:
    # P(B > A) for A ~ Beta(a1, b1), B ~ Beta(a2, b2), integer parameters (Evan Miller's formula)
    def log_beta(x: float, y: float) -> float:
        return math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)

    def exact(a1: int, b1: int, a2: int, b2: int) -> float:
        # sum over i < a2 of B(a1 + i, b1 + b2) / ((b2 + i) B(1 + i, b2) B(a1, b1))
        return sum(math.exp(log_beta(a1 + i, b1 + b2) - math.log(b2 + i) - log_beta(1 + i, b2) - log_beta(a1, b1))
                   for i in range(a2))

    data = [(100, 10), (100, 16)]  # posteriors Beta(11, 91), Beta(17, 85)
    expected = exact(11, 91, 17, 85)
    probabilities = probability_best(data, "seed")
    assert probabilities[1] == pytest.approx(expected, abs=0.015)  # 10,000 draws: SE ~0.004
    assert sum(probabilities) == pytest.approx(1.0)
    assert probability_best(data, "seed") == probabilities  # seeded: the same data, the same answer


def test_thompson_split_keeps_the_floor_and_sums_to_100() -> None:
    assert thompson_split([0.5, 0.5]) == [50.0, 50.0]
    assert thompson_split([1.0, 0.0]) == [90.0, 10.0]
    assert thompson_split([0.0, 0.02, 0.98]) == pytest.approx([10.0, 11.4, 78.6])
    split = thompson_split([0.333, 0.333, 0.334])
    assert sum(split) == pytest.approx(100.0) and min(split) >= 10.0
    many = thompson_split([0.1] * 10 + [0.0] * 2)  # 12 variants: the floor shrinks to 100 / 12
    assert sum(many) == pytest.approx(100.0) and min(many) >= 8.3


def test_parse_test_validates() -> None:
    default = [Action(type="show_offer")]
    variants, split = parse_test({"variants": ["control", "offer"], "trafficSplit": [30, 70]}, default)
    assert [(v.name, v.actions) for v in variants] == [("control", []), ("offer", default)] and split == [30.0, 70.0]
    for body, field in [
        ({"variants": ["a", "b"], "trafficSplit": [50, 40]}, "$.trafficSplit"),
        ({"variants": ["a"], "trafficSplit": [100]}, "$.variants"),
        ({"variants": ["a", "a"], "trafficSplit": [50, 50]}, "$.variants[1]"),
        ({"variants": ["a", "b"], "trafficSplit": [50]}, "$.trafficSplit"),
        ({"variants": ["a", "b"], "trafficSplit": [150, -50]}, "$.trafficSplit[0]"),
        ({"variants": ["a", {"name": "control", "actions": [{"type": "x"}]}], "trafficSplit": [50, 50]},
         "$.variants[1].actions"),
        ({"variants": ["a", "b"], "trafficSplit": [50, 50], "goal": "x"}, "$.goal"),
    ]:
        with pytest.raises(InvalidInput) as caught:
            parse_test(body, default)
        assert caught.value.field == field, body
