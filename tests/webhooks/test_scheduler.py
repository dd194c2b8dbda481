"""The delivery scheduler in virtual time (trio's MockClock, autojump): the backoff it really
follows, the retry window, lease expiry after a node's death, receivers that do not slow each other,
410 Gone, and the bounded notification buffer."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, cast

import msgspec
import pytest
import trio
import trio.testing

from protocol.record import SOURCE_EVENTS, Event
from server.webhooks import service as service_module
from server.webhooks.sender import Attempt
from server.webhooks.service import PER_RECEIVER, WebhookService
from storage.base import Store
from storage.webhook_records import DEAD, DELIVERED, PENDING, Delivery, Webhook
from tests.webhooks.memory_store import MemoryWebhookStore

Answer = Callable[[str, Delivery], Awaitable[Attempt]]
OK = Attempt(True, False, 200, None)
FAIL = Attempt(False, False, 503, "HTTP 503 Service Unavailable")


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def virtual_ms() -> int:
    return int(trio.current_time() * 1000)


class ScriptedSender:
    """Answers each attempt with ``answer``; records (virtual ms, url, delivery id, attempt number)."""

    timeout_s = 10.0

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.attempts: list[tuple[int, str, str, int]] = []
        self.active: dict[str, int] = {}  # url -> attempts in progress
        self.most_active: dict[str, int] = {}

    async def send(self, url: str, key: bytes, delivery: Delivery) -> Attempt:
        self.attempts.append((virtual_ms(), url, delivery.id, delivery.attempts))
        self.active[url] = self.active.get(url, 0) + 1
        self.most_active[url] = max(self.most_active.get(url, 0), self.active[url])
        try:
            return await self.answer(url, delivery)
        finally:
            self.active[url] -= 1

    async def aclose(self) -> None:
        pass


def hook(hook_id: str, url: str, events: tuple[str, ...] = ("trigger_fired",)) -> Webhook:
    return Webhook(id=hook_id, project="prj_a", url=url, events=events, secret="whsec_" + "QUFB" * 8, created_at=0)


@asynccontextmanager
async def running(store: MemoryWebhookStore, sender: ScriptedSender, node: str = "node-a",
                  window_ms: int = 86_400_000) -> AsyncIterator[WebhookService]:
    svc = WebhookService(cast(Store, store), node, sender=sender, now_ms=virtual_ms, retry_window_ms=window_ms,
                         rng=random.Random(7))
    async with trio.open_nursery() as nursery:
        await nursery.start(svc.run)
        try:
            yield svc
        finally:
            nursery.cancel_scope.cancel()


async def wait_for(condition: Callable[[], bool], virtual_s: float = 7_200) -> None:
    with trio.fail_after(virtual_s):
        while not condition():  # noqa: ASYNC110 (the store has no events to wait on)
            await trio.sleep(0.25)


async def test_failures_are_retried_with_growing_jittered_delays_under_one_id(autojump_clock: Any) -> None:
    store = MemoryWebhookStore()
    store.hooks["wh_1"] = hook("wh_1", "http://r1")
    failures = 6

    async def answer(url: str, d: Delivery) -> Attempt:
        return FAIL if d.attempts <= failures else OK

    sender = ScriptedSender(answer)
    async with running(store, sender) as svc:
        svc.notify("prj_a", "trigger_fired", {"triggerId": "t1"}, "t1:s1")
        await wait_for(lambda: any(d.status == DELIVERED for d in store.rows.values()))
    times = [t for t, *_ in sender.attempts]
    assert len(times) == failures + 1
    assert {delivery_id for _, _, delivery_id, _ in sender.attempts} == {next(iter(store.rows))}  # one webhook-id
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert 1000 <= gaps[0] <= 2000 + 1000 * service_module.POLL_S  # first retry within 1-2 s (plus one poll)
    for n, gap in enumerate(gaps, start=1):  # attempt n failed: floor 1 s, jitter up to 2^(n-1) s
        assert 1000 <= gap <= 1000 + 1000 * 2 ** (n - 1) + 50, (n, gaps)
    assert svc.counts["retries_scheduled"] == failures and svc.counts["attempts_delivered"] == 1


async def test_a_delivery_failing_past_the_retry_window_is_dead(autojump_clock: Any) -> None:
    store = MemoryWebhookStore()
    store.hooks["wh_1"] = hook("wh_1", "http://down")

    async def answer(url: str, d: Delivery) -> Attempt:
        return FAIL

    sender = ScriptedSender(answer)
    async with running(store, sender, window_ms=3_600_000) as svc:
        svc.notify("prj_a", "trigger_fired", {}, "k")
        await wait_for(lambda: any(d.status == DEAD for d in store.rows.values()))
        assert svc.counts["deliveries_dead"] == 1
    (dead,) = store.rows.values()
    assert dead.last_error == "HTTP 503 Service Unavailable" and dead.attempts == len(sender.attempts)
    last_attempt = sender.attempts[-1][0]
    assert last_attempt <= 3_600_000  # never tried past the window
    assert dead.finished_at is not None and dead.finished_at >= last_attempt


async def test_a_node_dying_mid_attempt_leaves_the_row_to_another_after_the_lease(autojump_clock: Any) -> None:
    store = MemoryWebhookStore()
    store.hooks["wh_1"] = hook("wh_1", "http://r")
    started = trio.Event()

    async def hang(url: str, d: Delivery) -> Attempt:
        started.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async with running(store, ScriptedSender(hang), node="node-a") as a:
        a.notify("prj_a", "trigger_fired", {}, "k")
        await started.wait()
        lease_ms = a.lease_ms
        store.killed.add("node-a")  # kill -9: nothing node-a writes from now on reaches the store
    # node-a is gone mid-attempt: its lease stays in the store
    died_at = virtual_ms()
    (row,) = store.rows.values()
    assert row.lease_owner == "node-a"

    async def ok(url: str, d: Delivery) -> Attempt:
        return OK

    b_sender = ScriptedSender(ok)
    async with running(store, b_sender, node="node-b"):
        await wait_for(lambda: store.rows[row.id].status == DELIVERED)
    (claim_a, claim_b) = [c for c in store.claims if c[2] == row.id]
    assert claim_a[0] == "node-a" and claim_b[0] == "node-b"
    assert claim_b[1] >= claim_a[1] + lease_ms  # not before node-a's lease expired
    assert claim_b[1] - died_at <= lease_ms + 1000 * service_module.POLL_S + 100
    assert b_sender.attempts[0][3] == 2  # the second attempt of the same delivery


async def test_a_clean_stop_gives_an_interrupted_attempt_back_at_once(autojump_clock: Any) -> None:
    store = MemoryWebhookStore()
    store.hooks["wh_1"] = hook("wh_1", "http://r")
    started = trio.Event()

    async def hang(url: str, d: Delivery) -> Attempt:
        started.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async with running(store, ScriptedSender(hang), node="node-a") as a:
        a.notify("prj_a", "trigger_fired", {}, "k")
        await started.wait()
        await a.stop()
    stopped_at = virtual_ms()
    (row,) = store.rows.values()
    assert (row.status, row.lease_owner, row.last_error) == (PENDING, None, "attempt interrupted by shutdown")

    async def ok(url: str, d: Delivery) -> Attempt:
        return OK

    async with running(store, ScriptedSender(ok), node="node-b") as b:
        await wait_for(lambda: store.rows[row.id].status == DELIVERED)
        assert virtual_ms() - stopped_at < b.lease_ms  # not left waiting for a lease


async def test_a_slow_receiver_holds_only_its_own_slots(autojump_clock: Any) -> None:
    store = MemoryWebhookStore()
    store.hooks["slow"] = hook("slow", "http://slow")
    store.hooks["fast"] = hook("fast", "http://fast")

    async def answer(url: str, d: Delivery) -> Attempt:
        if url == "http://slow":
            await trio.sleep(9)  # slow, within the attempt's 10 s
        return OK

    sender = ScriptedSender(answer)
    async with running(store, sender) as svc:
        for i in range(20):
            svc.notify("prj_a", "trigger_fired", {"i": i}, f"k{i}")
        def fast_done() -> bool:
            fast = [d for d in store.rows.values() if d.webhook_id == "fast"]
            return len(fast) == 20 and all(d.status == DELIVERED for d in fast)

        await wait_for(fast_done)
        assert virtual_ms() < 9_000  # every fast delivery done before the first slow one answered
        assert sender.most_active["http://slow"] == PER_RECEIVER
        await wait_for(lambda: all(d.status == DELIVERED for d in store.rows.values()))
    assert sender.most_active["http://slow"] == PER_RECEIVER  # never more at once


async def test_410_gone_disables_the_webhook_and_kills_its_queue(autojump_clock: Any) -> None:
    store = MemoryWebhookStore()
    store.hooks["wh_1"] = hook("wh_1", "http://gone")

    async def gone(url: str, d: Delivery) -> Attempt:
        return Attempt(False, True, 410, "HTTP 410 Gone")

    async with running(store, ScriptedSender(gone)) as svc:
        svc.notify("prj_a", "trigger_fired", {}, "k1")
        await wait_for(lambda: store.hooks["wh_1"].disabled_reason is not None)
        assert svc.counts["webhooks_disabled"] == 1
        svc.notify("prj_a", "trigger_fired", {}, "k2")  # nothing: the webhook is disabled
        assert svc.counts["notifications_accepted"] == 1
    assert [d.status for d in store.rows.values()] == [DEAD]


async def test_a_full_buffer_drops_and_counts(autojump_clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_module, "BUFFER_ROWS", 3)
    store = MemoryWebhookStore()
    store.hooks["wh_1"] = hook("wh_1", "http://r")

    async def ok(url: str, d: Delivery) -> Attempt:
        return OK

    async with running(store, ScriptedSender(ok)) as svc:
        await trio.testing.wait_all_tasks_blocked()  # the recorder waits for the first row
        for i in range(10):  # no checkpoint in between: the recorder cannot run
            svc.notify("prj_a", "trigger_fired", {}, f"k{i}")
        # the idle recorder takes the first at once, 3 wait in the buffer, the other 6 are dropped
        assert (svc.counts["notifications_accepted"], svc.counts["notifications_dropped"]) == (4, 6)
        await wait_for(lambda: len(store.rows) == 4 and all(d.status == DELIVERED for d in store.rows.values()))


def event(project: str, name: str) -> Event:
    return Event(id=f"evt_{project}_{name}", project=project, name=name, source=SOURCE_EVENTS, timestamp=1,
                 received_at=1, payload=msgspec.Raw(b'{"amount":5}'), seq=1)


async def test_chosen_event_types_are_delivered_and_others_are_not(autojump_clock: Any) -> None:
    store = MemoryWebhookStore()
    store.hooks["wh_1"] = hook("wh_1", "http://r", events=("purchase",))

    async def ok(url: str, d: Delivery) -> Attempt:
        return OK

    async with running(store, ScriptedSender(ok)) as svc:
        assert svc.registry.event_types == {"prj_a": frozenset({"purchase"})}
        svc.events_committed([event("prj_a", "purchase"), event("prj_a", "page_view")])
        svc.events_committed([event("prj_other", "purchase")])  # a project without webhooks
        svc.events_committed([event("prj_a", "purchase")])  # the same event again: one delivery
        await wait_for(lambda: bool(store.rows) and all(d.status == DELIVERED for d in store.rows.values()))
        assert svc.counts["notifications_deduplicated"] == 1
    (row,) = store.rows.values()
    assert (row.kind, row.dedup_key) == ("purchase", "event:evt_prj_a_purchase")
    body = msgspec.json.decode(row.body)
    assert body["type"] == "purchase" and body["data"]["name"] == "purchase"
    assert body["data"]["payload"] == {"amount": 5}
