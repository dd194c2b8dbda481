"""Simulated journeys with hidden visitor types, their Bayes-optimal oracle, a baseline and scores.

This is the yardstick of issue 10, item 2: next-action and conversion predictions are judged on
journeys whose generating process is known, against the best any model could do on the same
information. Everything here is sans-IO and deterministic given a seed.

The process (``World``)
-----------------------
A visitor has a hidden type (``buyer``, ``researcher``, ``browser``, ``bouncer``) drawn from the
types' priors. Given its type, the journey is a first-order Markov chain over *actions*:

- ``view_<route>`` for a page view, route = the URL's first path segment (``home`` for ``/``);
- ``purchase`` (the conversion event, mostly from ``view_checkout``; the session may go on after it);
- ``exit``, the end of the session (absorbing).

Each type has its own start distribution (the ``start`` row) and transition rows. Every page view
also has in-page signals drawn from the type, independently of the page and of everything else:

- dwell time ``dwell_ms = MIN_DWELL_MS + round(X)``, ``X ~ lognormal(mu, sigma)`` (ms),
- maximum scroll depth ``~ beta(a, b)``,
- interactions (clicks) ``~ Poisson(lambda)``.

A ``purchase`` step has no in-page signals (scroll -1, 0 clicks); its "dwell" (the time to the next
event) is drawn from one distribution for all types, so it says nothing about the type. Device,
URL ids, purchase value and the timing of in-page events inside a page are independent of the type
too, so the oracle below really uses everything that carries information.

The oracle
----------
``oracle_predict(world, observed)`` is the exact Bayes answer at a *query point*: right after a
page view (or a purchase) was sent, before any in-page event of the new page. Its input is the path
so far and the in-page signals of the pages the session already left; the current page's signals
are unknown to everybody at that moment (``dwell_ms == -1``), so they are not used. Posterior over
the type = prior x transition probabilities of the path x signal likelihoods of the completed pages;
the next-action distribution is the posterior mix of the types' rows of the current action; the
conversion probability is the posterior mix of each type's probability of reaching ``purchase``
before ``exit`` from the current state (absorption probabilities, a linear system per type), and
1.0 once the session has converted.

Journeys are capped at ``MAX_STEPS`` actions (then they end) as a safety bound only: every page row
exits with probability of about 0.1 or more, the longest of 100 000 default-world journeys has about 50
actions, so the oracle ignores the cap.

The step tuple shared by every predictor: ``(action, dwell_ms, max_scroll, clicks)``; ``dwell_ms``
is -1 for the current (still open) page; ``max_scroll`` is -1.0 when the page had no scroll event
(purchase steps).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

import numpy as np

Step = tuple[str, int, float, int]  # (action, dwell_ms or -1 for the current page, max scroll or -1, clicks)
Prediction = tuple[dict[str, float], float]  # (next-action distribution, conversion probability)
Predictor = Callable[[list[Step]], Prediction]

START = "start"
EXIT = "exit"
PURCHASE = "purchase"
ROUTES = ("home", "category", "product", "pricing", "compare", "cart", "checkout", "blog", "support")
MIN_DWELL_MS = 1_000
MAX_STEPS = 200
PURCHASE_GAP = (math.log(8_000.0), 0.5)  # lognormal (mu, sigma) of the time from a purchase to what follows
SESSION_GAP_MS = 30 * 60 * 1000  # the 30-minute rule
DEVICES = ("desktop", "mobile", "tablet")
_CATEGORIES = ("shoes", "jackets", "bags", "watches", "electronics", "books", "garden", "toys")
_BLOG = ("how-to-choose", "top-10-picks", "buying-guide", "whats-new", "behind-the-scenes", "reviews")
_SUPPORT = ("shipping", "returns", "payment", "faq", "contact")


def view(route: str) -> str:
    return f"view_{route}"


def action_of_url(url: str) -> str:
    """The action of a page view: ``view_`` + the URL's first path segment (``home`` for ``/``)."""
    path = urlsplit(url).path if "://" in url else url.split("?", 1)[0].split("#", 1)[0]
    first = next((part for part in path.split("/") if part), "")
    return view(first or "home")


# the world -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VisitorType:
    name: str
    prior: float
    rows: dict[str, dict[str, float]]  # state (START, a route, or PURCHASE) -> outcome (route, PURCHASE, EXIT) -> weight
    dwell: tuple[float, float]  # lognormal (mu, sigma) of dwell_ms - MIN_DWELL_MS
    scroll: tuple[float, float]  # beta (a, b) of the maximum scroll depth
    clicks: float  # Poisson mean of clicks per page


@dataclass
class World:
    """Hidden visitor types and their chains. Row weights are normalised; ``noise`` of every row of a
    page (not ``start``) is spread evenly over all page views, so every type can go anywhere."""

    types: tuple[VisitorType, ...]
    routes: tuple[str, ...] = ROUTES
    noise: float = 0.04

    @cached_property
    def views(self) -> list[str]:
        return [view(r) for r in self.routes]

    @cached_property
    def states(self) -> list[str]:
        return [START, *self.views, PURCHASE]

    @cached_property
    def outcomes(self) -> list[str]:
        return [*self.views, PURCHASE, EXIT]

    @cached_property
    def state_index(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.states)}

    @cached_property
    def outcome_index(self) -> dict[str, int]:
        return {o: i for i, o in enumerate(self.outcomes)}

    @cached_property
    def trans(self) -> np.ndarray:
        """(K, S, O) transition probabilities."""
        k_types, n_s, n_o = len(self.types), len(self.states), len(self.outcomes)
        out = np.zeros((k_types, n_s, n_o))
        for k, vt in enumerate(self.types):
            for s, state in enumerate(self.states):
                row = np.zeros(n_o)
                name = state if state in (START, PURCHASE) else state.removeprefix("view_")
                for target, weight in vt.rows.get(name, {EXIT: 1.0}).items():
                    key = target if target in (PURCHASE, EXIT) else view(target)
                    row[self.outcome_index[key]] += weight
                row /= row.sum()
                if state != START and self.noise > 0:
                    row *= 1.0 - self.noise
                    row[: len(self.views)] += self.noise / len(self.views)
                out[k, s] = row
        return out

    @cached_property
    def log_trans(self) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(self.trans)

    @cached_property
    def log_prior(self) -> np.ndarray:
        prior = np.array([vt.prior for vt in self.types], dtype=float)
        return np.log(prior / prior.sum())

    @cached_property
    def absorption(self) -> np.ndarray:
        """(K, S): P(reaching purchase before exit | type, state); 1 in the purchase state."""
        k_types, n_s, _ = self.trans.shape
        free = [i for i, s in enumerate(self.states) if s != PURCHASE]
        out = np.ones((k_types, n_s))
        buy = self.outcome_index[PURCHASE]
        # outcome o (a view) leads to state o + 1; the free states are START (0) and the views (1..V)
        v = len(self.views)
        for k in range(k_types):
            t = self.trans[k]
            q = np.zeros((len(free), len(free)))
            q[:, 1 : v + 1] = t[free][:, :v]
            b = t[free, buy]
            out[k, free] = np.linalg.solve(np.eye(len(free)) - q, b)
        return out

    @cached_property
    def _samplers(self) -> list[list[tuple[list[str], list[float]]]]:
        """Per type and state: (outcomes, cumulative weights) for random.choices."""
        result = []
        for k in range(len(self.types)):
            per_state = []
            for s in range(len(self.states)):
                row = self.trans[k, s]
                per_state.append((self.outcomes, list(np.cumsum(row))))
            result.append(per_state)
        return result

    def type_names(self) -> list[str]:
        return [vt.name for vt in self.types]


def default_world() -> World:
    """The tuned world: types differ in paths and in in-page signals, with overlap (see report)."""
    buyer = VisitorType(
        "buyer", 0.25,
        {
            START: {"home": 0.35, "product": 0.35, "category": 0.2, "pricing": 0.1},
            "home": {"category": 0.3, "product": 0.45, "pricing": 0.1, "cart": 0.05, EXIT: 0.1},
            "category": {"product": 0.7, "category": 0.1, "home": 0.05, EXIT: 0.15},
            "product": {"cart": 0.6, "product": 0.1, "category": 0.08, "pricing": 0.07, EXIT: 0.15},
            "pricing": {"checkout": 0.35, "cart": 0.2, "product": 0.2, EXIT: 0.25},
            "compare": {"product": 0.5, "cart": 0.2, EXIT: 0.3},
            "cart": {"checkout": 0.65, "product": 0.15, EXIT: 0.2},
            "checkout": {PURCHASE: 0.7, "cart": 0.1, EXIT: 0.2},
            "blog": {"product": 0.5, "home": 0.2, EXIT: 0.3},
            "support": {"checkout": 0.3, "cart": 0.2, EXIT: 0.5},
            PURCHASE: {EXIT: 0.6, "home": 0.15, "product": 0.15, "support": 0.1},
        },
        dwell=(math.log(20_000.0), 0.6), scroll=(3.0, 3.0), clicks=3.5,
    )
    researcher = VisitorType(
        "researcher", 0.25,
        {
            START: {"blog": 0.4, "home": 0.2, "product": 0.2, "pricing": 0.1, "compare": 0.1},
            "home": {"blog": 0.45, "product": 0.2, "pricing": 0.15, EXIT: 0.2},
            "category": {"product": 0.6, "compare": 0.2, EXIT: 0.2},
            "product": {"compare": 0.5, "pricing": 0.15, "product": 0.1, "blog": 0.1, EXIT: 0.15},
            "pricing": {"compare": 0.4, "product": 0.2, "support": 0.15, "checkout": 0.05, EXIT: 0.2},
            "compare": {"product": 0.45, "pricing": 0.25, EXIT: 0.3},
            "cart": {"checkout": 0.3, "product": 0.3, EXIT: 0.4},
            "checkout": {PURCHASE: 0.4, EXIT: 0.6},
            "blog": {"blog": 0.45, "product": 0.25, "home": 0.1, EXIT: 0.2},
            "support": {"pricing": 0.3, "blog": 0.2, EXIT: 0.5},
            PURCHASE: {EXIT: 0.7, "support": 0.3},
        },
        dwell=(math.log(60_000.0), 0.6), scroll=(6.0, 2.0), clicks=1.5,
    )
    browser = VisitorType(
        "browser", 0.3,
        {
            START: {"home": 0.45, "category": 0.35, "product": 0.1, "blog": 0.1},
            "home": {"category": 0.6, "product": 0.15, "blog": 0.1, EXIT: 0.15},
            "category": {"category": 0.45, "product": 0.3, "home": 0.1, EXIT: 0.15},
            "product": {"category": 0.5, "product": 0.15, "home": 0.1, "cart": 0.07, EXIT: 0.18},
            "pricing": {"home": 0.3, "category": 0.3, EXIT: 0.4},
            "compare": {"product": 0.4, EXIT: 0.6},
            "cart": {"checkout": 0.3, "product": 0.3, EXIT: 0.4},
            "checkout": {PURCHASE: 0.4, EXIT: 0.6},
            "blog": {"home": 0.4, "category": 0.2, EXIT: 0.4},
            "support": {"home": 0.5, EXIT: 0.5},
            PURCHASE: {EXIT: 0.8, "home": 0.2},
        },
        dwell=(math.log(10_000.0), 0.7), scroll=(2.0, 4.0), clicks=1.0,
    )
    bounce_row = {EXIT: 0.7, "home": 0.1, "product": 0.1, "category": 0.1}
    bouncer = VisitorType(
        "bouncer", 0.2,
        {START: {"home": 0.4, "product": 0.3, "blog": 0.3},
         **{route: dict(bounce_row) for route in ROUTES}, PURCHASE: {EXIT: 1.0}},
        dwell=(math.log(5_000.0), 0.8), scroll=(1.2, 6.0), clicks=0.3,
    )
    return World((buyer, researcher, browser, bouncer))


# journeys ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PageStep:
    action: str  # view_<route> or purchase
    dwell_ms: int  # time from this action to the next event that is an action or the end
    scroll: float  # maximum scroll depth in [0, 1]; -1.0 for a purchase (no scroll event)
    clicks: int
    url: str = ""  # the page's URL ("" for a purchase)

    def as_step(self) -> Step:
        return (self.action, self.dwell_ms, self.scroll, self.clicks)


@dataclass(frozen=True)
class Journey:
    index: int
    visitor_type: str  # hidden
    start_ms: int
    steps: tuple[PageStep, ...]
    ends_with_session_end: bool  # False: no end event, the 30-minute rule ends it
    device: str
    value: float  # the purchase value, when it converts
    event_seed: int  # placement of in-page events inside each page (type-independent)

    @property
    def converted(self) -> bool:
        return any(s.action == PURCHASE for s in self.steps)

    @property
    def duration_ms(self) -> int:
        return sum(s.dwell_ms for s in self.steps)

    def step_list(self) -> list[Step]:
        return [s.as_step() for s in self.steps]


def _poisson(rng: random.Random, lam: float) -> int:
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _url(rng: random.Random, route: str) -> str:
    if route == "home":
        return "/"
    if route == "product":
        return f"/product/{rng.randint(100, 99_999)}"
    if route == "category":
        return f"/category/{rng.choice(_CATEGORIES)}"
    if route == "blog":
        return f"/blog/{rng.choice(_BLOG)}-{rng.randint(1, 400)}"
    if route == "support":
        return f"/support/{rng.choice(_SUPPORT)}"
    if route == "compare":
        return f"/compare?items={rng.randint(100, 99_999)},{rng.randint(100, 99_999)}"
    return f"/{route}"


def generate(world: World, n: int, seed: int, start_ms: int, *, gap_ms: int = 300_000,
             session_end_share: float = 0.8) -> list[Journey]:
    """``n`` journeys, the i-th starting ``start_ms`` + the sum of i gaps (each uniform in
    [0.5, 1.5] x ``gap_ms``). Each journey has its own session, so starts may overlap in time."""
    rng = random.Random(seed)
    names = world.type_names()
    prior = list(np.exp(world.log_prior))
    samplers = world._samplers
    out: list[Journey] = []
    t = start_ms
    for i in range(n):
        k = rng.choices(range(len(names)), weights=prior)[0]
        vt = world.types[k]
        state = 0
        steps: list[PageStep] = []
        while len(steps) < MAX_STEPS:
            outcomes, cum = samplers[k][state]
            action = rng.choices(outcomes, cum_weights=cum)[0]
            if action == EXIT:
                break
            if action == PURCHASE:
                dwell = MIN_DWELL_MS + round(rng.lognormvariate(*PURCHASE_GAP))
                steps.append(PageStep(PURCHASE, dwell, -1.0, 0))
            else:
                dwell = MIN_DWELL_MS + round(rng.lognormvariate(*vt.dwell))
                scroll = rng.betavariate(*vt.scroll)
                clicks = _poisson(rng, vt.clicks)
                steps.append(PageStep(action, dwell, scroll, clicks, _url(rng, action.removeprefix("view_"))))
            state = world.state_index[action]
        if not steps:  # start rows never exit: defensive only
            continue
        out.append(Journey(
            index=i, visitor_type=vt.name, start_ms=t, steps=tuple(steps),
            ends_with_session_end=rng.random() < session_end_share,
            device=rng.choice(DEVICES), value=round(rng.uniform(15.0, 400.0), 2),
            event_seed=rng.getrandbits(48),
        ))
        t += round(gap_ms * rng.uniform(0.5, 1.5))
    return out


def shifted(journey: Journey, start_ms: int) -> Journey:
    """The same journey starting at ``start_ms``."""
    return Journey(journey.index, journey.visitor_type, start_ms, journey.steps, journey.ends_with_session_end,
                   journey.device, journey.value, journey.event_seed)


def to_event_groups(journey: Journey, session_id: str, user_id: str | None = None) -> list[list[dict[str, Any]]]:
    """The journey's seed-000 events, grouped as an evaluator sends them live: group i is the
    in-page events of step i-1 followed by action i (a page view or a purchase), after which one
    queries; the last group is the last page's in-page events and the ``session_end`` (if any)."""
    rng = random.Random(journey.event_seed)
    base: dict[str, Any] = {"sessionId": session_id, "deviceType": journey.device}
    if user_id is not None:
        base["userId"] = user_id

    def event(event_type: str, data: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {**base, "eventType": event_type, "eventData": data, **extra}

    groups: list[list[dict[str, Any]]] = []
    pending: list[dict[str, Any]] = []
    t = journey.start_ms
    for step in journey.steps:
        if step.action == PURCHASE:
            head = event(PURCHASE, {"timestamp": t, "value": journey.value, "currency": "USD"})
        else:
            head = event("page_view", {"url": step.url, "timestamp": t})
        groups.append([*pending, head])
        pending = []
        if step.action != PURCHASE:
            n_scroll = rng.randint(1, 4)
            n_total = n_scroll + step.clicks
            span = step.dwell_ms - 1
            offsets = sorted(rng.sample(range(1, step.dwell_ms), min(n_total, span)))
            scroll_at = set(rng.sample(range(len(offsets)), min(n_scroll, len(offsets))))
            done = 0
            for j, offset in enumerate(offsets):
                if j in scroll_at:
                    done += 1
                    depth = step.scroll * done / len(scroll_at)
                    pending.append(event("scroll", {"scrollDepth": depth, "timestamp": t + offset}))
                else:
                    pending.append(event("click", {"timestamp": t + offset}, elementContext={"element": "button"}))
        t += step.dwell_ms
    if journey.ends_with_session_end:
        pending.append(event("session_end", {"timestamp": t}))
    groups.append(pending)
    return groups


def to_events(journey: Journey, session_id: str, user_id: str | None = None) -> list[dict[str, Any]]:
    """The journey as seed-000 events (``POST /api/v1/behavioral/batch`` items), in time order."""
    return [e for group in to_event_groups(journey, session_id, user_id) for e in group]


# query points --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class QueryPoint:
    """Right after action ``len(observed)`` was sent: what a predictor sees and the truth."""

    observed: list[Step]  # completed steps with their signals, then the current one (dwell -1)
    next_action: str  # the true next action (EXIT at the end)
    converts: bool  # the session has a purchase from now until its end (or already had one)
    converted: bool  # a purchase was already observed (conversion is then known: 1.0)
    visitor_type: str = field(default="", compare=False)


def query_points(journey: Journey) -> list[QueryPoint]:
    steps = journey.step_list()
    points = []
    for i, (action, _, _, _) in enumerate(steps):
        observed = [*steps[:i], (action, -1, -1.0, 0)]
        converted = any(s[0] == PURCHASE for s in steps[: i + 1])
        converts = converted or any(s[0] == PURCHASE for s in steps[i + 1 :])
        nxt = steps[i + 1][0] if i + 1 < len(steps) else EXIT
        points.append(QueryPoint(observed, nxt, converts, converted, journey.visitor_type))
    return points


# the oracle ----------------------------------------------------------------------------------------
def _signal_loglik(world: World, step: Step) -> np.ndarray:
    _, dwell_ms, scroll, clicks = step
    out = np.zeros(len(world.types))
    x = max(dwell_ms - MIN_DWELL_MS, 0.5)
    lx = math.log(x)
    s = min(max(scroll, 1e-12), 1.0 - 1e-12)
    for k, vt in enumerate(world.types):
        mu, sigma = vt.dwell
        a, b = vt.scroll
        lam = vt.clicks
        out[k] = (
            -lx - math.log(sigma) - 0.5 * math.log(2 * math.pi) - (lx - mu) ** 2 / (2 * sigma * sigma)
            + math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + (a - 1) * math.log(s) + (b - 1) * math.log1p(-s)
            + clicks * math.log(lam) - lam - math.lgamma(clicks + 1)
        )
    return out


def oracle_posterior(world: World, observed: Sequence[Step]) -> np.ndarray:
    """P(type | path so far, signals of the completed pages). The last step is the current page:
    at a query point (right after its page view or purchase was sent, before any of its in-page
    events) its signals are unknown to anybody, so they are never used, whatever they say."""
    logp = world.log_prior.copy()
    state = world.state_index[START]
    for i, step in enumerate(observed):
        action = step[0]
        o = world.outcome_index.get(action)
        if o is None or action == EXIT:
            raise ValueError(f"unknown action {action!r}")
        logp = logp + world.log_trans[:, state, o]
        if i < len(observed) - 1 and action != PURCHASE:
            logp = logp + _signal_loglik(world, step)
        state = world.state_index[action]
    logp = logp - logp.max()
    post = np.exp(logp)
    return post / post.sum()


def oracle_predict(world: World, observed: Sequence[Step]) -> Prediction:
    """The Bayes-optimal answer at a query point (see the module docstring).

    ``observed``: the steps so far, ``(action, dwell_ms, max_scroll, clicks)``; the last one is the
    current page (or purchase), just sent: its in-page signals are not known yet (nobody has seen
    them at the query point) and are ignored. Returns (distribution over the next action including
    ``exit`` and ``purchase``, probability that the session has a purchase from now until its end,
    1.0 when it already converted)."""
    post = oracle_posterior(world, observed)
    state = world.state_index[observed[-1][0]] if observed else world.state_index[START]
    row = post @ world.trans[:, state, :]
    dist = {o: float(p) for o, p in zip(world.outcomes, row, strict=True)}
    if any(step[0] == PURCHASE for step in observed):
        return dist, 1.0
    return dist, float(min(1.0, max(0.0, post @ world.absorption[:, state])))


def oracle_factory(world: World) -> Predictor:
    return lambda steps: oracle_predict(world, steps)


# the current-page-only baseline -------------------------------------------------------------------
class MarkovBaseline:
    """Empirical first-order Markov counts: next action given the current action only, and the
    conversion rate given the current action (query points not yet converted), add-one smoothing."""

    def __init__(self, training: Sequence[Sequence[Step]], ended_with_exit: Sequence[bool] | None = None) -> None:
        del ended_with_exit  # every journey ends with exit either way
        self.counts: dict[str, dict[str, int]] = {}
        self.conv: dict[str, list[int]] = {}  # action -> [converting points, points]
        vocab = {EXIT, PURCHASE}
        for steps in training:
            actions = [s[0] for s in steps]
            vocab.update(actions)
            prev = START
            for a in [*actions, EXIT]:
                row = self.counts.setdefault(prev, {})
                row[a] = row.get(a, 0) + 1
                prev = a
            first_purchase = actions.index(PURCHASE) if PURCHASE in actions else len(actions)
            for i in range(min(first_purchase, len(actions))):
                c = self.conv.setdefault(actions[i], [0, 0])
                c[0] += int(first_purchase < len(actions))
                c[1] += 1
        self.vocab = sorted(vocab)
        total: dict[str, int] = {}
        for row in self.counts.values():
            for a, count in row.items():
                total[a] = total.get(a, 0) + count
        self.marginal = total
        self.conv_all = [sum(c[0] for c in self.conv.values()), sum(c[1] for c in self.conv.values())]

    def __call__(self, steps: list[Step]) -> Prediction:
        current = steps[-1][0] if steps else START
        row = self.counts.get(current, self.marginal)
        denom = sum(row.values()) + len(self.vocab)
        dist = {a: (row.get(a, 0) + 1) / denom for a in self.vocab}
        if any(s[0] == PURCHASE for s in steps):
            return dist, 1.0
        c = self.conv.get(current, self.conv_all)
        return dist, (c[0] + 1) / (c[1] + 2)


def baseline_factory(training: list[list[Step]], ended_with_exit: list[bool]) -> Predictor:
    return MarkovBaseline(training, ended_with_exit)


# scores --------------------------------------------------------------------------------------------
def top1_accuracy(predictions: Sequence[Prediction], truths: Sequence[QueryPoint]) -> float:
    hits = sum(1 for (dist, _), t in zip(predictions, truths, strict=True)
               if dist and max(dist.items(), key=lambda kv: (kv[1], kv[0]))[0] == t.next_action)
    return hits / len(truths) if truths else float("nan")


def log_loss(predictions: Sequence[Prediction], truths: Sequence[QueryPoint], outcomes: Sequence[str],
             eps: float = 1e-6) -> float:
    """Mean -ln p(true next action). A distribution that lists only some outcomes (top 5) has its
    missing mass spread evenly over the outcomes it does not list."""
    total = 0.0
    for (dist, _), t in zip(predictions, truths, strict=True):
        listed = sum(max(p, 0.0) for p in dist.values())
        if t.next_action in dist:
            p = dist[t.next_action] / max(listed, 1.0)
        else:
            missing = [o for o in outcomes if o not in dist]
            p = max(1.0 - listed, 0.0) / len(missing) if missing else 0.0
        total -= math.log(max(p, eps))
    return total / len(truths) if truths else float("nan")


def auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve: Mann-Whitney U over ranks, ties get their average rank; NaN
    when one class is missing."""
    n_pos = sum(1 for y in labels if y)
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for m in range(i, j + 1):
            ranks[order[m]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, y in zip(ranks, labels, strict=True) if y)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def conversion_auc(predictions: Sequence[Prediction], truths: Sequence[QueryPoint]) -> float:
    """AUC of the conversion probability over the query points not yet converted (after a
    purchase the answer is known to everybody and would only inflate the figure)."""
    pairs = [(p[1], t.converts) for p, t in zip(predictions, truths, strict=True) if not t.converted]
    return auc([s for s, _ in pairs], [y for _, y in pairs])


@dataclass(frozen=True)
class Scores:
    accuracy: float
    log_loss: float
    auc: float
    n: int
    n_auc: int


def score(predictions: Sequence[Prediction], truths: Sequence[QueryPoint], outcomes: Sequence[str]) -> Scores:
    return Scores(
        accuracy=top1_accuracy(predictions, truths),
        log_loss=log_loss(predictions, truths, outcomes),
        auc=conversion_auc(predictions, truths),
        n=len(truths),
        n_auc=sum(1 for t in truths if not t.converted),
    )


def evaluate(predictor: Predictor, journeys: Sequence[Journey], outcomes: Sequence[str]) -> Scores:
    truths = [q for j in journeys for q in query_points(j)]
    return score([predictor(q.observed) for q in truths], truths, outcomes)
