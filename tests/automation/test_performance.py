"""Performance figures from the recorded counts: rates only with a denominator, per-variant data."""

from __future__ import annotations

import pytest

from actors.automation.definition import ABTest, Variant
from actors.automation.performance import performance
from storage.trigger_records import VariantCounts


def test_no_samples_means_no_figures() -> None:
    answer = performance([], None)
    assert (answer["triggerRate"], answer["conversionRate"], answer["engagement"]) == (None, None, None)
    assert "no session" in answer["note"]
    seen_only = performance([VariantCounts("", 5, 0, 0, 0, 0, None, 0)], None)
    assert seen_only["triggerRate"] == 0.0 and seen_only["conversionRate"] is None
    assert "not fired" in seen_only["note"]


def test_rates_and_weighted_engagement() -> None:
    counts = [VariantCounts("a", 10, 4, 4, 1, 1, 0.5, 4), VariantCounts("b", 10, 6, 6, 3, 3, 0.8, 2)]
    answer = performance(counts, None)
    assert answer["triggerRate"] == 0.5  # 10 fired of 20 with the event type
    assert answer["conversionRate"] == 0.4  # 4 of 10
    assert answer["engagement"] == round((0.5 * 4 + 0.8 * 2) / 6, 6)
    assert answer["sessions"] == {"withEventType": 20, "fired": 10, "firedThenConverted": 4}


def test_per_variant_against_the_control() -> None:
    test = ABTest(test_id="abt", variants=[Variant(name="offer", actions=[]), Variant(name="control", actions=[])],
                  traffic_split=[50.0, 50.0], created=0)
    counts = [VariantCounts("control", 1000, 1000, 0, 200, 0, None, 0),
              VariantCounts("offer", 1000, 1000, 1000, 250, 250, 0.5, 1000)]
    ab = performance(counts, test)["abTest"]
    assert ab["baseline"] == "control"
    offer, control = ab["variants"]
    assert (offer["variant"], offer["exposures"], offer["conversions"], offer["conversionRate"]) == ("offer", 1000, 250, 0.25)
    assert "versusBaseline" not in control
    assert offer["versusBaseline"]["significant"] is True
    assert offer["versusBaseline"]["pValue"] == pytest.approx(0.0074197, abs=1e-6)
