"""A/B tests over a trigger: deterministic assignment, significance, Thompson-sampling optimization.

Assignment: the first 8 bytes of SHA-256("<testId>:<sessionId>") as a point in [0, 100), placed
on the cumulative traffic split: the same session always lands in the same variant (for a given
split; the session actor also pins the variant it was exposed to, so a later split change does not
move an exposed session).

Significance: a two-sided two-proportion z-test of each variant against the control (or, without
a variant named ``control``, against the first variant): the p-value uses the pooled proportion,
the 95 % confidence interval of the difference the unpooled standard error (Wald). The normal
approximation is trusted only once each group has MIN_EXPOSURES exposures and MIN_OUTCOMES
conversions and MIN_OUTCOMES non-conversions; before that the answer says so and gives no p-value.

Optimization: Thompson sampling. Each variant's conversion rate has the posterior
Beta(1 + conversions, 1 + exposures - conversions); DRAWS joint draws (a seeded RNG, so the same
data gives the same answer) estimate each variant's probability of being best, and the new split
gives every variant the exploration floor plus its probability's share of the rest.
"""

from __future__ import annotations

import hashlib
import math
import random
from statistics import NormalDist
from typing import Any, Final

from actors.automation.definition import Action, InvalidInput, Variant

CONTROL: Final = "control"
MIN_EXPOSURES: Final = 30
MIN_OUTCOMES: Final = 5
CONFIDENCE: Final = 0.95
DRAWS: Final = 10_000
EXPLORATION_FLOOR: Final = 10.0  # percent of traffic every variant keeps
MAX_VARIANTS: Final = 10
OPTIMIZATIONS_KEPT: Final = 20
_NORMAL: Final = NormalDist()


def bucket(test_id: str, session_id: str) -> float:
    digest = hashlib.sha256(f"{test_id}:{session_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100.0


def assign(test_id: str, session_id: str, names: list[str], split: list[float]) -> str:
    point = bucket(test_id, session_id)
    edge = 0.0
    for name, share in zip(names, split, strict=True):
        edge += share
        if point < edge:
            return name
    return names[-1]  # rounding at the top edge


def parse_test(body: object, default_actions: list[Action]) -> tuple[list[Variant], list[float]]:
    """``{"variants": [...], "trafficSplit": [...]}``: a variant is a name (the trigger's own
    actions; ``control`` fires nothing) or ``{"name", "actions"}``; the split is one percentage per
    variant summing to 100."""
    from actors.automation.definition import parse_actions

    if not isinstance(body, dict):
        raise InvalidInput("$", "must be a JSON object {variants, trafficSplit}")
    unknown = sorted(set(body) - {"variants", "trafficSplit"})
    if unknown:
        raise InvalidInput(f"$.{unknown[0]}", "unknown key; an A/B test has variants and trafficSplit")
    given = body.get("variants")
    if not isinstance(given, list) or not 2 <= len(given) <= MAX_VARIANTS:
        raise InvalidInput("$.variants", f"a list of 2 to {MAX_VARIANTS} variants")
    variants: list[Variant] = []
    for i, item in enumerate(given):
        at = f"$.variants[{i}]"
        name: object
        if isinstance(item, str):
            name, actions = item, None
        elif isinstance(item, dict):
            unknown = sorted(set(item) - {"name", "actions"})
            if unknown:
                raise InvalidInput(f"{at}.{unknown[0]}", "unknown key; a variant has name and actions")
            name = item.get("name")
            actions = parse_actions(item["actions"], f"{at}.actions") if item.get("actions") is not None else None
        else:
            raise InvalidInput(at, "a variant is a name or {name, actions}")
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            raise InvalidInput(at if isinstance(item, str) else f"{at}.name", "a name of 1 to 100 characters")
        if any(v.name == name for v in variants):
            raise InvalidInput(at, f"duplicate variant name {name!r}")
        if name == CONTROL:
            if actions:
                raise InvalidInput(f"{at}.actions", "the control variant fires nothing: no actions")
            actions = []
        variants.append(Variant(name=name, actions=list(default_actions) if actions is None else actions))
    split = body.get("trafficSplit")
    if not isinstance(split, list) or len(split) != len(variants):
        raise InvalidInput("$.trafficSplit", f"one percentage per variant ({len(variants)} numbers)")
    for i, share in enumerate(split):
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 100:
            raise InvalidInput(f"$.trafficSplit[{i}]", "a percentage from 0 to 100")
    if abs(sum(split) - 100.0) > 1e-6:
        raise InvalidInput("$.trafficSplit", f"must sum to 100, got {sum(split):g}")
    return variants, [float(s) for s in split]


def compare(control: tuple[int, int], variant: tuple[int, int]) -> dict[str, Any]:
    """Two-sided two-proportion z-test of ``variant`` (exposures, conversions) against ``control``."""
    n1, c1 = control
    n2, c2 = variant
    needed = (
        f"needs at least {MIN_EXPOSURES} exposures and {MIN_OUTCOMES} conversions and "
        f"{MIN_OUTCOMES} non-conversions in each group"
    )
    if min(n1, n2) < MIN_EXPOSURES or min(c1, c2, n1 - c1, n2 - c2) < MIN_OUTCOMES:
        return {"significant": None, "pValue": None, "confidenceInterval": None, "reason": f"insufficient samples: {needed}"}
    p1, p2 = c1 / n1, c2 / n2
    pooled = (c1 + c2) / (n1 + n2)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = (p2 - p1) / se_pooled
    p_value = 2 * (1 - _NORMAL.cdf(abs(z)))
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    margin = _NORMAL.inv_cdf(0.5 + CONFIDENCE / 2) * se
    diff = p2 - p1
    return {
        "significant": p_value < 1 - CONFIDENCE,
        "zScore": round(z, 4),
        "pValue": round(p_value, 6),
        "difference": round(diff, 6),
        "confidenceLevel": CONFIDENCE,
        "confidenceInterval": [round(diff - margin, 6), round(diff + margin, 6)],
    }


def probability_best(data: list[tuple[int, int]], seed: str, draws: int = DRAWS) -> list[float]:
    """Each variant's probability of having the highest conversion rate (Monte Carlo over Beta posteriors)."""
    rng = random.Random(seed)
    wins = [0] * len(data)
    params = [(1 + c, 1 + max(0, n - c)) for n, c in data]
    for _ in range(draws):
        best, best_value = 0, -1.0
        for i, (a, b) in enumerate(params):
            value = rng.betavariate(a, b)
            if value > best_value:
                best, best_value = i, value
        wins[best] += 1
    return [w / draws for w in wins]


def thompson_split(probabilities: list[float], floor: float = EXPLORATION_FLOOR) -> list[float]:
    """Every variant keeps ``floor`` percent (less when there are too many variants for it); the
    rest is shared by probability of being best. Rounded to 0.1 %, summing to exactly 100."""
    k = len(probabilities)
    floor = min(floor, 100.0 / k)
    rest = 100.0 - floor * k
    raw = [floor + rest * p for p in probabilities]
    tenths = [math.floor(r * 10) for r in raw]
    short = 1000 - sum(tenths)
    for i in sorted(range(k), key=lambda i: raw[i] * 10 - tenths[i], reverse=True)[:short]:
        tenths[i] += 1
    return [t / 10 for t in tenths]
