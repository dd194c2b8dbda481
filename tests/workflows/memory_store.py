"""An in-memory stand-in for the Store's workflow-action methods (and the webhook deliveries they
record), for the scheduler's virtual-time tests: the real backends' threads and asyncio loop would
let trio's autojump clock leap over their work. test_store_workflows.py checks the same contract
(due rows, leases, fencing, dedup) on the real backends."""

from __future__ import annotations

import msgspec

from storage.webhook_records import NewDelivery
from storage.workflow_records import (
    DONE,
    RUNNING,
    SCHEDULED,
    ActionClaim,
    NewAction,
    ScheduledAction,
    WorkflowRow,
)


class MemoryWorkflowStore:
    def __init__(self) -> None:
        self.rows: dict[str, ScheduledAction] = {}
        self.deliveries: dict[tuple[str, str], NewDelivery] = {}  # (webhook, dedup key) -> the first
        self.claims: list[tuple[str, int, str]] = []  # (owner, now_ms, action id) of every claimed row
        self.statuses: dict[str, str] = {}  # workflow id -> status (the definitions' status column)

    async def get_workflow(self, project: str, workflow_id: str) -> WorkflowRow | None:
        status = self.statuses.get(workflow_id)
        return None if status is None else WorkflowRow(project, workflow_id, status, 0, 0, "{}")

    async def schedule_workflow_actions(self, rows: list[NewAction]) -> int:
        new = 0
        for r in rows:
            if r.id in self.rows:
                continue
            self.rows[r.id] = ScheduledAction(
                id=r.id, project=r.project, workflow_id=r.workflow_id, session_id=r.session_id, user_id=r.user_id,
                action_index=r.action_index, action_type=r.action_type, variant=r.variant, due_at=r.due_at,
                status=SCHEDULED, attempts=0, lease_owner=None, lease_until=None, created_at=r.created_at,
                finished_at=None, detail=r.detail, result=None,
            )  # fmt: skip
            new += 1
        return new

    async def claim_workflow_actions(self, claim: ActionClaim) -> list[ScheduledAction]:
        due = sorted(
            (a for a in self.rows.values()
             if (a.status == SCHEDULED and a.due_at <= claim.now_ms)
             or (a.status == RUNNING and a.lease_until is not None and a.lease_until <= claim.now_ms)),
            key=lambda a: (a.due_at, a.id),
        )[: claim.limit]  # fmt: skip
        out = []
        for a in due:
            leased = msgspec.structs.replace(a, status=RUNNING, lease_owner=claim.owner,
                                             lease_until=claim.now_ms + claim.lease_ms, attempts=a.attempts + 1)
            self.rows[a.id] = leased
            self.claims.append((claim.owner, claim.now_ms, a.id))
            out.append(leased)
        return out

    async def finish_workflow_action(self, action_id: str, owner: str, status: str, now_ms: int,
                                     result: str | None) -> bool:  # fmt: skip
        a = self.rows.get(action_id)
        if a is None or a.status != RUNNING or a.lease_owner != owner:
            return False
        self.rows[action_id] = msgspec.structs.replace(
            a, status=status, finished_at=now_ms if status == DONE else None, result=result,
            due_at=a.due_at if status == DONE else now_ms, lease_owner=None, lease_until=None)
        return True

    async def record_deliveries(self, rows: list[NewDelivery]) -> int:
        new = 0
        for r in rows:
            if (r.webhook_id, r.dedup_key) not in self.deliveries:
                self.deliveries[(r.webhook_id, r.dedup_key)] = r
                new += 1
        return new

    async def workflow_action_depth(self) -> tuple[int, int]:
        return (sum(a.status == SCHEDULED for a in self.rows.values()),
                sum(a.status == RUNNING for a in self.rows.values()))
