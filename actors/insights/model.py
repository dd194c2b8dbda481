"""The journey model: a mixture of first-order Markov chains over actions, with in-page signals.

Visitors differ in ways no single event shows. A model that looks only at the current page knows
"people on /pricing go to /checkout 30 % of the time"; it cannot see that *this* visitor read three
product pages slowly and scrolled to the bottom of each, which is what a researcher does and a
buyer does not. This model makes the hidden kind of visitor explicit: K latent types, each with

- a prior weight ``pi[k]``,
- a transition table ``trans[k][s][o]``: from state ``s`` (``start`` or an action) to outcome ``o``
  (an action or ``exit``),
- signal tables ``signals[k][f][b]``: how long a visitor of type k dwells on a page, how far it
  scrolls and how often it clicks, as bins (one table per feature, the same for every page).

A session's path and the signals of the pages it already left give a posterior over the types
(Bayes' rule); the next action is the posterior-weighted mix of the types' transition rows, and the
conversion probability the posterior-weighted chance of reaching a conversion action before
``exit`` (absorption probabilities of each type's chain). With K = 1 this is exactly the classic
current-page Markov model, which is what the tests compare against.

Fitting is EM over the recent completed journeys of a project (expected counts, then normalised
counts): a journey is a handful of transitions and signal bins, so a fit is a few sparse-dense
matrix products over at most MAX_JOURNEYS rows. It starts from a deterministic initialisation
(farthest-point seeding on the journeys' count vectors, ordered by journey key), so the same set
of journeys gives the same model on every node, whatever order they arrived in. K is chosen by
BIC among 1..MAX_TYPES: few journeys give a simple model, rich data a richer one.

This module holds the model's vocabulary (steps, journeys, bins, predictions) and the counts read
without a model; ``actors.insights.mixture`` fits and uses the model (numpy). Everything is sans-IO
and synchronous; the service in ``actors.insights.service`` runs fits in a worker thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import median
from typing import Final

import msgspec

START: Final = "start"
EXIT: Final = "exit"
MAX_TYPES: Final = 5
MAX_JOURNEYS: Final = 10_000  # the most recent journeys a fit looks at
EM_ITERATIONS: Final = 60
EM_TOLERANCE: Final = 1e-5  # relative change of the log likelihood that ends EM
PSEUDO_COUNT: Final = 0.1  # Dirichlet smoothing of every table
KMEANS_ROUNDS: Final = 10  # k-means rounds of each deterministic start

# Signal bins of a completed page (upper bounds, the last bin is open)
DWELL_BOUNDS_MS: Final = (5_000, 15_000, 45_000, 120_000, 300_000)
SCROLL_BOUNDS: Final = (0.25, 0.5, 0.75, 0.95)
CLICK_BOUNDS: Final = (0, 1, 2, 4)
FEATURES: Final = (("dwell", len(DWELL_BOUNDS_MS) + 1), ("scroll", len(SCROLL_BOUNDS) + 2), ("clicks", len(CLICK_BOUNDS) + 1))


class Step(msgspec.Struct, array_like=True):
    """One action of a journey and the in-page signals of the page it opened.

    ``dwell_ms`` is -1 while the page is still open (the current page): its signals are not known
    yet and are not used. ``scroll`` is the maximum depth seen (-1: no scroll event), ``clicks``
    the interactions on the page."""

    action: str
    dwell_ms: int = -1
    scroll: float = -1.0
    clicks: int = 0


class Journey(msgspec.Struct, array_like=True):
    """A completed session: its steps, and whether it ended by leaving (always, for a journey)."""

    key: str  # "<session id>@<start ms>": the same journey has the same key on every node
    ended_at: int  # unix ms of its last event
    steps: list[Step]
    # what the historical and predictive analytics read (filled when the journey completes)
    started_at: int = 0
    user_id: str | None = None
    device_type: str | None = None
    persona: str | None = None
    engagement: float = 0.0
    converted: bool = False
    conversions: int = 0  # conversion actions in the journey
    pattern: str = ""  # the dominant behaviour pattern
    patterns: list[str] = []  # every pattern the journey showed


def _bin(value: float, bounds: Sequence[float]) -> int:
    for i, bound in enumerate(bounds):
        if value <= bound:
            return i
    return len(bounds)


def signal_bins(step: Step) -> tuple[int, int, int] | None:
    """(dwell, scroll, clicks) bins of a completed page, or None while the page is open."""
    if step.dwell_ms < 0:
        return None
    scroll = 0 if step.scroll < 0 else 1 + _bin(step.scroll, SCROLL_BOUNDS)
    return (_bin(step.dwell_ms, DWELL_BOUNDS_MS), scroll, _bin(step.clicks, CLICK_BOUNDS))


class Prediction(msgspec.Struct, kw_only=True):
    """What the model says about one session now."""

    next_actions: list[tuple[str, float]]  # every outcome with its probability, most likely first
    conversion: float  # chance of a conversion action before the session ends
    type_posterior: list[float]  # P(type | what the session showed), one per type
    journeys: int  # how many completed journeys the model was fitted on


def transition_counts(journeys: Sequence[Journey]) -> dict[str, dict[str, float]]:
    """What the journeys did: from each action (and ``start``), how many times each next action
    (or ``exit``) followed. Observed counts, not the model's probabilities (funnels read them)."""
    counts: dict[str, dict[str, float]] = {}
    for journey in journeys:
        state = START
        for step in journey.steps:
            row = counts.setdefault(state, {})
            row[step.action] = row.get(step.action, 0.0) + 1
            state = step.action
        row = counts.setdefault(state, {})
        row[EXIT] = row.get(EXIT, 0.0) + 1
    return counts


def dwell_medians(journeys: Sequence[Journey]) -> dict[str, float]:
    """The median dwell (ms) on each action's page, over the completed pages of ``journeys``."""
    dwell: dict[str, list[int]] = {}
    for journey in journeys:
        for step in journey.steps:
            if step.dwell_ms >= 0:
                dwell.setdefault(step.action, []).append(step.dwell_ms)
    return {action: float(median(values)) for action, values in dwell.items()}
