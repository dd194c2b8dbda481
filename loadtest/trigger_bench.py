"""CPU cost of trigger evaluation per event in the session actor, with 0, 10 and 100 active
triggers in the project (in-process, no I/O; pin it: ``taskset -c 0``).

    taskset -c 0 .venv/bin/python -m loadtest.trigger_bench [--events 20000] [--sessions 200]

Each figure is the mean time of ``SessionActor.apply_events`` for one event (what the ingest path
asks of the actor), over ``--events`` events spread over ``--sessions`` sessions; ``extra`` is the
difference to the same run without triggers. Scenarios:

- ``other type``: the project's triggers listen to another event type: one dict lookup per event;
- ``same type, filters fail``: every trigger listens to this event type, its two filters (a
  live-state number and a url substring) are evaluated on every event and do not match;
- ``same type, insight filter``: as above, plus an engagementScore filter on each trigger: the
  session's insights are computed once per event (shared by all its triggers).
"""

from __future__ import annotations

import argparse
import gc
import time
from typing import Any

import msgspec

from actors.automation.definition import parse_trigger
from actors.automation.index import TriggerIndex
from actors.projection import ApplyEvents
from actors.session import SessionActor
from protocol.record import SOURCE_BEHAVIORAL, Event
from storage.base import History, Snapshot

PROJECT = "bench"
COUNTS = (0, 10, 100)


class NoStore:
    """Actors activate on an empty history; nothing is written during the measurement."""

    async def load_history(self, project: str, kind: str, key: str) -> History:
        return History(None, [])

    async def load_snapshot(self, project: str, kind: str, key: str) -> Snapshot | None:
        return None

    async def save_snapshot(self, project: str, kind: str, key: str, snapshot: Snapshot) -> None:
        return None

    async def session_events(self, project: str, session_id: str, after_seq: int) -> list[Event]:
        return []

    async def user_events(self, project: str, user_id: str, after_seq: int) -> list[Event]:
        return []


def index_with(count: int, scenario: str) -> TriggerIndex:
    index = TriggerIndex()
    event_type = "checkout_started" if scenario == "other type" else "scroll"
    for i in range(count):
        filters: list[dict[str, Any]] = [
            {"field": "scrollDepth", "operator": "greater_than", "value": 2.0},  # never: depth is 0..1
            {"field": "url", "operator": "contains", "value": f"/never-{i}"},
        ]
        if scenario == "same type, insight filter":
            filters.insert(0, {"field": "engagementScore", "operator": "greater_than", "value": 2.0})
        body = {"name": f"t{i}", "conditions": {"eventType": event_type, "filters": filters},
                "actions": [{"type": "show_offer"}]}
        index.put(parse_trigger(body, f"trigger_{i:03d}", 0), PROJECT)
    return index


def events(n: int, sessions: int) -> list[Event]:
    out = []
    for i in range(n):
        session = f"s{i % sessions}"
        name = "page_view" if i < sessions else "scroll"
        payload = {"eventData": {"url": f"/page/{i % 7}", "scrollDepth": (i % 10) / 10}}
        out.append(Event(id=f"e{i}", project=PROJECT, name=name, source=SOURCE_BEHAVIORAL, timestamp=1_000 + i * 50,
                         received_at=1_000 + i * 50, payload=msgspec.Raw(msgspec.json.encode(payload)), seq=i + 1,
                         session_id=session))
    return out


def run(count: int, scenario: str, stream: list[Event], sessions: int) -> float:
    """Mean µs per event of apply_events, all actors already active."""
    index = index_with(count, scenario)
    store = NoStore()
    actors = {f"s{i}": SessionActor(("session", PROJECT, f"s{i}"), store, triggers=index) for i in range(sessions)}
    messages = [(actors[e.session_id or ""], ApplyEvents(events=[e])) for e in stream]
    gc.collect()
    started = time.perf_counter()
    for actor, message in messages:
        actor.apply_events(message)
    return (time.perf_counter() - started) / len(messages) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the best is reported")
    args = parser.parse_args()
    stream = events(args.events, args.sessions)
    print(f"trigger evaluation, µs per event ({args.events} events over {args.sessions} sessions, best of {args.repeat})")
    print(f"{'scenario':<28}{'triggers':>9}{'µs/event':>11}{'extra':>9}")
    for scenario in ("other type", "same type, filters fail", "same type, insight filter"):
        baseline = None
        for count in COUNTS:
            best = min(run(count, scenario, stream, args.sessions) for _ in range(args.repeat))
            if baseline is None:
                baseline = best
            print(f"{scenario:<28}{count:>9}{best:>11.2f}{best - baseline:>+9.2f}")


if __name__ == "__main__":
    main()
