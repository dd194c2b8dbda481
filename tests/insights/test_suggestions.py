"""The suggestion rules on hand-made aggregates: each fires on data that shows its pattern with
enough evidence, and stays silent on quiet, healthy or too-thin data."""

from __future__ import annotations

import random

import pytest

from actors.insights import suggestions as rules
from actors.insights.significance import binom_cdf, binom_sf, t_cdf, wilson_interval
from actors.insights.suggestions import Windows, about, funnel_dropoffs, slug, suggest, touching
from storage.base import EventCount, ServiceAggregate


def agg(
    service: str | None,
    count: int,
    *,
    timed: int = 0,
    mean_ms: float = 0.0,
    with_status: int = 0,
    errors: int = 0,
    names: dict[str, int] | None = None,
) -> ServiceAggregate:
    names = names or {"api-call": count}
    return ServiceAggregate(
        service_name=service,
        event_count=count,
        unique_events=len(names),
        with_status=with_status,
        errors=errors,
        with_response_time=timed,
        response_time_sum=timed * mean_ms,
        last_seen_ms=1_700_000_000_000,
        top_events=[EventCount(n, c) for n, c in sorted(names.items(), key=lambda kv: -kv[1])],
    )


def around(mean: float, spread: float, n: int, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [max(0.0, rng.gauss(mean, spread)) for _ in range(n)]


def ids(findings: list[rules.Finding]) -> list[str]:
    return [f.suggestion.id for f in findings]


def assert_well_formed(finding: rules.Finding) -> None:
    s = finding.suggestion
    assert s.id.startswith("sug-") and s.title and s.description
    assert s.score is not None and 0.0 <= s.score <= 1.0
    assert s.action is not None and s.action.label and s.action.method == "GET"
    assert s.action.href is not None and s.action.href.startswith("/api/")
    assert s.tags
    assert s.basedOn is not None and s.basedOn.sampleSize > 0 and 0.0 <= s.basedOn.confidence <= 1.0


# -- the statistics ----------------------------------------------------------------------------------


def test_significance_functions_match_known_values() -> None:
    assert t_cdf(2.0, 10) == pytest.approx(0.9633060, abs=1e-6)
    assert binom_sf(7, 10, 0.5) == pytest.approx(0.171875)
    assert binom_cdf(3, 10, 0.5) == pytest.approx(0.171875)
    assert binom_sf(300, 1000, 0.25) == pytest.approx(0.00019359032, rel=1e-6)  # exact sum
    low, high = wilson_interval(5, 100)
    assert (low, high) == (pytest.approx(0.02154, abs=1e-4), pytest.approx(0.11175, abs=1e-4))


def test_ids_are_stable_slugs() -> None:
    assert slug("payment-service") == "payment-service"
    assert slug("Payment Service") == slug("Payment Service") != slug("payment-service")
    assert slug("Payment Service").startswith("payment-service-")


# -- slow services -----------------------------------------------------------------------------------


def test_slow_service_fires_with_real_figures() -> None:
    day = [agg("payment-service", 120, timed=120, mean_ms=900.0), agg("user-service", 300, timed=300, mean_ms=120.0)]
    [found] = rules.slow_services(day, {"payment-service": around(900, 80, 120), "user-service": around(120, 30, 200)})
    assert_well_formed(found)
    s = found.suggestion
    assert s.id == "sug-slow-payment-service"
    assert s.basedOn is not None and s.basedOn.sampleSize == 120 and s.basedOn.confidence > 0.999
    assert s.action is not None and s.action.href == "/api/events/services?serviceName=payment-service&from=24h"
    assert s.description is not None and "900 ms on average over 120 timed events" in s.description
    assert "p95 of its latest 120 timed events" in s.description
    assert s.score == pytest.approx(0.9, abs=0.001)  # confidence ~1 x severity 900 / 1000
    assert found.services == {"payment-service"} and found.events == {"api-call"}


@pytest.mark.parametrize(
    ("timed", "mean_ms", "sample"),
    [
        (300, 150.0, around(150, 40, 200)),  # healthy
        (10, 900.0, around(900, 80, 10)),  # too few timed events
        (25, 520.0, around(520, 2000, 25)),  # over 500 on average, but far too noisy to be sure
        (120, 900.0, []),  # no recent response times to judge the spread by
    ],
)
def test_slow_service_stays_silent(timed: int, mean_ms: float, sample: list[float]) -> None:
    assert rules.slow_services([agg("svc", timed, timed=timed, mean_ms=mean_ms)], {"svc": sample}) == []


def test_events_without_a_service_are_not_judged_as_one() -> None:
    assert rules.slow_services([agg(None, 100, timed=100, mean_ms=900)], {}) == []
    assert rules.error_rates([agg(None, 100, with_status=100, errors=50)]) == []


# -- error rates -------------------------------------------------------------------------------------


def test_error_rate_fires_when_confidently_above_the_floor() -> None:
    [found] = rules.error_rates([agg("checkout", 400, with_status=400, errors=40)])
    assert_well_formed(found)
    s = found.suggestion
    assert s.id == "sug-errors-checkout"
    assert s.basedOn is not None and s.basedOn.sampleSize == 400 and s.basedOn.confidence > 0.999
    assert s.description is not None and "40 of 400" in s.description and "10.0 %" in s.description
    assert s.score == pytest.approx(1.0, abs=0.001)  # 10 % is twice the 5 % threshold


@pytest.mark.parametrize(
    ("with_status", "errors"),
    [
        (1000, 20),  # 2 %: healthy
        (40, 2),  # 5 %, but 2 of 40 is not confidently above 2 %
        (10, 5),  # too few events with a status
        (0, 0),  # no status codes at all
    ],
)
def test_error_rate_stays_silent(with_status: int, errors: int) -> None:
    assert rules.error_rates([agg("checkout", 1000, with_status=with_status, errors=errors)]) == []


# -- traffic changes ---------------------------------------------------------------------------------


def windows(last: list[ServiceAggregate], before: list[ServiceAggregate],
            yesterday: list[ServiceAggregate] | None = None) -> Windows:
    return Windows(day=[], last_hour=last, before=before, yesterday=yesterday)


def test_traffic_rise_against_the_hours_before() -> None:
    [found] = rules.traffic_changes(windows([agg("api", 60)], [agg("api", 60)]))  # 10/h, then 60 in an hour
    assert_well_formed(found)
    s = found.suggestion
    assert s.id == "sug-traffic-rise-api"
    assert s.title == "Traffic of api rose 6.0x"
    assert s.basedOn is not None and s.basedOn.sampleSize == 120 and s.basedOn.confidence > 0.999
    assert s.action is not None and s.action.href == "/api/events/services?serviceName=api&from=1h"


def test_traffic_drop() -> None:
    [found] = rules.traffic_changes(windows([agg("api", 10)], [agg("api", 600)]))  # 100/h, then 10
    assert found.suggestion.id == "sug-traffic-drop-api"
    assert found.suggestion.title == "Traffic of api dropped 90 %"


@pytest.mark.parametrize(
    ("last", "before", "yesterday"),
    [
        (12, 60, None),  # steady: 10 per hour, 12 now
        (60, 0, None),  # a new service has no baseline: not a "change"
        (20, 12, None),  # 2/h before: too thin a baseline to call a rise
        (3, 30, None),  # 5/h before: too thin to call a drop
        (60, 60, 70),  # up on the hours before, but the same hour yesterday was as busy (a daily cycle)
        (12, 30, None),  # 2.4x, but 12 against 5/h is not significant at the strict level (p ~ 0.01)
        (18, 60, None),  # significant, but under the 2x a rise needs
    ],
)
def test_traffic_stays_silent(last: int, before: int, yesterday: int | None) -> None:
    day = None if yesterday is None else [agg("api", yesterday)]
    assert rules.traffic_changes(windows([agg("api", last)], [agg("api", before)], day)) == []


def test_traffic_of_one_event_when_its_service_as_a_whole_did_not_move() -> None:
    last = [agg("shop", 160, names={"browse": 100, "search": 60})]
    before = [agg("shop", 660, names={"browse": 600, "search": 60})]
    [found] = rules.traffic_changes(windows(last, before))
    assert found.suggestion.id == "sug-traffic-rise-event-search"
    assert found.suggestion.action is not None and found.suggestion.action.href == "/api/events?eventName=search&from=1h"
    assert found.services == {"shop"} and found.events == {"search"}


def test_an_event_is_not_repeated_when_its_service_moved_the_same_way() -> None:
    last = [agg("shop", 120, names={"search": 120})]
    before = [agg("shop", 60, names={"search": 60})]
    assert ids(rules.traffic_changes(windows(last, before))) == ["sug-traffic-rise-shop"]


# -- funnels -----------------------------------------------------------------------------------------

JOURNEYS: dict[str, dict[str, float]] = {
    "start": {"view_home": 1000},
    "view_home": {"view_product": 600, "view_cart": 200, "exit": 200},
    "view_product": {"view_cart": 300, "view_home": 150, "exit": 150},
    "view_cart": {"view_checkout": 120, "exit": 280},
    "view_checkout": {"purchase": 100, "exit": 20},
    "purchase": {"exit": 100},
}


def test_funnel_finds_the_step_that_loses_sessions() -> None:
    [found] = funnel_dropoffs(JOURNEYS)
    assert_well_formed(found)
    s = found.suggestion
    assert s.id == "sug-funnel-view_cart"
    assert s.title == "Sessions drop off at view_cart"
    assert s.basedOn is not None and s.basedOn.sampleSize == 400 and s.basedOn.confidence > 0.999
    assert s.basedOn.eventPattern == "sessions exiting after view_home → view_product → view_cart"
    assert s.description is not None and "70 % of the 400 sessions" in s.description and "22 %" in s.description
    assert found.events == {"view_home", "view_product", "view_cart"}


def test_funnel_stays_silent_on_even_exits_thin_data_and_conversions() -> None:
    even = {
        "start": {"a": 100},
        "a": {"b": 80, "exit": 20},
        "b": {"c": 80, "exit": 20},
        "c": {"a": 80, "exit": 20},
    }
    assert funnel_dropoffs(even) == []
    thin = {step: {k: v / 20 for k, v in row.items()} for step, row in JOURNEYS.items()}
    assert funnel_dropoffs(thin) == []  # 20 sessions at view_cart
    # every purchase ends the session, and that is the goal, not a leak
    assert all("purchase" not in f.suggestion.id for f in funnel_dropoffs(JOURNEYS))
    assert funnel_dropoffs({}) == []


# -- all together --------------------------------------------------------------------------------------


def test_quiet_healthy_data_gives_nothing() -> None:
    healthy = [agg("api", 500, timed=500, mean_ms=120.0, with_status=500, errors=3)]
    w = Windows(day=healthy, last_hour=[agg("api", 20)], before=[agg("api", 120)], yesterday=[agg("api", 22)],
                samples={"api": around(120, 30, 200)})
    assert suggest(w) == []
    assert suggest(Windows(day=[])) == []


def test_suggest_orders_by_score_and_filters_by_subject() -> None:
    day = [
        agg("payment-service", 120, timed=120, mean_ms=900.0, names={"payment-completed": 120}),
        agg("checkout", 400, with_status=400, errors=40, names={"checkout-submitted": 400}),
        agg("user-service", 300, timed=300, mean_ms=100.0, with_status=300),
    ]
    w = Windows(day=day, samples={"payment-service": around(900, 80, 120)})
    found = suggest(w, JOURNEYS)
    assert ids(found) == ["sug-errors-checkout", "sug-slow-payment-service", found[2].suggestion.id]
    assert found[2].suggestion.id == "sug-funnel-view_cart"
    scores = [f.suggestion.score or 0.0 for f in found]
    assert scores == sorted(scores, reverse=True)
    assert ids(about(found, service="payment-service")) == ["sug-slow-payment-service"]
    assert ids(about(found, event="payment-completed")) == ["sug-slow-payment-service"]
    assert ids(about(found, service="payment-service", event="checkout-submitted")) == []
    assert ids(touching(found, ["user-service"], ["user-login"])) == []
    assert ids(touching(found, [None], ["checkout-submitted"])) == ["sug-errors-checkout"]
