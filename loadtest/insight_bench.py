"""CPU cost of the session insights, per event and per read, on one core (no I/O).

    .venv/bin/python -m loadtest.insight_bench [--journeys 3000]

- ``fold``: what every event costs in the session actor: the journey tracker's add (an ordered
  insert, and the fold into the journey once the settle window fills), for a page view and for an
  in-page event, in order and with every fourth event arriving late;
- ``read``: engagement, intent, patterns and the recommended action for a session (what a stream
  subscriber or a route costs per event / per request), with the model's prediction cached and not;
- ``fit``: fitting the journey model on N simulated journeys (loadtest/journeys.py), and one
  prediction.
Run the server benchmarks (docs/performance.md) for what it costs end to end.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator

from actors.insights.insight import InsightCache
from actors.insights.journey import DEFAULT_CONVERSIONS, JourneyEvent
from actors.insights.mixture import fit
from actors.insights.model import Journey, Step
from actors.insights.service import InsightService
from actors.insights.tracker import JourneyLog, JourneyTracker
from loadtest.journeys import default_world, generate


def per_call_us(fn: Callable[[], object], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n * 1e6


def tracker() -> JourneyTracker:
    return JourneyTracker(JourneyLog(), conversions=lambda: DEFAULT_CONVERSIONS, on_finished=lambda journey: None)


def fold_costs(n: int) -> dict[str, float]:
    out = {}
    for label, late, page_view in (("page view, in order", False, True), ("scroll, in order", False, False),
                                   ("page view, 1 in 4 late", True, True)):
        t = tracker()
        counter = iter(range(1, 10**9))

        def add(t: JourneyTracker = t, late: bool = late, page_view: bool = page_view,
                counter: Iterator[int] = counter) -> None:
            i = next(counter)
            ts = i * 1000 - (3500 if late and i % 4 == 0 else 0)
            t.add(JourneyEvent(ts, i, "page_view" if page_view else "scroll", f"/p/{i % 50}" if page_view else None,
                               None if page_view else 0.5, page_view))

        out[label] = per_call_us(add, n)
    return out


def read_costs(n: int, service: InsightService) -> dict[str, float]:
    t = tracker()
    for i in range(1, 21):
        t.add(JourneyEvent(i * 10_000, i, "page_view", f"/product/{i}", None, True))
        t.add(JourneyEvent(i * 10_000 + 5, 1000 + i, "scroll", None, 0.7, False))
    journey = t.settle()
    cache = InsightCache()
    cached = per_call_us(lambda: cache.insights("bench", "s", journey, service), n)
    fresh = per_call_us(lambda: InsightCache().insights("bench", "s", journey, service), max(1, n // 10))
    step = per_call_us(lambda: cache.step("bench", "s", journey, service), n)
    return {"insights (prediction cached)": cached, "insights (prediction computed)": fresh,
            "per-event stream insight": step}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--journeys", type=int, default=3000)
    parser.add_argument("-n", type=int, default=50_000, help="calls per measurement")
    args = parser.parse_args(argv)
    for label, us in fold_costs(args.n).items():
        print(f"fold   {label:32s} {us:7.2f} µs per event")
    world = default_world()
    journeys = [Journey(key=f"j{i}", ended_at=i, steps=[Step(*s) for s in j.step_list()])
                for i, j in enumerate(generate(world, args.journeys, seed=7, start_ms=0))]
    started = time.perf_counter()
    model = fit(journeys, frozenset({"purchase"}))
    fitted = time.perf_counter() - started
    assert model is not None
    print(f"fit    {args.journeys} journeys: {fitted:.2f} s, {model.types} visitor types")
    probe = [Step("view_home", 20_000, 0.5, 2), Step("view_product")]
    print(f"fit    one prediction                   {per_call_us(lambda: model.predict(probe), 2000):7.1f} µs")
    service = InsightService()
    models = service.project("bench")
    models.model = model
    models.version = 1
    for label, us in read_costs(args.n // 10, service).items():
        print(f"read   {label:32s} {us:7.2f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
