"""Suggestions (seed 004's ``AISuggestion``) from live statistics: documented rules, real evidence.

Sans-IO: the rules take the store's aggregates (``ServiceAggregate`` per service, as
``Store.service_stats`` returns them for a time window) and, for the funnel rule, a table of
transition counts; they return ``Finding``s, each an ``AISuggestion`` plus the services and event
names it is about (for filtering). No trio, no store: ``server/suggestions.py`` reads the windows
and caches the findings per project.

Every rule needs enough data and a one-sided significance test of its claim before it speaks, so
quiet or healthy data gives an empty list. ``basedOn.sampleSize`` is the number of events (or
sessions) the rule looked at; ``basedOn.confidence`` is 1 - p of its test (see
actors/insights/significance.py); ``score`` = confidence x severity, where severity in (0, 1]
says how far past its threshold the figure is. docs/suggestions.md lists the rules.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Final, NamedTuple
from urllib.parse import quote

import msgspec

from actors.insights.significance import (
    binom_cdf,
    binom_sf,
    mean_above,
    percentile,
    proportion_above,
    sample_sd,
    wilson_interval,
)
from protocol.tracking import AISuggestion, SuggestionAction, SuggestionBasis
from storage.base import ServiceAggregate

# slow service (the seed's rule: average response time over 500 ms)
SLOW_MS: Final = 500.0
MIN_TIMED: Final = 20  # events with responseTimeMs in the window
MIN_SPREAD_SAMPLE: Final = 10  # latest response times needed to estimate their spread
# error rate
ERROR_RATE: Final = 0.05  # observed rate at least this
ERROR_FLOOR: Final = 0.02  # ... and confidently above this
MIN_WITH_STATUS: Final = 20
# traffic change: the last hour against the hours before it and the same hour yesterday
BASELINE_HOURS: Final = 6
RISE_RATIO: Final = 2.0
DROP_RATIO: Final = 0.5
MIN_RATE_RISE: Final = 5.0  # baseline events per hour before a rise means anything
MIN_RATE_DROP: Final = 10.0  # baseline events per hour before a drop means anything
TRAFFIC_ALPHA: Final = 0.001  # many subjects are tested every few seconds: a strict level
YESTERDAY_ALPHA: Final = 0.01
# funnels that lose users
MIN_VISITS: Final = 30  # sessions through a step
FUNNEL_MIN_EXCESS: Final = 1.5  # exit share at least this many times the other steps' share
FUNNEL_DEPTH: Final = 3  # steps shown before the leaking one
DEFAULT_CONVERSIONS: Final = frozenset({"purchase", "conversion", "signup", "checkout_completed"})
START: Final = "start"
EXIT: Final = "exit"
# every rule
MIN_CONFIDENCE: Final = 0.95
ONE_SIDED_95: Final = 1.644854


class Finding(NamedTuple):
    suggestion: AISuggestion
    services: frozenset[str]  # the services it is about
    events: frozenset[str]  # the event names (or journey actions) it is about


class Windows(msgspec.Struct, kw_only=True):
    """What the rules read: per-service aggregates of four time windows, plus recent samples."""

    day: list[ServiceAggregate]  # the last 24 h (slow services, error rates)
    last_hour: list[ServiceAggregate] = []  # the last 60 complete minutes
    before: list[ServiceAggregate] = []  # the ``baseline_hours`` hours before last_hour
    yesterday: list[ServiceAggregate] | None = None  # last_hour's hour one day earlier; None: no history that old
    baseline_hours: int = BASELINE_HOURS
    # service -> response times of its latest events (newest first), for their spread and p95
    samples: dict[str, list[float]] = {}


def slug(text: str) -> str:
    """A stable id fragment: lowercase alphanumerics, underscores and dashes, plus a short hash when
    the text had to be changed (so "a b" and "a-b" do not collide)."""
    cleaned = re.sub(r"[^a-z0-9_]+", "-", text.lower()).strip("-")[:60]
    if cleaned == text:
        return cleaned
    return f"{cleaned}-{hashlib.sha1(text.encode()).hexdigest()[:6]}" if cleaned else hashlib.sha1(text.encode()).hexdigest()[:8]


def _score(confidence: float, severity: float) -> float:
    return round(max(0.0, min(1.0, confidence * severity)), 3)


def _services_href(service: str, since: str) -> str:
    return f"/api/events/services?serviceName={quote(service, safe='')}&from={since}"


def _names(agg: ServiceAggregate) -> frozenset[str]:
    return frozenset(e.name for e in agg.top_events)


# -- slow services ---------------------------------------------------------------------------------


def slow_services(day: Sequence[ServiceAggregate], samples: Mapping[str, Sequence[float]]) -> list[Finding]:
    """Average response time over SLOW_MS in the window, with at least MIN_TIMED timed events and a
    one-sided t test (spread from the service's latest response times) at MIN_CONFIDENCE."""
    found = []
    for agg in day:
        service = agg.service_name
        n = agg.with_response_time
        if service is None or n < MIN_TIMED:
            continue
        mean = agg.response_time_sum / n
        sample = [float(v) for v in samples.get(service, ())]
        if mean <= SLOW_MS or len(sample) < MIN_SPREAD_SAMPLE:
            continue
        sd = sample_sd(sample)
        confidence = mean_above(mean, sd, n, len(sample) - 1, SLOW_MS)
        if confidence < MIN_CONFIDENCE:
            continue
        p95 = percentile(sample, 95)
        lower = mean - _t_quantile_95(len(sample) - 1) * sd / math.sqrt(n)
        suggestion = AISuggestion(
            id=f"sug-slow-{slug(service)}",
            title=f"Reduce response time of {service}",
            description=(
                f"{service} answered in {mean:.0f} ms on average over {n} timed events in the last 24 h "
                f"(threshold {SLOW_MS:.0f} ms; one-sided 95 % lower bound {lower:.0f} ms). "
                f"p95 of its latest {len(sample)} timed events: {p95:.0f} ms. "
                "Consider caching frequently accessed data, or profiling its slowest calls."
            ),
            score=_score(confidence, min(1.0, mean / (2 * SLOW_MS))),
            action=SuggestionAction(label="View service performance", href=_services_href(service, "24h"), method="GET"),
            tags=["performance", "latency", service],
            basedOn=SuggestionBasis(
                eventPattern=f"average responseTimeMs above {SLOW_MS:.0f} ms in {service}",
                sampleSize=n,
                confidence=round(confidence, 4),
            ),
        )
        found.append(Finding(suggestion, frozenset({service}), _names(agg)))
    return found


def _t_quantile_95(df: int) -> float:
    """The one-sided 95 % quantile of Student's t (Cornish-Fisher expansion; exact to ~1e-3 for df >= 3)."""
    z = ONE_SIDED_95
    if df <= 0:
        return math.inf
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    return z + g1 / df + g2 / df**2 + g3 / df**3


# -- error rates -----------------------------------------------------------------------------------


def error_rates(day: Sequence[ServiceAggregate]) -> list[Finding]:
    """Error rate (statusCode >= 400 among events with a status) of at least ERROR_RATE, over at
    least MIN_WITH_STATUS events, whose one-sided 95 % Wilson lower bound is above ERROR_FLOOR."""
    found = []
    for agg in day:
        service = agg.service_name
        n, errors = agg.with_status, agg.errors
        if service is None or n < MIN_WITH_STATUS or errors < ERROR_RATE * n:
            continue
        confidence = proportion_above(errors, n, ERROR_FLOOR)
        if confidence < MIN_CONFIDENCE:
            continue
        rate = errors / n
        lower, _ = wilson_interval(errors, n, z=ONE_SIDED_95)
        suggestion = AISuggestion(
            id=f"sug-errors-{slug(service)}",
            title=f"Investigate errors in {service}",
            description=(
                f"{errors} of {n} events of {service} with a status code failed (statusCode >= 400) in the "
                f"last 24 h: {rate * 100:.1f} % (one-sided 95 % lower bound {lower * 100:.1f} %). "
                "Check its recent deployments, dependencies and the failing calls."
            ),
            score=_score(confidence, min(1.0, rate / (2 * ERROR_RATE))),
            action=SuggestionAction(label="View service error rate", href=_services_href(service, "24h"), method="GET"),
            tags=["reliability", "errors", service],
            basedOn=SuggestionBasis(
                eventPattern=f"statusCode >= 400 in {service}",
                sampleSize=n,
                confidence=round(confidence, 4),
            ),
        )
        found.append(Finding(suggestion, frozenset({service}), _names(agg)))
    return found


# -- traffic changes -------------------------------------------------------------------------------


class _Change(NamedTuple):
    direction: str  # "rise" | "drop"
    confidence: float
    ratio: float  # current / baseline hourly rate
    rate: float  # baseline events per hour


def traffic_change(current: int, before: int, hours: int, yesterday: int | None) -> _Change | None:
    """Is ``current`` (events in the last hour) a significant rise or drop against ``before``
    (events in the ``hours`` hours before it) and, when known, ``yesterday`` (the same hour a day
    earlier)? Exact conditional Poisson tests: under "same rate", current given current + before
    is Binomial(current + before, 1 / (1 + hours)). Both baselines must agree."""
    rate = before / hours
    total = current + before
    if rate >= MIN_RATE_RISE and current >= RISE_RATIO * rate:
        p = binom_sf(current, total, 1 / (1 + hours))
        if yesterday is not None:
            if current < RISE_RATIO * yesterday:
                return None
            p_day = binom_sf(current, current + yesterday, 0.5)
            if p_day >= YESTERDAY_ALPHA:
                return None
            p = max(p, p_day)
        return _Change("rise", 1 - p, current / rate, rate) if p < TRAFFIC_ALPHA else None
    if rate >= MIN_RATE_DROP and current <= DROP_RATIO * rate:
        p = binom_cdf(current, total, 1 / (1 + hours))
        if yesterday is not None:
            if current > DROP_RATIO * yesterday:
                return None
            p_day = binom_cdf(current, current + yesterday, 0.5)
            if p_day >= YESTERDAY_ALPHA:
                return None
            p = max(p, p_day)
        return _Change("drop", 1 - p, current / rate, rate) if p < TRAFFIC_ALPHA else None
    return None


def _severity(ratio: float) -> float:
    return 1.0 if ratio <= 0 else min(1.0, abs(math.log(ratio)) / math.log(4))


def _service_counts(aggs: Iterable[ServiceAggregate]) -> dict[str, int]:
    return {a.service_name: a.event_count for a in aggs if a.service_name is not None}


def _event_counts(aggs: Iterable[ServiceAggregate]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for agg in aggs:
        for event in agg.top_events:
            counts[event.name] = counts.get(event.name, 0) + event.count
    return counts


def _traffic_finding(kind: str, subject: str, change: _Change, current: int, w: Windows, yesterday: int | None,
                     services: frozenset[str], events: frozenset[str], href: str) -> Finding:
    word = "rose" if change.direction == "rise" else "dropped"
    if change.direction == "rise":
        title = f"Traffic of {subject} rose {change.ratio:.1f}x"
    else:
        title = f"Traffic of {subject} dropped {100 * (1 - change.ratio):.0f} %"
    day_part = f" and {yesterday} in the same hour yesterday" if yesterday is not None else ""
    advice = ("Check capacity and whether a campaign or a bot explains it." if change.direction == "rise"
              else "Check for an outage, a broken client release or a tracking change.")
    label = "service" if kind == "service" else "event"
    suggestion = AISuggestion(
        id=f"sug-traffic-{change.direction}-{'' if kind == 'service' else 'event-'}{slug(subject)}",
        title=title,
        description=(
            f"Traffic of {label} {subject} {word}: {current} events in the last hour against "
            f"{change.rate:.1f} per hour over the {w.baseline_hours} hours before{day_part}. {advice}"
        ),
        score=_score(change.confidence, _severity(change.ratio)),
        action=SuggestionAction(label=f"View the {label}'s last hour", href=href, method="GET"),
        tags=["traffic", change.direction, subject],
        basedOn=SuggestionBasis(
            eventPattern=f"hourly volume of {label} {subject}",
            sampleSize=current + round(change.rate * w.baseline_hours) + (yesterday or 0),
            confidence=round(change.confidence, 4),
        ),
    )
    return Finding(suggestion, services, events)


def traffic_changes(w: Windows) -> list[Finding]:
    """Per service, then per event name: a significant change of the last hour's volume. An event
    whose change is already reported for one of its services in the same direction is not repeated."""
    found: list[Finding] = []
    now_s, before_s = _service_counts(w.last_hour), _service_counts(w.before)
    day_s = _service_counts(w.yesterday) if w.yesterday is not None else None
    moved: dict[str, str] = {}
    for service in sorted(set(now_s) | set(before_s)):
        current = now_s.get(service, 0)
        yesterday = None if day_s is None else day_s.get(service, 0)
        change = traffic_change(current, before_s.get(service, 0), w.baseline_hours, yesterday)
        if change is None:
            continue
        moved[service] = change.direction
        names = _names_of(service, w)
        found.append(_traffic_finding("service", service, change, current, w, yesterday, frozenset({service}), names,
                                      _services_href(service, "1h")))
    now_e, before_e = _event_counts(w.last_hour), _event_counts(w.before)
    day_e = _event_counts(w.yesterday) if w.yesterday is not None else None
    carriers = _carriers(w)
    for name in sorted(set(now_e) | set(before_e)):
        current = now_e.get(name, 0)
        yesterday = None if day_e is None else day_e.get(name, 0)
        change = traffic_change(current, before_e.get(name, 0), w.baseline_hours, yesterday)
        if change is None or any(moved.get(s) == change.direction for s in carriers.get(name, ())):
            continue
        found.append(_traffic_finding("event", name, change, current, w, yesterday, frozenset(carriers.get(name, ())),
                                      frozenset({name}), f"/api/events?eventName={quote(name, safe='')}&from=1h"))
    return found


def _names_of(service: str, w: Windows) -> frozenset[str]:
    return frozenset(e.name for a in (*w.last_hour, *w.before) if a.service_name == service for e in a.top_events)


def _carriers(w: Windows) -> dict[str, set[str]]:
    carriers: dict[str, set[str]] = {}
    for agg in (*w.last_hour, *w.before):
        if agg.service_name is not None:
            for event in agg.top_events:
                carriers.setdefault(event.name, set()).add(agg.service_name)
    return carriers


# -- funnels that lose users -----------------------------------------------------------------------


def funnel_dropoffs(
    transitions: Mapping[str, Mapping[str, float]],
    *,
    conversions: frozenset[str] = DEFAULT_CONVERSIONS,
    evidence_href: str = "/api/v1/behavioral/models",
) -> list[Finding]:
    """Steps where sessions stop: ``transitions`` maps an action (or ``start``) to counts of what
    came next (an action or ``exit``), e.g. a project's learned transition counts. A step fires when
    at least MIN_VISITS sessions passed through it, its exit share is at least FUNNEL_MIN_EXCESS
    times the exit share of all the other steps, and a one-sided test (Wilson / score) says it is
    above that share at MIN_CONFIDENCE. Conversion actions (a journey's goal) never fire."""
    outgoing = {a: sum(max(0.0, c) for c in row.values()) for a, row in transitions.items()}
    exits = {a: max(0.0, row.get(EXIT, 0.0)) for a, row in transitions.items()}
    steps = [a for a in transitions if a not in (START, EXIT) and a not in conversions]
    all_out = sum(outgoing[a] for a in steps)
    all_exits = sum(exits[a] for a in steps)
    found = []
    for step in steps:
        n, stopped = outgoing[step], exits[step]
        others_n, others_exits = all_out - n, all_exits - stopped
        if n < MIN_VISITS or others_n <= 0:
            continue
        share, base = stopped / n, others_exits / others_n
        if base <= 0.0 or base >= 1.0 or share < FUNNEL_MIN_EXCESS * base:
            continue
        confidence = proportion_above(stopped, n, base)
        if confidence < MIN_CONFIDENCE:
            continue
        path = _path_into(step, transitions)
        route = " → ".join([*path, step])
        sessions = round(n)
        suggestion = AISuggestion(
            id=f"sug-funnel-{slug(step)}",
            title=f"Sessions drop off at {step}",
            description=(
                f"{share * 100:.0f} % of the {sessions} sessions that reach {step} end there, against "
                f"{base * 100:.0f} % at the other steps; the most common way in: {route}. "
                "Review that step's content, speed and next-step calls to action."
            ),
            score=_score(confidence, min(1.0, (share - base) / (1.0 - base))),
            action=SuggestionAction(label="View the learned journeys", href=evidence_href, method="GET"),
            tags=["funnel", "conversion", "ux"],
            basedOn=SuggestionBasis(
                eventPattern=f"sessions exiting after {route}",
                sampleSize=sessions,
                confidence=round(confidence, 4),
            ),
        )
        found.append(Finding(suggestion, frozenset(), frozenset([*path, step])))
    return found


def _path_into(step: str, transitions: Mapping[str, Mapping[str, float]]) -> list[str]:
    """The most common predecessors of ``step``, walked back up to FUNNEL_DEPTH steps (no cycles)."""
    path: list[str] = []
    current = step
    for _ in range(FUNNEL_DEPTH):
        best, best_count = None, 0.0
        for source in sorted(transitions):
            if source in (START, EXIT) or source == current or source == step or source in path:
                continue
            count = transitions[source].get(current, 0.0)
            if count > best_count:
                best, best_count = source, count
        if best is None:
            break
        path.insert(0, best)
        current = best
    return path


# -- all rules, and filtering ----------------------------------------------------------------------


def suggest(
    w: Windows,
    transitions: Mapping[str, Mapping[str, float]] | None = None,
    *,
    conversions: frozenset[str] = DEFAULT_CONVERSIONS,
) -> list[Finding]:
    """Every rule over the windows (and the transition counts when given), strongest first."""
    found = [*slow_services(w.day, w.samples), *error_rates(w.day), *traffic_changes(w)]
    if transitions:
        found.extend(funnel_dropoffs(transitions, conversions=conversions))
    found.sort(key=lambda f: (-(f.suggestion.score or 0.0), f.suggestion.id))
    return found


def slow_candidates(day: Sequence[ServiceAggregate]) -> list[str]:
    """Services whose aggregates alone pass the slow rule's mean and count tests: the only ones
    whose latest response times are worth reading."""
    return [
        a.service_name
        for a in day
        if a.service_name is not None
        and a.with_response_time >= MIN_TIMED
        and a.response_time_sum / a.with_response_time > SLOW_MS
    ]


def about(findings: Iterable[Finding], *, service: str | None = None, event: str | None = None) -> list[Finding]:
    """The findings about ``service`` and (when given too) about ``event``."""
    return [
        f for f in findings
        if (service is None or service in f.services) and (event is None or event in f.events)
    ]


def touching(findings: Iterable[Finding], services: Iterable[str | None], events: Iterable[str]) -> list[Finding]:
    """The findings about any of ``services`` or any of ``events`` (what an event or a user touched)."""
    wanted_s = {s for s in services if s is not None}
    wanted_e = set(events)
    return [f for f in findings if not f.services.isdisjoint(wanted_s) or not f.events.isdisjoint(wanted_e)]
