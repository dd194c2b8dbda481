"""The workflow scheduler in virtual time (trio's MockClock, autojump): delayed actions run when due
and exactly once, a dead node's lease expires and another node runs the action, and a re-run never
records a second webhook delivery."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from actors.automation.engine import Fired
from actors.automation.index import TriggerIndex
from actors.automation.workflow_rules import WorkflowRules
from actors.automation.workflows import parse_workflow
from server.webhooks.registry import Registry
from server.workflow_scheduler import WorkflowScheduler
from storage.webhook_records import Webhook
from storage.workflow_records import DONE, RUNNING, SCHEDULED, ActionClaim
from tests.workflows.memory_store import MemoryWorkflowStore

PROJECT = "prj_a"
LEASE_MS = 30_000


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def virtual_ms() -> int:
    return int(trio.current_time() * 1000)


class Hooks:
    """The webhook service as the scheduler uses it: its registry and its wake-up."""

    def __init__(self) -> None:
        self.registry = Registry()
        self.registry.replace([Webhook(id="wh_1", project=PROJECT, url="http://127.0.0.1:9/x",
                                       events=("workflow_action",), secret="whsec_" + "QUFB" * 8, created_at=0)])
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1


def rules_with(delays: list[str]) -> WorkflowRules:
    rules = WorkflowRules(TriggerIndex())
    body = {"workflowName": "w", "triggers": [{"type": "behavioral_threshold", "conditions": {"deviceType": "mobile"}}],
            "actions": [{"type": f"step{i}", "delay": d, "parameters": {"i": i}} for i, d in enumerate(delays)]}
    rules.put(PROJECT, parse_workflow(body, "workflow_1", "test_1", 0))
    return rules


def fired(session: str, variant: str = "") -> tuple[str, str | None, Fired]:
    item = Fired(trigger_id="workflow_1", execution_id=f"exe_{session}", seq=1, at=0, event_type="scroll",
                 variant=variant, executed=variant != "control", trigger_type="workflow", urgency="medium",
                 actions=[], personalization={}, reasons=[])
    return session, f"user-{session}", item


@asynccontextmanager
async def node(store: MemoryWorkflowStore, rules: WorkflowRules, name: str, hooks: Hooks | None = None,
               ) -> AsyncIterator[WorkflowScheduler]:  # fmt: skip
    store.statuses.setdefault("workflow_1", "active")
    scheduler = WorkflowScheduler(store, rules, name, webhooks=hooks, now_ms=virtual_ms, lease_ms=LEASE_MS)
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run)
        try:
            yield scheduler
        finally:
            nursery.cancel_scope.cancel()


async def wait_for(condition: Callable[[], Any], virtual_s: float = 10_000) -> None:
    with trio.fail_after(virtual_s):
        while not condition():  # noqa: ASYNC110 (the memory store has no events to wait on)
            await trio.sleep(0.25)


def done_at(store: MemoryWorkflowStore) -> dict[str, int]:
    return {a.action_type: a.finished_at for a in store.rows.values() if a.finished_at is not None}


async def test_each_action_runs_once_when_its_delay_has_passed(autojump_clock: Any) -> None:
    store, hooks = MemoryWorkflowStore(), Hooks()
    rules = rules_with(["0s", "90s", "2h"])
    async with node(store, rules, "node-a", hooks) as scheduler:
        start = virtual_ms()
        await scheduler.schedule(PROJECT, [fired("s-1")])
        await scheduler.schedule(PROJECT, [fired("s-1")])  # the same firing again (a retried ingest)
        assert len(store.rows) == 3 and scheduler.counts["actions_deduplicated"] == 3
        await wait_for(lambda: len(done_at(store)) == 3)
    ran = {k: v - start for k, v in done_at(store).items()}
    assert 0 <= ran["step0"] < 1_000  # at once (woken, not polled)
    assert 90_000 <= ran["step1"] < 91_100  # when due, within one poll
    assert 7_200_000 <= ran["step2"] < 7_201_100
    assert [c[2] for c in store.claims].count(next(iter(store.rows))) == 1  # claimed once each
    assert len(store.claims) == 3
    assert len(store.deliveries) == 3  # one workflow_action delivery per action, keyed by the action id
    assert {d.dedup_key for d in store.deliveries.values()} == set(store.rows)
    body = msgspec.json.decode(next(iter(store.deliveries.values())).body)
    assert body["type"] == "workflow_action" and body["data"]["workflowId"] == "workflow_1"


async def test_the_control_variant_schedules_nothing(autojump_clock: Any) -> None:
    store = MemoryWorkflowStore()
    async with node(store, rules_with(["0s"]), "node-a") as scheduler:
        await scheduler.schedule(PROJECT, [fired("s-1", "control"), fired("s-2", "offer_a")])
    assert [a.session_id for a in store.rows.values()] == ["s-2"]
    assert next(iter(store.rows.values())).variant == "offer_a"


async def test_a_dead_nodes_action_runs_once_on_another_node_after_its_lease(autojump_clock: Any) -> None:
    store, hooks = MemoryWorkflowStore(), Hooks()
    rules = rules_with(["0s"])
    # node-a scheduled it and claimed it, then died mid-run (its process is gone: no finish ever comes)
    async with node(store, rules, "node-a") as a:
        a_claims = store.claim_workflow_actions  # keep node-a from running it: claim by hand below
        store.claim_workflow_actions = _never  # type: ignore[method-assign]
        await a.schedule(PROJECT, [fired("s-1")])
    store.claim_workflow_actions = a_claims  # type: ignore[method-assign]
    (action_id,) = store.rows
    died_at = virtual_ms()
    (claimed,) = await store.claim_workflow_actions(ActionClaim(owner="node-a", now_ms=died_at, lease_ms=LEASE_MS,
                                                                limit=10))
    async with node(store, rules, "node-b", hooks):
        await trio.sleep(LEASE_MS / 1000 - 1)
        assert store.rows[action_id].status == RUNNING  # the lease still holds: node-b leaves it alone
        await wait_for(lambda: store.rows[action_id].status == DONE)
    row = store.rows[action_id]
    assert LEASE_MS <= row.finished_at - died_at < LEASE_MS + 1_100  # type: ignore[operator]
    assert row.attempts == 2 and msgspec.json.decode(row.result)["node"] == "node-b"  # type: ignore[arg-type]
    assert [c[0] for c in store.claims] == ["node-a", "node-b"]
    # node-a's late finish (it was only slow, not dead) is fenced off
    assert not await store.finish_workflow_action(action_id, "node-a", DONE, virtual_ms(), "{}")


async def test_a_rerun_after_a_lease_expiry_records_no_second_delivery(autojump_clock: Any) -> None:
    store, hooks = MemoryWorkflowStore(), Hooks()
    rules = rules_with(["0s"])
    finish = store.finish_workflow_action

    async def hang(*args: Any) -> bool:  # node-a dies after sending, before marking it done
        await trio.sleep_forever()
        return False

    store.finish_workflow_action = hang  # type: ignore[method-assign,assignment]
    async with node(store, rules, "node-a", hooks) as a:
        await a.schedule(PROJECT, [fired("s-1")])
        await wait_for(lambda: len(store.deliveries) == 1)
    store.finish_workflow_action = finish  # type: ignore[method-assign]
    (action_id,) = store.rows
    assert store.rows[action_id].status == RUNNING
    async with node(store, rules, "node-b", hooks) as b:
        await wait_for(lambda: store.rows[action_id].status == DONE)
        assert b.counts["webhooks_deduplicated"] == 1 and b.counts["webhooks_recorded"] == 0
    assert len(store.deliveries) == 1  # one delivery, however often it ran


async def test_a_workflow_paused_or_deleted_after_firing_sends_nothing_more(autojump_clock: Any) -> None:
    store, hooks = MemoryWorkflowStore(), Hooks()
    async with node(store, rules_with(["0s", "1h"]), "node-a", hooks) as scheduler:
        await scheduler.schedule(PROJECT, [fired("s-1")])
        await wait_for(lambda: len(done_at(store)) == 1)
        store.statuses["workflow_1"] = "paused"  # by a status change on any node
        await wait_for(lambda: len(done_at(store)) == 2)
        assert scheduler.counts["actions_skipped"] == 1
    later = next(a for a in store.rows.values() if a.action_type == "step1")
    assert msgspec.json.decode(later.result) == {  # type: ignore[arg-type]
        "node": "node-a", "ranAt": later.finished_at, "attempt": 1, "skipped": "the workflow is paused"}
    assert len(store.deliveries) == 1  # only the action that ran before the pause


async def test_shutdown_gives_a_running_action_back(autojump_clock: Any) -> None:
    store = MemoryWorkflowStore()
    rules = rules_with(["0s"])
    slow = trio.Event()

    class SlowHooks(Hooks):
        def wake(self) -> None:
            slow.set()

    async def stall(rows: Any) -> int:
        await trio.sleep_forever()
        return 0

    store.record_deliveries = stall  # type: ignore[method-assign]
    async with node(store, rules, "node-a", SlowHooks()) as a:
        await a.schedule(PROJECT, [fired("s-1")])
        await wait_for(lambda: next(iter(store.rows.values())).status == RUNNING)
    row = next(iter(store.rows.values()))
    assert row.status == SCHEDULED and row.lease_owner is None  # due again at once, for any node


async def _never(claim: ActionClaim) -> list[Any]:
    return []
