"""Fitting and using the journey model (see ``actors.insights.model`` for what it is).

numpy lives here only: a process loads it with its first fit, not at start.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence

# One BLAS thread: the matrices are small, and on a 2-core machine OpenBLAS's own threads fight the
# trio thread and each other (a 3,000-journey fit took 6.3 s with them, 0.9 s without). Must be set
# before numpy loads OpenBLAS; server/cli.py sets it first thing too.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from actors.insights.model import (  # noqa: E402
    EM_ITERATIONS,
    EM_TOLERANCE,
    EXIT,
    FEATURES,
    KMEANS_ROUNDS,
    MAX_JOURNEYS,
    MAX_TYPES,
    PSEUDO_COUNT,
    START,
    Journey,
    Prediction,
    Step,
    signal_bins,
)


class JourneyModel:
    """A fitted model (immutable once built). ``fit`` builds one; ``predict`` answers a session."""

    def __init__(self, actions: list[str], conversions: frozenset[str], log_pi: np.ndarray,
                 log_trans: np.ndarray, log_signals: list[np.ndarray], journeys: int, log_likelihood: float) -> None:
        self.actions = actions  # outcome index -> action; EXIT is the last outcome
        self.outcomes = [*actions, EXIT]
        self.state_index = {START: 0, **{a: i + 1 for i, a in enumerate(actions)}}
        self.conversions = conversions
        self.log_pi = log_pi  # (K,)
        self.log_trans = log_trans  # (K, S, O): S = 1 + len(actions), O = len(actions) + 1
        self.log_signals = log_signals  # per feature (K, bins)
        self.journeys = journeys
        self.log_likelihood = log_likelihood
        self.types = len(log_pi)
        self._absorb = self._absorption()  # (K, S): P(conversion before exit | type, state)

    # prediction ----------------------------------------------------------------------------------
    def log_posterior(self, steps: Sequence[Step]) -> np.ndarray:
        """log P(type | the path and the signals of the pages already left), normalised."""
        logp = self.log_pi.copy()
        state = 0
        for step in steps:
            outcome = self.state_index.get(step.action)
            if outcome is None:  # an action the model has never seen: no evidence either way
                state = -1
                continue
            if state >= 0:
                logp += self.log_trans[:, state, outcome - 1]
            state = outcome
            bins = signal_bins(step)
            if bins is not None:
                for f, b in enumerate(bins):
                    logp += self.log_signals[f][:, b]
        return logp - _logsumexp(logp)

    def predict(self, steps: Sequence[Step]) -> Prediction | None:
        """None when the session has no action yet or its current action is unknown to the model."""
        if not steps:
            return None
        state = self.state_index.get(steps[-1].action)
        if state is None:
            return None
        post = np.exp(self.log_posterior(steps))
        row = post @ np.exp(self.log_trans[:, state, :])
        order = np.argsort(-row, kind="stable")
        converted = any(step.action in self.conversions for step in steps)
        conversion = 1.0 if converted else float(post @ self._absorb[:, state])
        return Prediction(
            next_actions=[(self.outcomes[i], float(row[i])) for i in order],
            conversion=min(1.0, max(0.0, conversion)),
            type_posterior=[float(p) for p in post],
            journeys=self.journeys,
        )

    def _absorption(self) -> np.ndarray:
        """For each type and state: the probability of reaching a conversion action before exit.
        Solves x = b + Q x on the non-conversion states (conversion states are absorbing)."""
        k_types, n_states, _ = self.log_trans.shape
        result = np.zeros((k_types, n_states))
        if not self.conversions:
            return result
        conv_outcomes = [i for i, a in enumerate(self.actions) if a in self.conversions]
        conv_states = {o + 1 for o in conv_outcomes}
        free = [s for s in range(n_states) if s not in conv_states]
        for k in range(k_types):
            trans = np.exp(self.log_trans[k])  # (S, O)
            b = trans[free][:, conv_outcomes].sum(axis=1)
            # transitions among free states: outcome o leads to state o + 1 (exit leads nowhere)
            q = np.zeros((len(free), len(free)))
            position = {s: i for i, s in enumerate(free)}
            for o in range(len(self.actions)):
                target = position.get(o + 1)
                if target is not None:
                    q[:, target] = trans[free, o]
            try:
                x = np.linalg.solve(np.eye(len(free)) - q, b)
            except np.linalg.LinAlgError:
                x = np.linalg.lstsq(np.eye(len(free)) - q, b, rcond=None)[0]
            result[k, free] = np.clip(x, 0.0, 1.0)
            result[k, list(conv_states)] = 1.0
        return result

    def start_conversion(self) -> float:
        """The chance that a new session converts: absorption from ``start`` under the prior."""
        return float(np.exp(self.log_pi) @ self._absorb[:, 0])


def _logsumexp(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    top = np.max(values, axis=axis, keepdims=True)
    out = top + np.log(np.sum(np.exp(values - top), axis=axis, keepdims=True))
    return out if axis is not None else out.reshape(())


# fitting -------------------------------------------------------------------------------------------
class _Design:
    """Journeys as count matrices: transitions (J, S*O) and signal bins per feature (J, bins)."""

    def __init__(self, journeys: Sequence[Journey]) -> None:
        actions = sorted({step.action for j in journeys for step in j.steps})
        self.actions = actions
        index = {a: i + 1 for i, a in enumerate(actions)}
        n_states, n_out = 1 + len(actions), len(actions) + 1
        self.shape = (n_states, n_out)
        rows = len(journeys)
        trans = np.zeros((rows, n_states * n_out))
        signals = [np.zeros((rows, bins)) for _, bins in FEATURES]
        for r, journey in enumerate(journeys):
            state = 0
            for step in journey.steps:
                outcome = index[step.action]
                trans[r, state * n_out + outcome - 1] += 1
                state = outcome
                bins = signal_bins(step)
                if bins is not None:
                    for f, b in enumerate(bins):
                        signals[f][r, b] += 1
            trans[r, state * n_out + n_out - 1] += 1  # the journey ended: exit
        self.trans = trans
        self.signals = signals
        # free parameters of one type: the observed cells of each table, less one per row
        # (cells never observed are structural zeros, not parameters: a fair BIC needs that)
        seen = (trans.sum(axis=0) > 0).reshape(n_states, n_out)
        rows_seen = int(seen.any(axis=1).sum())
        self.free_parameters = int(seen.sum()) - rows_seen + sum(
            int((s.sum(axis=0) > 0).sum()) - 1 for s in signals
        )


def fit(journeys: Sequence[Journey], conversions: frozenset[str], *, max_types: int = MAX_TYPES) -> JourneyModel | None:
    """The best model (by BIC over 1..max_types types) for ``journeys``; None without any.
    Deterministic: journeys are ordered by key first, and nothing is random."""
    if not journeys:
        return None
    ordered = sorted(journeys, key=lambda j: (j.ended_at, j.key))[-MAX_JOURNEYS:]
    design = _Design(ordered)
    best: JourneyModel | None = None
    best_bic = math.inf
    for k in range(1, max(1, max_types) + 1):
        if k > 1 and len(ordered) < 20 * k:  # too few journeys to tell k kinds apart
            break
        model = _fit_k(design, conversions, k, len(ordered))
        n_params = (k - 1) + k * design.free_parameters
        bic = -2 * model.log_likelihood + n_params * math.log(len(ordered))
        if bic < best_bic - 1e-9:
            best, best_bic = model, bic
        elif k > 2:
            break  # BIC got worse twice in a row: more types only overfit
    return best


def _normalise_log(counts: np.ndarray, axis: int) -> np.ndarray:
    counts = counts + PSEUDO_COUNT
    return np.log(counts) - np.log(counts.sum(axis=axis, keepdims=True))


def _kmeans_responsibilities(x: np.ndarray, k: int) -> np.ndarray:
    """Deterministic start: farthest-point seeding on the rows of ``x`` (normalised count
    vectors), a few rounds of k-means, then each journey softly assigned to its nearest centre."""
    centre = x.mean(axis=0)
    seeds = [int(np.argmax(np.linalg.norm(x - centre, axis=1)))]
    dist = np.linalg.norm(x - x[seeds[0]], axis=1)
    while len(seeds) < k:
        seeds.append(int(np.argmax(dist)))
        dist = np.minimum(dist, np.linalg.norm(x - x[seeds[-1]], axis=1))
    centres = x[seeds].copy()
    squared = (x * x).sum(axis=1, keepdims=True)

    def distances() -> np.ndarray:  # (J, k), without a (J, k, D) temporary
        return np.sqrt(np.maximum(squared - 2 * x @ centres.T + (centres * centres).sum(axis=1), 0.0))

    for _ in range(KMEANS_ROUNDS):
        nearest = np.argmin(distances(), axis=1)
        for c in range(k):
            members = x[nearest == c]
            if len(members):
                centres[c] = members.mean(axis=0)
    logits = -8.0 * distances()
    return np.exp(logits - _logsumexp(logits, axis=1))


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1.0, norms)


def _starts(design: _Design, k: int) -> list[np.ndarray]:
    """Several deterministic starting points: the journeys clustered by their whole count vector,
    by their path only and by their in-page signals only (EM keeps the best)."""
    views = [
        np.hstack([_unit_rows(design.trans), *(_unit_rows(s) for s in design.signals)]),
        _unit_rows(design.trans),
        np.hstack([_unit_rows(s) for s in design.signals]),
    ]
    return [_kmeans_responsibilities(v, k) for v in views]


def _fit_k(design: _Design, conversions: frozenset[str], k: int, journeys: int) -> JourneyModel:
    if k == 1:
        return _em(design, conversions, np.ones((design.trans.shape[0], 1)), journeys)
    fits = [_em(design, conversions, start, journeys) for start in _starts(design, k)]
    return max(fits, key=lambda m: m.log_likelihood)  # the first of equals: deterministic


def _em(design: _Design, conversions: frozenset[str], resp: np.ndarray, journeys: int) -> JourneyModel:
    n_states, n_out = design.shape
    k = resp.shape[1]
    previous = -math.inf
    log_pi = log_trans = None
    log_signals: list[np.ndarray] = []
    log_likelihood = -math.inf
    for _ in range(EM_ITERATIONS):
        # M step: expected counts -> smoothed, normalised log tables
        weight = resp.sum(axis=0)
        log_pi = np.log(weight + PSEUDO_COUNT) - np.log(weight.sum() + PSEUDO_COUNT * k)
        trans_counts = (resp.T @ design.trans).reshape(k, n_states, n_out)
        log_trans = _normalise_log(trans_counts, axis=2)
        log_signals = [_normalise_log(resp.T @ sig, axis=1) for sig in design.signals]
        # E step: each journey's log likelihood under each type
        ll = log_pi + design.trans @ log_trans.reshape(k, -1).T
        for sig, table in zip(design.signals, log_signals, strict=True):
            ll = ll + sig @ table.T
        norm = _logsumexp(ll, axis=1)
        resp = np.exp(ll - norm)
        log_likelihood = float(norm.sum())
        if k == 1 or abs(log_likelihood - previous) <= EM_TOLERANCE * abs(log_likelihood):
            break
        previous = log_likelihood
    assert log_pi is not None and log_trans is not None
    return JourneyModel(design.actions, conversions, log_pi, log_trans, log_signals, journeys, log_likelihood)


def predictor_factory(training: list[list[tuple[str, int, float, int]]], ended_with_exit: list[bool]) -> Callable[[list[tuple[str, int, float, int]]], tuple[dict[str, float], float]]:
    """The model behind ``python -m loadtest.journey_eval --offline --predictor
    actors.insights.mixture:predictor_factory`` (the evaluator's step tuples in, its answer out)."""
    journeys = [
        Journey(key=f"j{i}", ended_at=i, steps=[Step(a, d, s, c) for a, d, s, c in steps])
        for i, steps in enumerate(training)
    ]
    model = fit(journeys, frozenset({"purchase"}))

    def predict(steps: list[tuple[str, int, float, int]]) -> tuple[dict[str, float], float]:
        prediction = model.predict([Step(a, d, s, c) for a, d, s, c in steps]) if model else None
        if prediction is None:
            return {}, 0.5
        return dict(prediction.next_actions), prediction.conversion

    return predict
