"""What the webhooks cost the ingest path: ``IngestPipeline.after_commit`` (WebhookService.events_committed)
per request, for a project without webhooks, one whose webhooks want other event types, and one whose
webhook wants the event (the notify: body encoding and a buffered row). No network, no store: the
recorder is not running, so the buffer is drained between rounds.

    .venv/bin/python -m loadtest.webhook_bench
"""

from __future__ import annotations

import time
from typing import Any, cast

import msgspec
import trio

from protocol.record import SOURCE_EVENTS, Event
from server.webhooks.service import WebhookService
from storage.base import Store
from storage.webhook_records import Webhook

ROUNDS = 200_000


def event(project: str, name: str, n: int) -> Event:
    return Event(id=f"evt_{n}", project=project, name=name, source=SOURCE_EVENTS, timestamp=1, received_at=1,
                 payload=msgspec.Raw(b'{"serviceName":"shop","amount":5}'), seq=n)


def per_call_ns(svc: WebhookService, events: list[Event], rounds: int) -> float:
    hook = svc.events_committed
    drain = svc._receive  # noqa: SLF001 (the bench empties the buffer the recorder would take)
    start = time.perf_counter_ns()
    for i in range(rounds):
        hook(events)
        if i % 5_000 == 0:
            while True:
                try:
                    drain.receive_nowait()
                except trio.WouldBlock:
                    break
    return (time.perf_counter_ns() - start) / rounds


async def main() -> None:
    svc = WebhookService(cast(Store, None), "bench")
    hooks = [Webhook(id="wh_1", project="prj_hooked", url="http://127.0.0.1:9/", events=("purchase",),
                     secret="whsec_" + "QUFB" * 8, created_at=0)]
    svc.registry.replace(hooks)
    cases: list[tuple[str, list[Event]]] = [
        ("no webhook in the project", [event("prj_plain", "purchase", 1)]),
        ("webhooks want other types", [event("prj_hooked", "page_view", 2)]),
        ("a webhook wants the event (notify)", [event("prj_hooked", "purchase", 3)]),
    ]
    for label, events in cases:
        per_call_ns(svc, events, 10_000)  # warm up
        cost = per_call_ns(svc, events, ROUNDS if "notify" not in label else ROUNDS // 10)
        print(f"{label:40s} {cost:8.0f} ns per request of 1 event")
    print(svc.counts)


if __name__ == "__main__":
    trio.run(cast(Any, main))
