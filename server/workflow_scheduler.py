"""The workflow actions of one node: scheduled durably when a workflow fires, run exactly once.

1. ``schedule`` (the ingest pipeline, before the request is answered): one row per action of each
   workflow that fired in a session, due at now + the action's delay, committed in one store call.
   Row ids are deterministic (project, workflow, session, action index), so a firing seen twice
   schedules nothing twice. A failed store call loses those actions and is counted
   (``schedule_failed``, /metrics).
2. The runner claims due rows with a lease (LEASE_MS) in the store, at most CLAIM_LIMIT at a time,
   on whichever node asks first (PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: one writer). Running
   an action records its ``workflow_action`` webhook deliveries (dedup key = the action id, in the
   store before the action is marked done: a re-run after a lease expiry records nothing new),
   pushes a ``trigger_notification`` with ``triggerType: "workflow"`` to the session's
   ``conversion_triggers`` subscribers, and marks the row done with what it did. The end is stored
   only while this node still holds the lease (fencing), so an action is done exactly once; a node
   that dies mid-run leaves the lease to expire, and another node (or the restarted one) runs it
   again: the webhook is still delivered once, the stream message may be pushed twice.
3. Delayed actions wait in the store: a restart loses nothing, and any node runs them when due.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Final

import msgspec
import trio

from actors.automation.engine import Fired
from actors.automation.workflow_rules import WorkflowRules
from actors.automation.workflows import WorkflowDef, is_workflow_id
from actors.hub import KIND_TRIGGER, Attrs
from protocol.normalize import iso_ms
from storage.base import StoreError
from storage.webhook_records import NewDelivery
from storage.workflow_records import DONE, SCHEDULED, ActionClaim, NewAction, ScheduledAction

log = logging.getLogger("pulse.workflows")

WEBHOOK_KIND: Final = "workflow_action"
LEASE_MS: Final = 30_000  # a run (a few store calls) ends long before; a dead node's rows wait this long
RUN_TIMEOUT_S: Final = 10.0  # a run that takes longer is abandoned; its lease expires and it runs again
CLAIM_LIMIT: Final = 32
POLL_S: Final = 1.0  # how often due rows are looked for without a local reason to (other nodes' rows)
DEPTH_S: Final = 5.0
RELEASE_S: Final = 0.5  # shutdown: time to give a cancelled run's row back
_json = msgspec.json.Encoder()

FiredInSession = tuple[str, str | None, Fired]


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def action_id(project: str, workflow_id: str, session_id: str, index: int) -> str:
    digest = hashlib.sha256(f"{project}\x00{workflow_id}\x00{session_id}\x00{index}".encode()).hexdigest()
    return f"wfa_{digest[:24]}"


class WorkflowScheduler:
    def __init__(self, store: Any, rules: WorkflowRules, node_id: str, *, fanout: Any = None, webhooks: Any = None,
                 now_ms: Callable[[], int] = wall_ms, lease_ms: int = LEASE_MS,
                 run_timeout_s: float = RUN_TIMEOUT_S) -> None:  # fmt: skip
        self.store = store
        self.rules = rules
        self.node_id = node_id
        self.fanout = fanout  # actors.fanout.Fanout: the session's conversion_triggers stream
        self.webhooks = webhooks  # server.webhooks.service.WebhookService: its registry and wake
        self.now_ms = now_ms
        self.lease_ms = lease_ms
        self.run_timeout_s = run_timeout_s
        self.counts: Counter[str] = Counter()  # totals since start, exported by server/prometheus.py
        self.depth = (0, 0)  # (scheduled, running) in the store, re-read every DEPTH_S
        self._wake = trio.Event()
        self._next_due: int | None = None

    # scheduling (the ingest pipeline) -----------------------------------------------------------
    async def schedule(self, project: str, fired: list[FiredInSession]) -> None:
        now = self.now_ms()
        rows: list[NewAction] = []
        for session_id, user_id, item in fired:
            if not item.executed or not is_workflow_id(item.trigger_id):
                continue
            workflow = self.rules.get(project, item.trigger_id)
            if workflow is None:  # deleted since the actor evaluated it
                self.counts["fired_unknown_workflow"] += 1
                continue
            rows += self._rows(project, workflow, session_id, user_id, item, now)
        if not rows:
            return
        try:
            new = await self.store.schedule_workflow_actions(rows)
        except StoreError:
            self.counts["schedule_failed"] += len(rows)
            raise
        self.counts["actions_scheduled"] += new
        self.counts["actions_deduplicated"] += len(rows) - new
        soonest = min(r.due_at for r in rows)
        if soonest <= now:
            self._wake.set()
        else:
            self._next_due = soonest if self._next_due is None else min(self._next_due, soonest)
            self._wake.set()  # recompute the sleep

    def _rows(self, project: str, workflow: WorkflowDef, session_id: str, user_id: str | None, item: Fired,
              now: int) -> list[NewAction]:  # fmt: skip
        out = []
        for index, action in enumerate(workflow.actions):
            detail = {
                "workflowName": workflow.workflow_name,
                "action": msgspec.to_builtins(action),
                "variant": item.variant or None,
                "firedBy": {"eventType": item.event_type, "eventSeq": item.seq, "eventTime": item.at,
                            "executionId": item.execution_id, "reasons": msgspec.to_builtins(item.reasons)},
                "urgency": item.urgency,
                "personalization": item.personalization,
            }
            out.append(NewAction(
                id=action_id(project, workflow.workflow_id, session_id, index), project=project,
                workflow_id=workflow.workflow_id, session_id=session_id, user_id=user_id, action_index=index,
                action_type=action.type, variant=item.variant, due_at=now + action.delay_ms, created_at=now,
                detail=_json.encode(detail).decode(),
            ))  # fmt: skip
        return out

    def wake(self) -> None:
        self._wake.set()

    # running --------------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._depth_loop)
            task_status.started()
            await self._claim_loop()

    async def _claim_loop(self) -> None:
        while True:
            self._wake = trio.Event()
            claimed = await self._claim()
            if claimed:
                async with trio.open_nursery() as runs:
                    for action in claimed:
                        runs.start_soon(self._run_one, action)
                if len(claimed) >= CLAIM_LIMIT:
                    continue  # there may be more due
            await self._sleep_until_due()

    async def _claim(self) -> list[ScheduledAction]:
        claim = ActionClaim(owner=self.node_id, now_ms=self.now_ms(), lease_ms=self.lease_ms, limit=CLAIM_LIMIT)
        try:
            found: list[ScheduledAction] = await self.store.claim_workflow_actions(claim)
        except StoreError as exc:
            self.counts["claim_errors"] += 1
            log.warning("workflows: claiming due actions failed: %s", exc)
            return []
        self.counts["actions_claimed"] += len(found)
        self.counts["actions_reclaimed"] += sum(1 for a in found if a.attempts > 1)  # a lease had expired
        return found

    async def _sleep_until_due(self) -> None:
        wait_s = POLL_S
        if self._next_due is not None:
            now = self.now_ms()
            wait_s = min(wait_s, max(0.0, (self._next_due - now) / 1000))
            if self._next_due <= now + int(POLL_S * 1000):
                self._next_due = None  # this wait covers it
        with trio.move_on_after(wait_s):
            await self._wake.wait()

    async def _run_one(self, action: ScheduledAction) -> None:
        try:
            with trio.move_on_after(self.run_timeout_s) as deadline:
                result = await self._execute(action)
            if deadline.cancelled_caught:
                self.counts["run_timeouts"] += 1  # the lease expires; it runs again (webhook deduplicated)
                return
            done = await self.store.finish_workflow_action(action.id, self.node_id, DONE, self.now_ms(),
                                                           _json.encode(result).decode())
            self.counts["actions_run" if done else "actions_fenced"] += 1
        except trio.Cancelled:
            await self._release(action)
            raise
        except Exception:  # a store outage mid-run: the lease expires and it runs again
            self.counts["run_errors"] += 1
            log.exception("workflows: running action %s failed", action.id)

    async def _release(self, action: ScheduledAction) -> None:
        """Shutdown: give the row back, due now, instead of leaving it leased until it expires."""
        with trio.move_on_after(RELEASE_S) as scope:
            scope.shield = True
            try:
                if await self.store.finish_workflow_action(action.id, self.node_id, SCHEDULED, self.now_ms(), None):
                    self.counts["actions_released"] += 1
            except StoreError:
                pass  # the lease expires instead

    async def _execute(self, action: ScheduledAction) -> dict[str, Any]:
        now = self.now_ms()
        # Read now, not at scheduling: a workflow deleted, paused or rejected since it fired (on any
        # node) runs none of its remaining actions; the row records why.
        workflow = await self.store.get_workflow(action.project, action.workflow_id)
        if workflow is None or workflow.status != "active":
            self.counts["actions_skipped"] += 1
            state = "deleted" if workflow is None else workflow.status
            return {"node": self.node_id, "ranAt": now, "attempt": action.attempts, "skipped": f"the workflow is {state}"}
        detail = msgspec.json.decode(action.detail)
        data = {
            "workflowId": action.workflow_id,
            "workflowName": detail["workflowName"],
            "actionId": action.id,
            "actionIndex": action.action_index,
            "action": action.action_type,
            "delay": detail["action"]["delay"],
            "parameters": detail["action"].get("parameters", {}),
            "variant": action.variant or None,
            "sessionId": action.session_id,
            "userId": action.user_id,
            "scheduledFor": iso_ms(action.due_at),
            "ranAt": iso_ms(now),
            "firedBy": detail["firedBy"],
        }
        webhooks = await self._record_webhooks(action, data, now)
        streamed = await self._push(action, detail, data, now)
        return {"node": self.node_id, "ranAt": now, "attempt": action.attempts, "webhooksRecorded": webhooks,
                "streamPushed": streamed}

    async def _record_webhooks(self, action: ScheduledAction, data: dict[str, Any], now: int) -> int:
        """The ``workflow_action`` deliveries, in the store before the action is marked done (the
        webhook service's notify buffers in memory: a crash right after "done" would lose them)."""
        if self.webhooks is None:
            return 0
        from server.webhooks.service import encode_body  # the service's exact payload shape

        hooks = self.webhooks.registry.subscribed(action.project, WEBHOOK_KIND)
        if not hooks:
            return 0
        body = encode_body(WEBHOOK_KIND, data, now)
        rows = [NewDelivery(id="msg_" + secrets.token_urlsafe(18), webhook_id=h.id, project=action.project,
                            kind=WEBHOOK_KIND, dedup_key=action.id, body=body, created_at=now) for h in hooks]
        new: int = await self.store.record_deliveries(rows)
        self.counts["webhooks_recorded"] += new
        self.counts["webhooks_deduplicated"] += len(rows) - new
        self.webhooks.wake()
        return new

    async def _push(self, action: ScheduledAction, detail: dict[str, Any], data: dict[str, Any], now: int) -> bool:
        if self.fanout is None or not self.fanout.wanted(action.project):
            return False  # nobody streams this project now
        message = {
            "type": "trigger_notification",
            "triggerId": action.workflow_id,
            "triggerType": "workflow",
            "action": action.action_type,
            "urgency": detail.get("urgency"),
            "personalization": detail.get("personalization"),
            "actions": [{"type": action.action_type, "parameters": data["parameters"]}],
            "variant": action.variant or None,
            "executionId": action.id,
            "workflowId": action.workflow_id,
            "actionId": action.id,
            "actionIndex": action.action_index,
            "delay": data["delay"],
            "sessionId": action.session_id,
            "userId": action.user_id,
            "eventType": WEBHOOK_KIND,
            "timestamp": now,
        }
        attrs = Attrs(action.session_id, action.user_id, None, WEBHOOK_KIND)
        await self.fanout.publish(action.project, [(KIND_TRIGGER, attrs, message, 0)])
        self.counts["stream_pushed"] += 1
        return True

    async def _depth_loop(self) -> None:
        while True:
            try:
                self.depth = await self.store.workflow_action_depth()
            except StoreError as exc:
                log.warning("workflows: reading the action depth failed: %s", exc)
            await trio.sleep(DEPTH_S)
