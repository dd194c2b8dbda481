"""The journey generator with hidden visitor types, its Bayes oracle, the baseline and the scores."""

from __future__ import annotations

import math

import pytest

from loadtest import journey_eval
from loadtest.journeys import (
    EXIT,
    PURCHASE,
    SESSION_GAP_MS,
    MarkovBaseline,
    auc,
    default_world,
    evaluate,
    generate,
    oracle_factory,
    oracle_predict,
    query_points,
    to_event_groups,
    to_events,
    view,
)
from loadtest.journeys import action_of_url as url_action

WORLD = default_world()
START_MS = 1_700_000_000_000


def test_same_seed_same_journeys() -> None:
    a = generate(WORLD, 200, 3, START_MS)
    b = generate(WORLD, 200, 3, START_MS)
    assert a == b
    assert [to_events(j, f"s{j.index}") for j in a] == [to_events(j, f"s{j.index}") for j in b]
    assert generate(WORLD, 200, 4, START_MS) != a
    assert len({j.visitor_type for j in a}) == len(WORLD.types)


def test_events_are_well_formed_and_time_ordered() -> None:
    journeys = generate(WORLD, 400, 11, START_MS)
    assert any(not j.ends_with_session_end for j in journeys) and any(j.converted for j in journeys)
    for j in journeys:
        groups = to_event_groups(j, "sess", "user" if j.index % 2 else None)
        assert len(groups) == len(j.steps) + 1
        events = [e for g in groups for e in g]
        assert events == to_events(j, "sess", "user" if j.index % 2 else None)
        times = [e["eventData"]["timestamp"] for e in events]
        assert times[0] == j.start_ms
        assert all(t1 < t2 for t1, t2 in zip(times, times[1:], strict=False)), "strictly increasing"
        for e in events:
            assert e["sessionId"] == "sess" and e["deviceType"] == j.device
            assert ("userId" in e) == bool(j.index % 2)
            assert isinstance(e["eventData"]["timestamp"], int)
        t = j.start_ms
        for step, group in zip(j.steps, groups, strict=False):
            head = group[-1]  # the action that opens the step, after the previous page's in-page events
            assert head["eventData"]["timestamp"] == t
            if step.action == PURCHASE:
                assert head["eventType"] == PURCHASE and head["eventData"]["value"] > 0
            else:
                assert head["eventType"] == "page_view"
                assert url_action(head["eventData"]["url"]) == step.action
            t += step.dwell_ms
        for i, step in enumerate(j.steps):  # in-page events of step i arrive in group i + 1
            inpage = [e for e in groups[i + 1] if e["eventType"] in ("scroll", "click")]
            start = sum(s.dwell_ms for s in j.steps[:i]) + j.start_ms
            assert all(start < e["eventData"]["timestamp"] < start + step.dwell_ms for e in inpage)
            clicks = [e for e in inpage if e["eventType"] == "click"]
            depths = [e["eventData"]["scrollDepth"] for e in inpage if e["eventType"] == "scroll"]
            assert len(clicks) == step.clicks
            assert all(c["elementContext"] == {"element": "button"} for c in clicks)
            if step.action == PURCHASE:
                assert not depths and step.scroll == -1.0
            else:
                assert depths == sorted(depths) and 0.0 <= depths[0] and math.isclose(depths[-1], step.scroll)
                assert step.dwell_ms >= 1000 and 0.0 < step.scroll < 1.0
        ends = [e for e in groups[-1] if e["eventType"] == "session_end"]
        assert len(ends) == int(j.ends_with_session_end)
        if ends:
            assert ends[0] is events[-1] and ends[0]["eventData"]["timestamp"] == j.start_ms + j.duration_ms
    # journeys have their own sessions, staggered starts
    assert len({j.start_ms for j in journeys}) == len(journeys)
    assert SESSION_GAP_MS == 30 * 60 * 1000


def test_action_of_url() -> None:
    assert url_action("/") == "view_home"
    assert url_action("/product/123") == "view_product"
    assert url_action("/compare?items=1,2") == "view_compare"
    assert url_action("https://shop.example/blog/a-b#top") == "view_blog"
    assert url_action("https://shop.example") == "view_home"


def test_oracle_distributions() -> None:
    journeys = generate(WORLD, 300, 5, START_MS)
    for j in journeys:
        for q in query_points(j):
            dist, conv = oracle_predict(WORLD, q.observed)
            assert set(dist) == set(WORLD.outcomes)
            assert math.isclose(sum(dist.values()), 1.0, abs_tol=1e-9)
            assert all(0.0 <= p <= 1.0 for p in dist.values())
            assert 0.0 <= conv <= 1.0
            if q.converted:
                assert conv == 1.0
    # the current page's signals are unknown at a query point: they change nothing
    path = [(view("product"), 30_000, 0.7, 2), (view("compare"), -1, -1.0, 0)]
    other = [path[0], (view("compare"), 90_000, 0.95, 9)]
    assert oracle_predict(WORLD, path) == oracle_predict(WORLD, other)
    # ... while a completed page's signals do
    assert oracle_predict(WORLD, [(view("product"), 3_000, 0.1, 0), path[1]]) != oracle_predict(WORLD, path)


def test_oracle_is_calibrated() -> None:
    """Exactness check: mean predicted probabilities match the frequencies of the process."""
    journeys = generate(WORLD, 6000, 21, START_MS)
    firsts = [query_points(j)[0] for j in journeys]
    predicted = [oracle_predict(WORLD, q.observed) for q in firsts]
    conv_rate = sum(q.converts for q in firsts) / len(firsts)
    assert abs(sum(p[1] for p in predicted) / len(firsts) - conv_rate) < 0.015
    exit_rate = sum(q.next_action == EXIT for q in firsts) / len(firsts)
    assert abs(sum(p[0][EXIT] for p in predicted) / len(firsts) - exit_rate) < 0.02


def test_oracle_beats_the_current_page_baseline() -> None:
    train = generate(WORLD, 3000, 7, START_MS)
    test = generate(WORLD, 1500, 8, START_MS)
    baseline = MarkovBaseline([j.step_list() for j in train], [j.ends_with_session_end for j in train])
    oracle = evaluate(oracle_factory(WORLD), test, WORLD.outcomes)
    base = evaluate(baseline, test, WORLD.outcomes)
    assert oracle.n == base.n > 5000
    assert oracle.accuracy - base.accuracy >= 0.08
    assert oracle.auc - base.auc >= 0.04
    assert oracle.log_loss < base.log_loss - 0.1
    # types overlap: even the oracle cannot always tell them apart, nor predict most next actions
    assert oracle.accuracy < 0.6


def test_baseline_counts_with_add_one_smoothing() -> None:
    a, b = view("home"), view("product")
    training = [[(a, 5000, 0.5, 1), (b, 5000, 0.5, 1)], [(a, 5000, 0.5, 1)]]
    baseline = MarkovBaseline(training)
    dist, conv = baseline([(a, -1, -1.0, 0)])
    # outcomes: exit, purchase, home, product; from home: product once, exit once
    assert dist == pytest.approx({EXIT: 2 / 6, PURCHASE: 1 / 6, a: 1 / 6, b: 2 / 6})
    assert conv == pytest.approx(1 / 4)  # no conversion in 2 query points on home
    assert baseline([(a, 5000, 0.5, 1), (PURCHASE, -1, -1.0, 0)])[1] == 1.0


def test_auc_by_hand() -> None:
    assert auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == pytest.approx(0.75)
    # ties count one half: (0.5 vs 0.5) 0.5 + 1 + 1 + 1 out of 4
    assert auc([0.5, 0.5, 0.2, 0.9], [True, False, False, True]) == pytest.approx(0.875)
    assert auc([0.3, 0.3, 0.3], [True, False, True]) == pytest.approx(0.5)
    assert math.isnan(auc([0.1, 0.2], [True, True]))


def test_parse_server_prediction() -> None:
    body = {"sessionId": "s", "predictions": {
        "nextAction": {"action": "view_cart", "probability": 0.4, "distribution": [
            {"action": "view_cart", "probability": 0.4}, {"action": EXIT, "probability": 0.3}]},
        "conversionProbability": {"probability": 0.25, "timeframe": "session"}}}
    assert journey_eval.parse_prediction(body) == ({"view_cart": 0.4, EXIT: 0.3}, 0.25)
    only_top = {"data": {"predictions": {"nextAction": {"action": EXIT, "probability": 0.6}}}}
    assert journey_eval.parse_prediction(only_top) == ({EXIT: 0.6}, 0.5)
    assert journey_eval.parse_prediction({"patterns": []}) is None
    session = {"sessionId": "s", "insights": {"nextAction": {"action": "view_cart", "probability": 0.5, "distribution": [
        {"action": "view_cart", "probability": 0.5}]}, "conversionProbability": 0.1}}
    assert journey_eval.parse_prediction(session) == ({"view_cart": 0.5}, 0.1)


def test_offline_cli(capsys: pytest.CaptureFixture[str]) -> None:
    code = journey_eval.main(["--offline", "--train", "400", "--test", "60", "--seed", "3",
                              "--predictor", "loadtest.journeys:baseline_factory"])
    assert code == 0
    out = capsys.readouterr().out
    assert "next action top-1" in out and "conversion AUC" in out and "oracle - baseline" in out
    with pytest.raises(SystemExit):
        journey_eval.main(["--host", "http://10.1.2.3:8000", "--predictor", "x:y"])
    assert journey_eval.main(["--host", "http://example.com:8000", "--train", "1", "--test", "1"]) == 2
