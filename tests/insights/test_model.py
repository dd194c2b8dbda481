"""The journey model on simulated journeys whose hidden visitor types are known
(loadtest/journeys.py): it must beat the current-page-only baseline clearly and come close to the
Bayes-optimal oracle that knows the world; it must be deterministic and order-independent."""

from __future__ import annotations

from actors.insights.mixture import fit, predictor_factory
from actors.insights.model import Journey, Step
from loadtest.journeys import baseline_factory, default_world, evaluate, generate

TRAIN, TEST = 2500, 600


def test_the_learned_model_beats_the_current_page_baseline_and_nears_the_oracle() -> None:
    world = default_world()
    training = generate(world, TRAIN, seed=11, start_ms=0)
    test = generate(world, TEST, seed=12, start_ms=0)
    steps = [j.step_list() for j in training]
    ended = [j.ends_with_session_end for j in training]
    from loadtest.journeys import oracle_factory

    model = evaluate(predictor_factory(steps, ended), test, world.outcomes)
    oracle = evaluate(oracle_factory(world), test, world.outcomes)
    baseline = evaluate(baseline_factory(steps, ended), test, world.outcomes)
    print(f"\ntop-1 model {model.accuracy:.3f} oracle {oracle.accuracy:.3f} baseline {baseline.accuracy:.3f}; "
          f"AUC model {model.auc:.3f} oracle {oracle.auc:.3f} baseline {baseline.auc:.3f}")
    assert model.accuracy >= baseline.accuracy + 0.05
    assert model.accuracy >= 0.95 * oracle.accuracy
    assert model.auc >= baseline.auc + 0.04
    assert model.auc >= 0.95 * oracle.auc
    assert model.log_loss < baseline.log_loss


def journeys(n: int, seed: int) -> list[Journey]:
    return [Journey(key=f"s{j.index}@{j.start_ms}", ended_at=j.start_ms, steps=[Step(*s) for s in j.step_list()])
            for j in generate(default_world(), n, seed=seed, start_ms=0)]


def test_the_fit_is_deterministic_and_does_not_depend_on_arrival_order() -> None:
    data = journeys(600, seed=3)
    conversions = frozenset({"purchase"})
    first = fit(data, conversions)
    again = fit(list(reversed(data)), conversions)
    assert first is not None and again is not None
    probe = [Step("view_home", 30_000, 0.9, 1), Step("view_product")]
    assert first.types == again.types
    assert first.predict(probe) == again.predict(probe)


def test_few_journeys_give_a_simple_model_and_unknown_actions_no_prediction() -> None:
    data = journeys(15, seed=4)
    model = fit(data, frozenset({"purchase"}))
    assert model is not None and model.types == 1  # too little data to tell kinds of visitors apart
    assert model.predict([Step("view_nowhere")]) is None
    assert fit([], frozenset({"purchase"})) is None
    prediction = model.predict([Step(data[0].steps[0].action)])
    assert prediction is not None
    assert abs(sum(p for _, p in prediction.next_actions) - 1) < 1e-9
    assert 0 <= prediction.conversion <= 1


def test_observed_transitions_feed_the_funnel_rule() -> None:
    """The suggestions' funnel rule reads the journeys' observed transitions (server/main.py)."""
    from actors.insights.model import transition_counts
    from actors.insights.suggestions import funnel_dropoffs

    def j(i: int, *actions: str) -> Journey:
        return Journey(key=f"s{i}@0", ended_at=i, steps=[Step(a, 10_000) for a in actions])

    leaky = [j(i, "view_home", "view_product", "view_cart") for i in range(60)]  # 60 stop at the cart
    fine = [j(100 + i, "view_home", "view_product", "view_cart", "view_checkout", "purchase") for i in range(40)]
    browsing = [j(200 + i, "view_home", "view_blog") for i in range(50)]
    counts = transition_counts(leaky + fine + browsing)
    assert counts["start"] == {"view_home": 150.0}
    assert counts["view_cart"] == {"exit": 60.0, "view_checkout": 40.0}
    found = funnel_dropoffs(counts)
    by_id = {f.suggestion.id: f.suggestion for f in found}
    assert set(by_id) == {"sug-funnel-view_cart", "sug-funnel-view_blog"}  # the two dead ends; never purchase
    cart = by_id["sug-funnel-view_cart"]
    assert cart.basedOn is not None and cart.basedOn.sampleSize == 100
