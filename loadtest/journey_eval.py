"""Judge next-action and conversion predictions on simulated journeys with hidden visitor types.

Live, against a running server (loopback only, bounded in count and time)::

    .venv/bin/python -m loadtest.journey_eval --host http://127.0.0.1:8000 --train 3000 --test 300 --seed 7 [--key KEY]

1. posts the training journeys (``loadtest.journeys.generate``, backfilled: they start 30 days ago)
   as seed-000 batches to ``POST /api/v1/behavioral/batch`` (at most 1000 events a request);
2. waits (at most ``--wait`` s) until ``GET /api/v1/behavioral/models`` answers ``{"journeys": N, ...}``
   with N grown by the number of training journeys (if that route answers 404: a fixed 10 s wait);
3. replays each test journey step by step, timestamped so that it ends about now: one request per
   action (the in-page events of page i, then the page view of page i+1, or the purchase), then
   ``GET /api/v1/behavioral/patterns?sessionId=…&includePredictions=true``, reading
   ``predictions.nextAction.distribution`` (``[{"action", "probability"}]``, top 5) or
   ``predictions.nextAction.{action, probability}``, and
   ``predictions.conversionProbability.probability`` (while the server has no ``/patterns`` route
   at all, it says so and reads ``insights.nextAction`` / ``insights.conversionProbability`` of
   ``GET /api/v1/behavioral/sessions/{id}`` instead);
4. prints the model against the truth, the Bayes-optimal oracle (``oracle_predict``, which knows the
   world) and a current-page-only Markov baseline trained on the same journeys.

Offline, no HTTP: the same table for any Python predictor::

    .venv/bin/python -m loadtest.journey_eval --offline --train 3000 --test 300 --seed 7 [--predictor module:factory]

The predictor interface (``--predictor module:factory``)::

    Step = tuple[str, int, float, int]   # (action, dwell_ms, max_scroll, clicks)

    def factory(training: list[list[Step]], ended_with_exit: list[bool]) -> Callable[[list[Step]], tuple[dict[str, float], float]]
    def predict(steps: list[Step]) -> tuple[dict[str, float], float]

- ``training``: one list of steps per completed training journey, in time order. ``action`` is
  ``view_<route>`` or ``purchase``; the step lists never contain ``exit``: every journey ends with
  ``exit`` after its last step. All dwell times are known (>= 1000 ms); ``max_scroll`` in [0, 1] for
  a page, -1.0 for a purchase (no scroll events); ``clicks`` >= 0 (0 for a purchase).
- ``ended_with_exit[i]``: True when journey i ended with an explicit ``session_end`` event, False
  when it simply stopped and the 30-minute rule ended it (either way its next action was ``exit``).
- ``predict(steps)`` is called at a query point: right after the last step's page view (or purchase)
  was sent. The earlier steps carry their signals; the last (current) one is ``(action, -1, -1.0, 0)``
  since nobody has seen its in-page events yet. It returns (probability of each next action,
  ``view_<route>`` / ``purchase`` / ``exit``; listing only some is allowed, the rest of the mass is
  spread evenly over the unlisted outcomes for the log loss; probability that the session has a
  purchase from now until it ends, 1.0 if it already has one).
- ``loadtest.journeys:baseline_factory`` is such a factory (the current-page-only baseline).

Scores: top-1 accuracy of the next action and its log loss over every query point; conversion AUC
(rank-based, ties averaged) over the query points before any purchase of the session (after one the
answer is known). A missing server answer counts as a wrong top-1, a uniform distribution and a
conversion probability of 0.5.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from loadtest.journeys import (
    Journey,
    Prediction,
    Predictor,
    QueryPoint,
    Scores,
    baseline_factory,
    default_world,
    generate,
    oracle_factory,
    oracle_posterior,
    query_points,
    score,
    shifted,
    to_event_groups,
    to_events,
)
from loadtest.plan import TargetRefused, parse_target

DAY_MS = 86_400_000
MAX_TRAIN = 100_000
MAX_TEST = 10_000
MAX_BATCH = 1000
TEST_SEED_OFFSET = 1_000_000


def journeys_for(seed: int, n_train: int, n_test: int, now_ms: int) -> tuple[list[Journey], list[Journey]]:
    """Training journeys backfilled from 30 days ago (staggered to end at least a day ago), and the
    test journeys (another seed; re-timed when they are replayed live)."""
    world = default_world()
    gap = min(300_000, (28 * DAY_MS) // max(n_train, 1))
    train = generate(world, n_train, seed, now_ms - 30 * DAY_MS, gap_ms=gap)
    test = generate(world, n_test, seed + TEST_SEED_OFFSET, now_ms - DAY_MS, gap_ms=60_000)
    return train, test


def load_factory(spec: str) -> Any:
    module, _, name = spec.partition(":")
    if not module or not name:
        raise SystemExit(f"--predictor must be module:factory, got {spec!r}")
    return getattr(importlib.import_module(module), name)


# the table -----------------------------------------------------------------------------------------
def _fmt(x: float | None) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.3f}"


def table(model: Scores | None, oracle: Scores, baseline: Scores, truths: Sequence[QueryPoint],
          missing: int | None = None) -> str:
    def ratio(a: float | None, b: float) -> float | None:
        return None if a is None or math.isnan(a) or not b else a / b

    m_acc = model.accuracy if model else None
    m_ll = model.log_loss if model else None
    m_auc = model.auc if model else None
    positives = sum(1 for t in truths if not t.converted and t.converts)
    lines = [
        f"{'':26}{'model':>10}{'oracle':>10}{'baseline':>10}",
        f"{'next action top-1':26}{_fmt(m_acc):>10}{_fmt(oracle.accuracy):>10}{_fmt(baseline.accuracy):>10}",
        f"{'  ÷ oracle':26}{_fmt(ratio(m_acc, oracle.accuracy)):>10}{'1.000':>10}"
        f"{_fmt(ratio(baseline.accuracy, oracle.accuracy)):>10}",
        f"{'next action log loss':26}{_fmt(m_ll):>10}{_fmt(oracle.log_loss):>10}{_fmt(baseline.log_loss):>10}",
        f"{'conversion AUC':26}{_fmt(m_auc):>10}{_fmt(oracle.auc):>10}{_fmt(baseline.auc):>10}",
        f"{'  ÷ oracle':26}{_fmt(ratio(m_auc, oracle.auc)):>10}{'1.000':>10}{_fmt(ratio(baseline.auc, oracle.auc)):>10}",
        f"predictions: {len(truths)} (conversion AUC over {oracle.n_auc} before any purchase, "
        f"{positives} of them converting)",
        f"oracle - baseline: top-1 {100 * (oracle.accuracy - baseline.accuracy):+.1f} points, "
        f"AUC {oracle.auc - baseline.auc:+.3f}",
    ]
    if missing is not None:
        lines.append(f"query points without a model answer: {missing}")
    return "\n".join(lines)


def offline(args: argparse.Namespace) -> int:
    world = default_world()
    now_ms = int(time.time() * 1000)
    train, test = journeys_for(args.seed, args.train, args.test, now_ms)
    steps = [j.step_list() for j in train]
    ended = [j.ends_with_session_end for j in train]
    truths = [q for j in test for q in query_points(j)]

    def run(predictor: Predictor) -> Scores:
        return score([predictor(list(q.observed)) for q in truths], truths, world.outcomes)

    oracle = run(oracle_factory(world))
    baseline = run(baseline_factory(steps, ended))
    model = None
    if args.predictor:
        started = time.perf_counter()
        predictor = load_factory(args.predictor)(steps, ended)
        fitted = time.perf_counter()
        model = run(predictor)
        print(f"predictor {args.predictor}: built in {fitted - started:.2f} s, "
              f"{1e6 * (time.perf_counter() - fitted) / max(len(truths), 1):.0f} µs per prediction")
    print(f"offline: train {args.train} journeys (seed {args.seed}), test {args.test} (seed {args.seed + TEST_SEED_OFFSET})")
    print(table(model, oracle, baseline, truths))
    names = world.type_names()
    hits = sum(1 for q in truths if names[int(oracle_posterior(world, q.observed).argmax())] == q.visitor_type)
    print(f"types overlap: the oracle's most likely type is the hidden one at {hits / max(len(truths), 1):.1%}"
          " of the query points")
    return 0


# live ------------------------------------------------------------------------------------------------
def _find_predictions(body: Any) -> dict[str, Any] | None:
    """The object that holds ``nextAction``: ``predictions`` of a ``/patterns`` answer (top level or
    nested, e.g. under ``data``), or ``insights`` of a ``/sessions/{id}`` answer."""
    if isinstance(body, dict):
        if "nextAction" in body:
            return body
        children = list(body.values())
    elif isinstance(body, list):
        children = body
    else:
        return None
    for child in children:
        found = _find_predictions(child)
        if found is not None:
            return found
    return None


def parse_prediction(body: Any) -> Prediction | None:
    """(next-action distribution, conversion probability) from a ``/patterns`` answer (or a
    session's live state), or None when it has no prediction."""
    preds = _find_predictions(body)
    if preds is None:
        return None
    dist: dict[str, float] = {}
    nxt = preds.get("nextAction") or {}
    if isinstance(nxt, dict):
        for item in nxt.get("distribution") or []:
            if isinstance(item, dict) and isinstance(item.get("action"), str):
                dist[item["action"]] = float(item.get("probability") or 0.0)
        if not dist and isinstance(nxt.get("action"), str):
            dist[nxt["action"]] = float(nxt.get("probability") or 0.0)
    conv = preds.get("conversionProbability")
    probability = conv.get("probability") if isinstance(conv, dict) else conv
    if not dist and not isinstance(probability, int | float):
        return None
    return dist, float(probability) if isinstance(probability, int | float) else 0.5


class Live:
    def __init__(self, host: str, key: str | None, timeout: float) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=host.rstrip("/"), headers=headers, timeout=timeout)
        self.source = "patterns"  # or "session", when the server has no /patterns route
        self.failures: dict[int, int] = {}  # HTTP status of the prediction reads that failed

    def close(self) -> None:
        self.http.close()

    def post_batch(self, events: list[dict[str, Any]]) -> int:
        """Posts one batch (retrying a 503 a few times); returns how many events were rejected."""
        for _ in range(10):
            response = self.http.post("/api/v1/behavioral/batch", json={"events": events})
            if response.status_code == 503:
                time.sleep(min(float(response.headers.get("retry-after", "1") or 1), 5.0))
                continue
            if response.status_code >= 400:
                raise SystemExit(f"batch refused: {response.status_code} {response.text[:500]}")
            body = response.json() if response.content else {}
            rejected = body.get("rejected") if isinstance(body, dict) else None
            return len(rejected) if isinstance(rejected, list) else 0
        raise SystemExit("batch refused: 503 ten times in a row")

    def journeys_learned(self) -> int | None:
        """The models route's journey count; None when the route does not exist (404)."""
        response = self.http.get("/api/v1/behavioral/models")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        body = response.json()
        value = body.get("journeys") if isinstance(body, dict) else None
        if isinstance(value, dict):  # tolerate {"journeys": {"count": n}}
            value = value.get("count")
        return int(value) if isinstance(value, int | float) else 0

    def predict(self, session_id: str) -> Prediction | None:
        if self.source == "patterns":
            response = self.http.get("/api/v1/behavioral/patterns",
                                     params={"sessionId": session_id, "includePredictions": "true"})
            if response.status_code == 404 and "no route" in response.text:
                print("GET /api/v1/behavioral/patterns: no such route; reading the predictions from the session's"
                      " live state instead (GET /api/v1/behavioral/sessions/{id}: insights.nextAction,"
                      " insights.conversionProbability)")
                self.source = "session"
        if self.source == "session":
            response = self.http.get(f"/api/v1/behavioral/sessions/{session_id}")
        if response.status_code != 200:
            self.failures[response.status_code] = self.failures.get(response.status_code, 0) + 1
            return None
        return parse_prediction(response.json())


def live(args: argparse.Namespace) -> int:
    try:
        parse_target(args.host)  # loopback only (the load generator's rule)
    except TargetRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    world = default_world()
    now_ms = int(time.time() * 1000)
    train, test = journeys_for(args.seed, args.train, args.test, now_ms)
    tag = f"{args.seed}-{os.urandom(3).hex()}"  # a fresh run never reuses a session id
    client = Live(args.host, args.key, args.http_timeout)
    try:
        before = client.journeys_learned()
        started = time.perf_counter()
        buffer: list[dict[str, Any]] = []
        rejected = sent = 0
        for j in train:
            user = f"je-{tag}-u{j.index}" if j.index % 2 == 0 else None
            buffer.extend(to_events(j, f"je-{tag}-train-{j.index}", user))
            while len(buffer) >= MAX_BATCH:
                rejected += client.post_batch(buffer[:MAX_BATCH])
                sent += MAX_BATCH
                del buffer[:MAX_BATCH]
        if buffer:
            rejected += client.post_batch(buffer)
            sent += len(buffer)
        print(f"posted {len(train)} training journeys: {sent} events in {time.perf_counter() - started:.1f} s"
              f" ({rejected} rejected); session ids je-{tag}-train-*")

        if before is None:
            print("GET /api/v1/behavioral/models answers 404: waiting a fixed 10 s instead")
            time.sleep(10.0)
        else:
            target = before + len(train)
            deadline = time.monotonic() + args.wait
            learned = before
            while time.monotonic() < deadline:
                learned = client.journeys_learned() or 0
                if learned >= target:
                    break
                time.sleep(1.0)
            print(f"models: {learned} journeys learned (was {before}, expected >= {target})"
                  + ("" if learned >= target else f" -- gave up waiting after {args.wait:.0f} s"))

        oracle_predict = oracle_factory(world)
        baseline = baseline_factory([j.step_list() for j in train], [j.ends_with_session_end for j in train])
        truths: list[QueryPoint] = []
        model_preds: list[Prediction] = []
        missing = 0
        started = time.perf_counter()
        for j in test:
            # ends about now: the session is live while it is replayed (event time = history's clock)
            replay = shifted(j, int(time.time() * 1000) - j.duration_ms - 2_000)
            session = f"je-{tag}-test-{j.index}"
            groups = to_event_groups(replay, session, f"je-{tag}-tu{j.index}" if j.index % 2 == 0 else None)
            points = query_points(j)
            for group, point in zip(groups[:-1], points, strict=True):
                client.post_batch(group)
                answer = client.predict(session)
                if answer is None:
                    missing += 1
                    answer = ({}, 0.5)
                model_preds.append(answer)
                truths.append(point)
            if groups[-1]:
                client.post_batch(groups[-1])
        print(f"replayed {len(test)} test journeys, {len(truths)} query points in {time.perf_counter() - started:.1f} s"
              f" (predictions from {'/patterns' if client.source == 'patterns' else 'the session live state'})")
        if client.failures:
            print("prediction reads that failed, by HTTP status: "
                  + ", ".join(f"{status}: {count}" for status, count in sorted(client.failures.items())))
    finally:
        client.close()
    model = score(model_preds, truths, world.outcomes)
    oracle = score([oracle_predict(list(t.observed)) for t in truths], truths, world.outcomes)
    base = score([baseline(list(t.observed)) for t in truths], truths, world.outcomes)
    print(table(model, oracle, base, truths, missing))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.journey_eval", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="http://127.0.0.1:8000")
    parser.add_argument("--key", default=os.environ.get("PULSE_KEY"), help="API key (loopback servers need none)")
    parser.add_argument("--train", type=int, default=3000, help=f"training journeys (at most {MAX_TRAIN})")
    parser.add_argument("--test", type=int, default=300, help=f"test journeys (at most {MAX_TEST})")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the models (at most 300)")
    parser.add_argument("--http-timeout", type=float, default=30.0)
    parser.add_argument("--offline", action="store_true", help="no HTTP: evaluate --predictor (if given) offline")
    parser.add_argument("--predictor", help="module:factory, see the module docstring (offline only)")
    args = parser.parse_args(argv)
    if not (1 <= args.train <= MAX_TRAIN and 1 <= args.test <= MAX_TEST):
        parser.error(f"--train must be in 1..{MAX_TRAIN} and --test in 1..{MAX_TEST}")
    args.wait = min(max(args.wait, 0.0), 300.0)
    if args.predictor and not args.offline:
        parser.error("--predictor needs --offline (live, the server is the model)")
    return offline(args) if args.offline else live(args)


if __name__ == "__main__":
    sys.exit(main())
