"""A trigger's performance, computed from what the Store recorded (storage/trigger_records.py):
never a figure without samples behind it (a rate with no denominator is null, and says why)."""

from __future__ import annotations

from typing import Any

from actors.automation.abtest import CONTROL, MIN_EXPOSURES, MIN_OUTCOMES, compare
from actors.automation.definition import ABTest
from storage.trigger_records import VariantCounts


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None


def performance(counts: list[VariantCounts], test: ABTest | None) -> dict[str, Any]:
    eligible = sum(c.eligible for c in counts)
    fired = sum(c.fired for c in counts)
    converted = sum(c.fired_converted for c in counts)
    samples = sum(c.engagement_samples for c in counts)
    engagement = (
        round(sum((c.engagement_mean or 0.0) * c.engagement_samples for c in counts) / samples, 6) if samples else None
    )
    answer: dict[str, Any] = {
        "triggerRate": _rate(fired, eligible),
        "conversionRate": _rate(converted, fired),
        "engagement": engagement,
        "sessions": {"withEventType": eligible, "fired": fired, "firedThenConverted": converted},
        "definitions": {
            "triggerRate": "sessions it fired in / sessions that had its eventType while it was active",
            "conversionRate": "fired sessions with a conversion event after the firing / fired sessions",
            "engagement": "mean engagement score of the fired sessions at their first firing",
        },
    }
    missing = []
    if not eligible:
        missing.append("no session has had this trigger's eventType yet")
    elif not fired:
        missing.append("the trigger has not fired yet")
    if missing:
        answer["note"] = "; ".join(missing)
    if test is not None:
        answer["abTest"] = ab_performance(counts, test)
    return answer


def variant_data(counts: list[VariantCounts], test: ABTest) -> list[tuple[str, float, int, int]]:
    """(name, split, exposures, conversions) per variant, in the test's order."""
    by_name = {c.variant: c for c in counts}
    rows = []
    for variant, share in zip(test.variants, test.traffic_split, strict=True):
        found = by_name.get(variant.name)
        rows.append((variant.name, share, found.exposed if found else 0, found.exposed_converted if found else 0))
    return rows


def ab_performance(counts: list[VariantCounts], test: ABTest) -> dict[str, Any]:
    rows = variant_data(counts, test)
    names = [r[0] for r in rows]
    baseline = CONTROL if CONTROL in names else names[0]
    base = next(r for r in rows if r[0] == baseline)
    variants = []
    for name, share, exposures, conversions in rows:
        entry: dict[str, Any] = {
            "variant": name,
            "trafficSplit": share,
            "exposures": exposures,
            "conversions": conversions,
            "conversionRate": _rate(conversions, exposures),
        }
        if name != baseline:
            entry["versusBaseline"] = compare((base[2], base[3]), (exposures, conversions))
        variants.append(entry)
    return {
        "testId": test.test_id,
        "baseline": baseline,
        "variants": variants,
        "test": "two-sided two-proportion z-test (pooled) with a 95% Wald confidence interval of the difference",
        "minimumSamples": {"exposuresPerVariant": MIN_EXPOSURES, "conversionsAndNonConversionsPerVariant": MIN_OUTCOMES},
        "exposure": "a session that met the trigger's conditions (the control variant is exposed but fires nothing)",
    }
